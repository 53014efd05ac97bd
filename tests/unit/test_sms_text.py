"""Mandatory parts of an SMS (sender, brand, opt-out in the customer's language) and the
campaign-save cost check, also through the tenant file."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloud_bridge.config import ConfigError
from cloud_bridge.delivery.sms_encoding import is_gsm7
from cloud_bridge.delivery.sms_text import (
    compose,
    confirmation_text,
    language_of_text,
    opt_out_text,
    sender_kind,
    validate_template_cost,
)
from cloud_bridge.errors import SenderError, TemplateCostError
from cloud_bridge.offers.templates import TemplateError
from cloud_bridge.tenant import load_tenant

DEMO = Path(__file__).parents[2] / "cloud_bridge" / "dev" / "demo" / "tenant.toml"
LINK = "https://pb.example/o/AbCd1234"


@pytest.mark.parametrize(
    "sender,kind",
    [
        ("MainStCafe", "alphanumeric"),
        ("Main St.", "alphanumeric"),
        ("A&B-Shop_1", "alphanumeric"),
        ("+79161234567", "number"),
        ("79161234567", "number"),
        ("4242", "number"),
    ],
)
def test_sender_kinds(sender: str, kind: str) -> None:
    assert sender_kind(sender) == kind


@pytest.mark.parametrize(
    "sender", ["", "TwelveChars12", "Кофейня", "1234.", " Lead", "Cafe!", "12"]
)
def test_bad_senders(sender: str) -> None:
    with pytest.raises(SenderError):
        sender_kind(sender)


def test_compose_adds_brand_and_link_opt_out_for_alphanumeric() -> None:
    c = compose(
        "Anna, 15% off beans today.",
        brand="Main St. Coffee",
        sender="MainStCafe",
        language="en",
        link=LINK,
    )
    assert c.text == f"Main St. Coffee: Anna, 15% off beans today. Opt out: {LINK}"
    assert c.cost.encoding == "GSM-7" and c.cost.parts == 1
    # The brand is not repeated when the text has it already (any case).
    c = compose(
        "15% off at main st. coffee",
        brand="Main St. Coffee",
        sender="MainStCafe",
        language="en",
        link=LINK,
    )
    assert c.text.startswith("15% off at main st. coffee Opt out:")


def test_opt_out_in_the_customers_language_and_script() -> None:
    ru = compose(
        "Анна, скидка 15% на кофе.", brand="Кофейня", sender="MainStCafe", language="ru", link=LINK
    )
    assert ru.text.endswith(f"Отписаться: {LINK}") and ru.cost.encoding == "UCS-2"
    # An otherwise GSM-7 text gets the instruction in Latin letters: it stays GSM-7.
    latin = compose("Anna, 15% off.", brand="Cafe", sender="MainStCafe", language="ru", link=LINK)
    assert latin.text.endswith(f"Otpisatsya: {LINK}") and latin.cost.encoding == "GSM-7"
    hy = compose("Աննա, 15% զեղչ", brand="Սրճարան", sender="+37410123456", language="hy")
    assert hy.text.endswith("Հրաժարվելու համար պատասխանեք STOP")
    num = compose("Anna, 15% off.", brand="Cafe", sender="+15551234567", language="en")
    assert num.text.endswith("Reply STOP to opt out")
    with pytest.raises(SenderError):
        opt_out_text("en", "alphanumeric", None)  # an alphanumeric sender cannot take replies


def test_transliteration_makes_russian_gsm7() -> None:
    c = compose(
        "Анна, скидка 15% на кофе сегодня.",
        brand="Кофейня",
        sender="MainStCafe",
        language="ru",
        link=LINK,
        translit=True,
    )
    assert is_gsm7(c.text)
    assert c.text == f"Kofeynya: Anna, skidka 15% na kofe segodnya. Otpisatsya: {LINK}"


@pytest.mark.parametrize(
    "text,lang", [("Hello", "en"), ("Привет, Anna", "ru"), ("Բարև Anna", "hy"), ("123", "en")]
)
def test_language_of_text(text: str, lang: str) -> None:
    assert language_of_text(text) == lang


def test_confirmations_exist_for_every_action_and_language() -> None:
    for action in ("stop", "start", "help"):
        for lang in ("en", "ru", "hy"):
            text = confirmation_text(action, lang, "Main St. Coffee")
            assert text.startswith("Main St. Coffee:")
            # Each says how to get back or out (START / STOP keywords, in its language).
            assert any(w in text for w in ("STOP", "СТОП", "START", "СТАРТ"))
    assert is_gsm7(confirmation_text("stop", "ru", "Kofe", translit=True))


def test_demo_template_fits_and_long_russian_is_refused() -> None:
    demo = load_tenant(DEMO)
    cost = validate_template_cost(
        demo.campaigns[0].template, store_name=demo.store.name, sender=demo.store.sender_name
    )
    assert cost.parts <= 2
    long_ru = (
        "{{ first_name }}, скидка 15% на {{ favourite_product }} сегодня в магазине "
        "{{ store_name }}! Покажите это SMS на кассе и получите подарок."
    )
    with pytest.raises(TemplateCostError) as err:
        validate_template_cost(long_ru, store_name="Кофейня на Главной", sender="MainStCafe")
    assert err.value.parts == 3 and err.value.max_parts == 2
    assert "UCS-2" in str(err.value) and "transliteration" in str(err.value)
    assert (
        validate_template_cost(long_ru, store_name="Кофейня на Главной", translit=True).parts == 2
    )
    assert validate_template_cost(long_ru, store_name="Кофейня", max_parts=3).parts == 3
    with pytest.raises(TemplateError):
        validate_template_cost("{{ unknown_variable }}")


def test_tenant_refuses_an_expensive_campaign_and_a_bad_sender(tmp_path: Path) -> None:
    text = DEMO.read_text(encoding="utf-8")
    long = "{{ first_name }}, " + "очень длинный текст предложения " * 6
    bad = text.replace(
        'template = "{{ first_name }}, 15% off',
        f'template = "{long} {{{{ first_name }}}}, 15% off',
    )
    path = tmp_path / "tenant.toml"
    path.write_text(bad, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_tenant(path)
    assert "campaigns[0].template" in str(err.value) and "SMS parts" in str(err.value)
    path.write_text(
        text.replace('sender_name = "MainStCafe"', 'sender_name = "Main St Coffee!"'),
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as err:
        load_tenant(path)
    assert "store.sender_name" in str(err.value)
