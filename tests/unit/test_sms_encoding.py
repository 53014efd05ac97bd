"""GSM-7 vs UCS-2, exact part counts, price, transliteration (table and property tests)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_bridge.delivery.sms_encoding import (
    GSM7_BASIC,
    GSM7_EXTENSION,
    LIMITS,
    cost_of,
    count_parts,
    encoding_of,
    is_gsm7,
    non_gsm_chars,
    split_parts,
    transliterate,
    units,
)

GSM_CHARS = "".join(sorted((set(GSM7_BASIC) - {"\x1b"}) | set(GSM7_EXTENSION)))


@pytest.mark.parametrize(
    "text,encoding,n_units,parts",
    [
        ("", "GSM-7", 0, 1),
        ("a" * 160, "GSM-7", 160, 1),
        ("a" * 161, "GSM-7", 161, 2),
        ("a" * 306, "GSM-7", 306, 2),
        ("a" * 307, "GSM-7", 307, 3),
        ("€" * 80, "GSM-7", 160, 1),  # extension characters take two septets
        ("€" * 81, "GSM-7", 162, 2),
        ("a" * 159 + "€", "GSM-7", 161, 2),
        ("Ça coûte 5 £, señor", "UCS-2", 19, 1),  # û is not in GSM-7
        ("Ça côute", "UCS-2", 8, 1),
        ("Привет" * 11 + "Прив", "UCS-2", 70, 1),
        ("я" * 71, "UCS-2", 71, 2),
        ("я" * 134, "UCS-2", 134, 2),
        ("я" * 135, "UCS-2", 135, 3),
        ("Բարև " * 14, "UCS-2", 70, 1),
        ("😀" * 35, "UCS-2", 70, 1),  # astral characters are a surrogate pair
        ("😀" * 36, "UCS-2", 72, 2),
        ("Skidka {15%} [v] ~kafe~ |x| ^", "GSM-7", 38, 1),
    ],
)
def test_table(text: str, encoding: str, n_units: int, parts: int) -> None:
    assert encoding_of(text) == encoding
    assert units(text) == n_units
    assert count_parts(text) == parts
    assert len(split_parts(text)) == parts


def test_parts_never_split_escape_or_surrogate_pairs() -> None:
    text = "a" * 152 + "€" + "b" * 10  # the € would straddle the 153-septet boundary
    parts = split_parts(text)
    assert parts == ["a" * 152, "€" + "b" * 10]
    assert count_parts(text) == 2
    emoji = "x" * 66 + "😀" + "y" * 10  # the pair would straddle the 67-unit boundary
    assert split_parts(emoji)[0] == "x" * 66
    assert count_parts("a" * 152 + "€" + "b" * 153) == 3


def test_non_gsm_chars_name_the_culprits() -> None:
    assert non_gsm_chars("Hello “world” — ok") == ["“", "”", "—"]
    assert non_gsm_chars("plain text") == []


def test_cost_uses_country_price_or_default() -> None:
    prices = {"RU": 0.04, "*": 0.08}
    assert cost_of("a" * 161, "RU", prices, "USD").cost == pytest.approx(0.08)
    assert cost_of("я" * 71, "AM", prices).cost == pytest.approx(0.16)
    assert cost_of("hi", None, {}).cost is None
    assert cost_of("hi", "ru", prices).price_per_part == 0.04


@pytest.mark.parametrize(
    "src,out",
    [
        ("Привет, Анна!", "Privet, Anna!"),
        ("СТОП", "STOP"),
        ("Щи и ЩИ", "Shchi i SHCHI"),
        ("Юля ёлка съел", "Yulya yolka sel"),
        ("«Кофе» — 15% скидка…", '"Kofe" - 15% skidka...'),
        ("Łódź", "Lodz"),
        ("Բարև Anna", "Բարև Anna"),  # Armenian is not transliterated
    ],
)
def test_transliteration(src: str, out: str) -> None:
    assert transliterate(src) == out


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=400))
def test_parts_agree_with_split_and_fit_limits(text: str) -> None:
    enc = encoding_of(text)
    parts = split_parts(text)
    assert "".join(parts) == text
    assert count_parts(text) == len(parts)
    single, per_part = LIMITS[enc]
    if len(parts) == 1:
        assert units(text, enc) <= single
    else:
        assert all(0 < units(p, enc) <= per_part for p in parts)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=GSM_CHARS, max_size=400))
def test_gsm_alphabet_is_gsm7(text: str) -> None:
    assert is_gsm7(text)
    assert encoding_of(text) == "GSM-7"


@settings(max_examples=200, deadline=None)
@given(
    st.text(
        alphabet="абвгдеёжзийклмнопрстуфхцчшщъыьэюяАБВГДЕЁЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯ ,.!?0123456789«»—",
        max_size=200,
    )
)
def test_transliterated_russian_is_gsm7(text: str) -> None:
    assert is_gsm7(transliterate(text))
