"""The text that goes out (pure): sender rules, brand, opt-out instruction, cost check at save.

Every marketing SMS carries the sender's name (the alphanumeric sender id registered with the
operator, or a number), the brand, and an opt-out instruction in the customer's language
(Russian, Armenian or English). An alphanumeric sender cannot receive replies, so its opt-out is a
short one-click link served by the bridge; a number gets "reply STOP".

``validate_template_cost`` is what campaign code calls when a campaign is saved: it renders the
template with worst-case sample values in the template's own script, adds the brand and the
opt-out instruction for every language the message may go out in, and refuses a text over the
maximum number of parts (default 2).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Literal

from cloud_bridge.delivery.sms_encoding import (
    SmsCost,
    cost_of,
    is_gsm7,
    non_gsm_chars,
    transliterate,
)
from cloud_bridge.errors import SenderError, TemplateCostError
from cloud_bridge.offers.templates import VARIABLES, render

__all__ = [
    "LANGUAGES",
    "DEFAULT_MAX_PARTS",
    "OPTOUT_TOKEN_LENGTH",
    "OPTOUT_PATH",
    "SenderKind",
    "Composed",
    "sender_kind",
    "language_of_text",
    "opt_out_text",
    "optout_link",
    "compose",
    "confirmation_text",
    "validate_template_cost",
]

Language = Literal["en", "ru", "hy"]
SenderKind = Literal["alphanumeric", "number"]
LANGUAGES: Final[tuple[Language, ...]] = ("en", "ru", "hy")
DEFAULT_MAX_PARTS: Final = 2
OPTOUT_TOKEN_LENGTH: Final = 8
OPTOUT_PATH: Final = "/o/"

_ALNUM: Final = re.compile(r"^[A-Za-z0-9 .&_-]{1,11}$")
_NUMBER: Final = re.compile(r"^\+?[1-9]\d{6,14}$|^\d{3,8}$")


def sender_kind(sender: str) -> SenderKind:
    """'alphanumeric' (1..11 of A-Z a-z 0-9 space . & _ -, one letter at least) or 'number'
    (E.164 or a short code); anything else raises SenderError."""
    if _NUMBER.match(sender):
        return "number"
    if _ALNUM.match(sender) and any(c.isalpha() for c in sender) and sender.strip() == sender:
        return "alphanumeric"
    raise SenderError(
        f"sender {sender!r} must be alphanumeric (1-11 characters A-Z, a-z, 0-9, space . & _ -, "
        "with a letter) or a phone number"
    )


def language_of_text(text: str, default: Language = "en") -> Language:
    """The language a text is most likely in, by script: Armenian, Cyrillic (ru) or Latin (en)."""
    armenian = sum(1 for c in text if "\u0531" <= c <= "\u058f")
    cyrillic = sum(1 for c in text if "\u0400" <= c <= "\u04ff")
    latin = sum(1 for c in text if c.isascii() and c.isalpha())
    best = max(armenian, cyrillic, latin)
    if best == 0:
        return default
    if armenian == best:
        return "hy"
    if cyrillic == best:
        return "ru"
    return "en"


# (language, sender kind) -> opt-out instruction; {link} is the one-click opt-out link.
_OPT_OUT: Final[dict[tuple[str, str], str]] = {
    ("en", "alphanumeric"): "Opt out: {link}",
    ("ru", "alphanumeric"): "Отписаться: {link}",
    ("hy", "alphanumeric"): "Հրաժարվել՝ {link}",
    ("en", "number"): "Reply STOP to opt out",
    ("ru", "number"): "Отказ: ответьте СТОП",
    ("hy", "number"): "Հրաժարվելու համար պատասխանեք STOP",
}
# The same in Latin letters, for a text that is otherwise GSM-7: a Russian or Armenian
# instruction in its own script would turn the whole message into UCS-2 and double its cost.
_OPT_OUT_LATIN: Final[dict[tuple[str, str], str]] = {
    ("en", "alphanumeric"): "Opt out: {link}",
    ("ru", "alphanumeric"): "Otpisatsya: {link}",
    ("hy", "alphanumeric"): "Hrazharvel: {link}",
    ("en", "number"): "Reply STOP to opt out",
    ("ru", "number"): "Otkaz: otvette STOP",
    ("hy", "number"): "Hrazharvelu hamar pataskhaneq STOP",
}

# (action, language) -> non-marketing confirmation of an inbound keyword; {brand} is the brand.
_CONFIRMATIONS: Final[dict[tuple[str, str], str]] = {
    ("stop", "en"): "{brand}: you are unsubscribed and will get no more offers. Reply START to resubscribe.",
    ("stop", "ru"): "{brand}: вы отписаны и больше не получите предложений. Чтобы вернуться, ответьте СТАРТ.",
    ("stop", "hy"): "{brand}: Դուք ապաբաժանորդագրված եք և այլևս առաջարկներ չեք ստանա։ Վերադառնալու համար պատասխանեք START։",
    ("start", "en"): "{brand}: you are subscribed to offers again. Reply STOP to opt out.",
    ("start", "ru"): "{brand}: вы снова подписаны на предложения. Для отказа ответьте СТОП.",
    ("start", "hy"): "{brand}: Դուք կրկին բաժանորդագրված եք առաջարկներին։ Հրաժարվելու համար պատասխանեք STOP։",
    ("help", "en"): "{brand}: personal offers near our stores. Reply STOP to opt out, START to resubscribe.",
    ("help", "ru"): "{brand}: персональные предложения рядом с магазином. Для отказа ответьте СТОП, для подписки СТАРТ.",
    ("help", "hy"): "{brand}: անհատական առաջարկներ խանութի մոտ։ Հրաժարվելու համար պատասխանեք STOP, վերադառնալու համար START։",
}  # fmt: skip


def optout_link(base_url: str, token: str) -> str:
    return base_url.rstrip("/") + OPTOUT_PATH + token


def opt_out_text(
    language: str, kind: SenderKind, link: str | None = None, latin: bool = False
) -> str:
    """The opt-out instruction; ``latin`` asks for it in Latin letters (GSM-7)."""
    lang = language if language in LANGUAGES else "en"
    if kind == "alphanumeric" and not link:
        raise SenderError("an alphanumeric sender cannot receive STOP: an opt-out link is required")
    return (_OPT_OUT_LATIN if latin else _OPT_OUT)[(lang, kind)].format(link=link or "")


@dataclass(frozen=True, slots=True)
class Composed:
    text: str
    language: str
    sender_kind: SenderKind
    cost: SmsCost


def compose(
    body: str,
    *,
    brand: str,
    sender: str,
    language: str,
    link: str | None = None,
    translit: bool = False,
    country: str | None = None,
    prices: Mapping[str, float] | None = None,
    currency: str = "",
) -> Composed:
    """The final SMS: brand first if the text lacks it, then the opt-out instruction in the
    customer's language (in Latin letters when the rest of the text is GSM-7)."""
    kind = sender_kind(sender)
    text = body.strip()
    if brand and brand.casefold() not in text.casefold():
        text = f"{brand}: {text}"
    if translit:
        text = transliterate(text)
    latin = translit or is_gsm7(text)
    text = f"{text} {opt_out_text(language, kind, link, latin=latin)}"
    return Composed(text, language, kind, cost_of(text, country, prices, currency))


def confirmation_text(action: str, language: str, brand: str, translit: bool = False) -> str:
    lang = language if language in LANGUAGES else "en"
    text = _CONFIRMATIONS[(action, lang)].format(brand=brand or "Offers")
    return transliterate(text) if translit else text


# Worst-case lengths of the template variables when a campaign is saved.
SAMPLE_LENGTHS: Final[dict[str, int]] = {
    "first_name": 12,
    "favourite_product": 24,
    "store_name": 24,
}


def _samples(template: str, store_name: str | None) -> dict[str, str]:
    # Values in the template's own script: a Russian text gets Russian names, which is what
    # decides GSM-7 vs UCS-2 for the whole message.
    script = language_of_text(template)
    letter = {"en": "W", "ru": "Д", "hy": "Ա"}[script]
    values = {name: letter * SAMPLE_LENGTHS.get(name, 16) for name in VARIABLES}
    if store_name:
        values["store_name"] = store_name
    return values


def validate_template_cost(
    template: str,
    *,
    store_name: str | None = None,
    sender: str = "Sender",
    brand: str | None = None,
    max_parts: int = DEFAULT_MAX_PARTS,
    languages: Iterable[str] = LANGUAGES,
    link_base: str = "https://pb.example",
    translit: bool = False,
    variables: Mapping[str, str] | None = None,
    country: str | None = None,
    prices: Mapping[str, float] | None = None,
    currency: str = "",
) -> SmsCost:
    """The worst-case cost of a campaign text; TemplateCostError when over ``max_parts``.

    Renders ``template`` (TemplateError if it does not render) with ``variables`` or worst-case
    samples, adds brand (default: the store name) and the opt-out instruction for each language
    of ``languages``, and returns the most expensive result."""
    values = dict(_samples(template, store_name))
    values.update(variables or {})
    rendered = render(template, values)
    link = optout_link(link_base, "X" * OPTOUT_TOKEN_LENGTH)
    worst: SmsCost | None = None
    worst_lang = ""
    for lang in languages:
        composed = compose(
            rendered,
            brand=brand if brand is not None else (store_name or ""),
            sender=sender,
            language=lang,
            link=link,
            translit=translit,
            country=country,
            prices=prices,
            currency=currency,
        )
        if worst is None or composed.cost.parts > worst.parts:
            worst, worst_lang = composed.cost, lang
    if worst is None:
        raise ValueError("validate_template_cost needs at least one language")
    if worst.parts > max_parts:
        own = non_gsm_chars(template) or worst.non_gsm
        why = (
            f"characters outside GSM-7 ({''.join(own[:8])}) make it UCS-2"
            if worst.encoding == "UCS-2"
            else "GSM-7"
        )
        raise TemplateCostError(
            f"the text takes {worst.parts} SMS parts (max {max_parts}) with the opt-out "
            f"instruction in {worst_lang!r}: {worst.units} {'septets' if worst.encoding == 'GSM-7' else 'UCS-2 units'}, "
            f"{why}; shorten it" + ("" if translit else " or enable transliteration"),
            parts=worst.parts,
            max_parts=max_parts,
        )
    return worst
