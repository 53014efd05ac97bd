"""SMS encoding and cost (pure): GSM-7 or UCS-2, part counts, price, Cyrillic transliteration.

A text goes out in GSM 03.38 7-bit (GSM-7) when every character is in its basic table or its
extension table (an extension character costs two septets: ESC + the character); otherwise the
whole message is UCS-2. One SMS holds 160 septets or 70 UTF-16 code units; a concatenated
message loses room to its header: 153 septets or 67 code units per part. A part never splits an
escape pair or a surrogate pair, so part counts here are exact, not ``ceil(len / 153)``.

No IO, no clock: table and property tested.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "GSM7_BASIC",
    "GSM7_EXTENSION",
    "LIMITS",
    "Encoding",
    "SmsCost",
    "encoding_of",
    "is_gsm7",
    "units",
    "split_parts",
    "count_parts",
    "price_per_part",
    "cost_of",
    "transliterate",
    "non_gsm_chars",
]

Encoding = Literal["GSM-7", "UCS-2"]

# GSM 03.38 basic table (position = septet value); 0x1B is the escape to the extension table
# and is not a character of its own.
GSM7_BASIC: Final[str] = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# Extension table characters (each sent as ESC + one septet).
GSM7_EXTENSION: Final[str] = "\f^{}\\[~]|€"

_BASIC: Final = frozenset(GSM7_BASIC) - {"\x1b"}
_EXT: Final = frozenset(GSM7_EXTENSION)

# encoding -> (units in a single SMS, units per part of a concatenated SMS)
LIMITS: Final[dict[str, tuple[int, int]]] = {"GSM-7": (160, 153), "UCS-2": (70, 67)}


def is_gsm7(text: str) -> bool:
    return all(ch in _BASIC or ch in _EXT for ch in text)


def encoding_of(text: str) -> Encoding:
    return "GSM-7" if is_gsm7(text) else "UCS-2"


def non_gsm_chars(text: str) -> list[str]:
    """The distinct characters that force UCS-2, in order of first appearance."""
    seen: dict[str, None] = {}
    for ch in text:
        if ch not in _BASIC and ch not in _EXT:
            seen.setdefault(ch)
    return list(seen)


def _char_units(ch: str, enc: Encoding) -> int:
    if enc == "GSM-7":
        return 2 if ch in _EXT else 1
    return 2 if ord(ch) > 0xFFFF else 1  # UTF-16: astral characters are a surrogate pair


def units(text: str, enc: Encoding | None = None) -> int:
    """Septets (GSM-7) or UTF-16 code units (UCS-2) the text takes."""
    enc = enc or encoding_of(text)
    return sum(_char_units(ch, enc) for ch in text)


def split_parts(text: str, enc: Encoding | None = None) -> list[str]:
    """The text cut as the network would send it; one part (possibly empty) at least."""
    enc = enc or encoding_of(text)
    single, per_part = LIMITS[enc]
    if units(text, enc) <= single:
        return [text]
    parts: list[str] = []
    current: list[str] = []
    used = 0
    for ch in text:
        n = _char_units(ch, enc)
        if used + n > per_part:
            parts.append("".join(current))
            current, used = [], 0
        current.append(ch)
        used += n
    parts.append("".join(current))
    return parts


def count_parts(text: str, enc: Encoding | None = None) -> int:
    enc = enc or encoding_of(text)
    single, per_part = LIMITS[enc]
    total = units(text, enc)
    if total <= single:
        return 1
    if enc == "UCS-2" and not any(ord(ch) > 0xFFFF for ch in text):
        return -(-total // per_part)
    if enc == "GSM-7" and not any(ch in _EXT for ch in text):
        return -(-total // per_part)
    return len(split_parts(text, enc))


@dataclass(frozen=True, slots=True)
class SmsCost:
    """What one message costs: encoding, characters, units, parts and money."""

    text: str
    encoding: Encoding
    chars: int
    units: int
    parts: int
    price_per_part: float | None
    cost: float | None
    currency: str

    @property
    def non_gsm(self) -> list[str]:
        return non_gsm_chars(self.text)


def price_per_part(country: str | None, prices: Mapping[str, float]) -> float | None:
    """Price of one part for a country (ISO code); ``"*"`` is the default row."""
    if country and country.upper() in prices:
        return prices[country.upper()]
    return prices.get("*")


def cost_of(
    text: str,
    country: str | None = None,
    prices: Mapping[str, float] | None = None,
    currency: str = "",
) -> SmsCost:
    enc = encoding_of(text)
    parts = count_parts(text, enc)
    each = price_per_part(country, prices or {})
    return SmsCost(
        text=text,
        encoding=enc,
        chars=len(text),
        units=units(text, enc),
        parts=parts,
        price_per_part=each,
        cost=None if each is None else round(each * parts, 6),
        currency=currency,
    )


# -- transliteration -------------------------------------------------------------------------

# Russian (plus Ukrainian and Belarusian letters) -> Latin, a readable scheme close to the one
# Russian operators apply when they transliterate SMS (й y, х kh, ц ts, щ shch, ю yu, я ya).
_CYRILLIC: Final[dict[str, str]] = {
    "а": "a", "б": "b", "в": "v", "г": "g", "д": "d", "е": "e", "ё": "yo", "ж": "zh",
    "з": "z", "и": "i", "й": "y", "к": "k", "л": "l", "м": "m", "н": "n", "о": "o",
    "п": "p", "р": "r", "с": "s", "т": "t", "у": "u", "ф": "f", "х": "kh", "ц": "ts",
    "ч": "ch", "ш": "sh", "щ": "shch", "ъ": "", "ы": "y", "ь": "", "э": "e", "ю": "yu",
    "я": "ya", "і": "i", "ї": "yi", "є": "ye", "ґ": "g", "ў": "u",
}  # fmt: skip

# Typography that is not in GSM-7 but has a plain equivalent in it.
_PUNCTUATION: Final[dict[str, str]] = {
    "«": '"', "»": '"', "„": '"', "“": '"', "”": '"', "‘": "'", "’": "'", "‚": "'",
    "—": "-", "–": "-", "‑": "-", "−": "-", "…": "...", "\u00a0": " ", "\u202f": " ",
    "№": "No.", "₽": "RUB", "×": "x", "•": "-", "`": "'", "´": "'",
}  # fmt: skip

# Latin letters that Unicode does not decompose into a base letter and an accent.
_LATIN: Final[dict[str, str]] = {"ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "ħ": "h", "ı": "i"}


def _strip_accent(ch: str) -> str | None:
    """A Latin letter with an accent GSM-7 lacks (ł, ç, ă...) without it, if that is GSM-7."""
    if ch in _LATIN:
        return _LATIN[ch]
    base = unicodedata.normalize("NFKD", ch)
    stripped = "".join(c for c in base if not unicodedata.combining(c))
    return stripped if stripped and stripped != ch and is_gsm7(stripped) else None


def _translit_word(word: str) -> str:
    out = []
    for ch in word:
        low = ch.lower()
        if low in _CYRILLIC:
            latin = _CYRILLIC[low]
            out.append(latin.capitalize() if ch != low else latin)
        elif ch in _BASIC or ch in _EXT:
            out.append(ch)
        else:
            out.append(_strip_accent(ch) or ch)
    text = "".join(out)
    # A word in capitals stays in capitals: СТОП -> STOP, ЩИ -> SHCHI (not ShchI).
    return text.upper() if len(word) > 1 and word.isupper() else text


def transliterate(text: str) -> str:
    """Cyrillic letters to Latin and typographic punctuation to GSM-7 equivalents.

    Characters of other scripts (Armenian, Persian, emoji) are left alone.
    """
    out = []
    for chunk in _WORDS.split(text):
        if not chunk:
            continue
        if chunk[0].isalpha():
            out.append(_translit_word(chunk))
        else:
            out.append("".join(_PUNCTUATION.get(ch, ch) for ch in chunk))
    return "".join(out)


_WORDS: Final = re.compile(r"([^\W\d_]+)")
