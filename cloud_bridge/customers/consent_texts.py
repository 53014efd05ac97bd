"""Consent texts (versioned files per language) and the enrolment page's words.

A consent text is ``customers/texts/{version}.{language}.md``; its SHA-256 over the file's bytes
goes into every consent proof, so what the customer read can be shown later, byte for byte.
A published version is never edited: a change is a new version.
"""

from __future__ import annotations

import hashlib
import html
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

__all__ = [
    "CONSENT_DIR",
    "LANGUAGES",
    "ConsentText",
    "ConsentTextError",
    "consent_text",
    "versions",
    "pick_language",
    "words",
    "code_sms",
]

CONSENT_DIR = Path(__file__).parent / "texts"
LANGUAGES: tuple[str, ...] = ("ru", "hy", "en")
LANGUAGE_NAMES = {"ru": "Русский", "hy": "Հայերեն", "en": "English"}
# Default language per store country when the browser does not say.
COUNTRY_LANGUAGE = {"RU": "ru", "AM": "hy", "BY": "ru", "KZ": "ru", "KG": "ru"}


class ConsentTextError(LookupError):
    """No consent text for that version and language."""


@dataclass(frozen=True, slots=True)
class ConsentText:
    version: str
    language: str
    text: str
    sha256: str

    @property
    def html(self) -> str:
        return _markdown(self.text)


@lru_cache(maxsize=64)
def consent_text(version: str, language: str) -> ConsentText:
    if not re.fullmatch(r"v\d+", version) or language not in LANGUAGES:
        raise ConsentTextError(f"no consent text {version!r} in {language!r}")
    path = CONSENT_DIR / f"{version}.{language}.md"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConsentTextError(f"no consent text file {path.name}") from None
    return ConsentText(version, language, raw.decode("utf-8"), hashlib.sha256(raw).hexdigest())


def versions() -> list[str]:
    """Published versions, oldest first (each must exist in every language)."""
    found = {p.name.split(".")[0] for p in CONSENT_DIR.glob("v*.*.md")}
    return sorted(found, key=lambda v: int(v[1:]))


def _inline(s: str) -> str:
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(s))


def _markdown(text: str) -> str:
    """The little Markdown the consent texts use: a heading, paragraphs, a numbered list."""
    out: list[str] = []
    items: list[str] = []
    for block in text.strip().split("\n\n"):
        lines = [line.strip() for line in block.strip().splitlines()]
        if all(re.match(r"\d+\.\s", line) for line in lines):
            items += [_inline(re.sub(r"^\d+\.\s+", "", line)) for line in lines]
            continue
        if items:
            out.append("<ol>" + "".join(f"<li>{i}</li>" for i in items) + "</ol>")
            items = []
        joined = " ".join(lines)
        if joined.startswith("# "):
            out.append(f"<h2>{_inline(joined[2:])}</h2>")
        else:
            out.append(f"<p>{_inline(joined)}</p>")
    if items:
        out.append("<ol>" + "".join(f"<li>{i}</li>" for i in items) + "</ol>")
    return "\n".join(out)


def pick_language(requested: str | None, accept_language: str | None, country: str) -> str:
    """The explicit choice, else the browser's first supported language, else the store's."""
    if requested in LANGUAGES:
        return requested
    for part in (accept_language or "").split(","):
        tag = part.split(";")[0].strip().lower()[:2]
        if tag in LANGUAGES:
            return tag
    return COUNTRY_LANGUAGE.get(country, "en")


_WORDS: dict[str, dict[str, str]] = {
    "title": {
        "en": "Offers from {store}",
        "ru": "Предложения от {store}",
        "hy": "Առաջարկներ {store}-ից",
    },
    "intro": {
        "en": "Get personal offers by SMS when you are near the store.",
        "ru": "Получайте персональные предложения по SMS, когда вы рядом с магазином.",
        "hy": "Ստացեք անհատական առաջարկներ SMS-ով, երբ խանութի մոտ եք։",
    },
    "name": {"en": "Your name", "ru": "Ваше имя", "hy": "Ձեր անունը"},
    "phone": {"en": "Mobile phone", "ru": "Мобильный телефон", "hy": "Բջջային հեռախոս"},
    "consent_sms": {
        "en": "I agree to marketing SMS from the store (1)",
        "ru": "Я согласен(на) получать рекламные SMS от магазина (1)",
        "hy": "Համաձայն եմ ստանալ խանութի գովազդային SMS-ներ (1)",
    },
    "consent_recognition": {
        "en": "I agree to recognition of my phone's Wi-Fi address near the store (2)",
        "ru": "Я согласен(на) на распознавание Wi-Fi-адреса моего телефона рядом с магазином (2)",
        "hy": "Համաձայն եմ, որ իմ հեռախոսի Wi-Fi հասցեն ճանաչվի խանութի մոտ (2)",
    },
    "no_device": {
        "en": "(2) needs this page opened from the store's Wi-Fi.",
        "ru": "Для (2) откройте эту страницу из Wi-Fi-сети магазина.",
        "hy": "(2)-ի համար բացեք այս էջը խանութի Wi-Fi ցանցից։",
    },
    "send_code": {"en": "Send me a code", "ru": "Получить код", "hy": "Ստանալ կոդը"},
    "code_sent": {
        "en": "If the number can receive SMS, a 6-digit code is on its way. Enter it below.",
        "ru": "Если номер может принимать SMS, код из 6 цифр уже в пути. Введите его ниже.",
        "hy": "Եթե համարը կարող է SMS ստանալ, 6 նիշանոց կոդն արդեն ճանապարհին է։ Մուտքագրեք այն ստորև։",
    },
    "code": {"en": "Code from the SMS", "ru": "Код из SMS", "hy": "Կոդը SMS-ից"},
    "confirm": {"en": "Confirm", "ru": "Подтвердить", "hy": "Հաստատել"},
    "done": {
        "en": "Thank you! Your consent is confirmed.",
        "ru": "Спасибо! Ваше согласие подтверждено.",
        "hy": "Շնորհակալություն։ Ձեր համաձայնությունը հաստատված է։",
    },
    "welcome_back": {
        "en": "Welcome back! Your phone is enrolled; nothing else to do.",
        "ru": "С возвращением! Ваш телефон уже подключён, больше ничего делать не нужно.",
        "hy": "Բարի վերադարձ։ Ձեր հեռախոսն արդեն գրանցված է, այլ բան անել պետք չէ։",
    },
    "continue": {
        "en": "Continue to the internet",
        "ru": "Продолжить в интернет",
        "hy": "Շարունակել դեպի ինտերնետ",
    },
    "optout": {
        "en": "Opt out of offers",
        "ru": "Отказаться от предложений",
        "hy": "Հրաժարվել առաջարկներից",
    },
    "optout_intro": {
        "en": "Enter your number to withdraw both consents. No code is needed.",
        "ru": "Введите номер, чтобы отозвать оба согласия. Код не нужен.",
        "hy": "Մուտքագրեք համարը՝ երկու համաձայնությունն էլ հետ վերցնելու համար։ Կոդ պետք չէ։",
    },
    "optout_done": {
        "en": "Done. If this number was enrolled, it gets no more offers and its phone is no longer recognised.",
        "ru": "Готово. Если этот номер был подключён, предложений больше не будет, а телефон больше не распознаётся.",
        "hy": "Պատրաստ է։ Եթե այս համարը գրանցված էր, այլևս առաջարկներ չի ստանա, և հեռախոսն այլևս չի ճանաչվի։",
    },
    "err_phone": {
        "en": "This does not look like a mobile number.",
        "ru": "Это не похоже на номер мобильного телефона.",
        "hy": "Սա բջջային համարի նման չէ։",
    },
    "err_name": {
        "en": "Please enter your name (up to 80 characters).",
        "ru": "Укажите имя (до 80 символов).",
        "hy": "Նշեք ձեր անունը (մինչև 80 նիշ)։",
    },
    "err_consent": {
        "en": "Tick at least one of the two consents.",
        "ru": "Отметьте хотя бы одно из двух согласий.",
        "hy": "Նշեք երկու համաձայնություններից առնվազն մեկը։",
    },
    "err_rate": {
        "en": "Too many requests. Please try again later.",
        "ru": "Слишком много запросов. Попробуйте позже.",
        "hy": "Չափազանց շատ հարցումներ։ Փորձեք ավելի ուշ։",
    },
    "err_code": {
        "en": "Wrong code. Attempts left: {left}.",
        "ru": "Неверный код. Осталось попыток: {left}.",
        "hy": "Սխալ կոդ։ Մնացած փորձեր՝ {left}։",
    },
    "err_closed": {
        "en": "This code is no longer valid. Please start again.",
        "ru": "Этот код больше не действует. Начните заново.",
        "hy": "Այս կոդն այլևս վավեր չէ։ Սկսեք նորից։",
    },
    "err_send": {
        "en": "We could not send the code just now. Please try again later.",
        "ru": "Сейчас не удалось отправить код. Попробуйте позже.",
        "hy": "Այս պահին չհաջողվեց ուղարկել կոդը։ Փորձեք ավելի ուշ։",
    },
    "start_again": {"en": "Start again", "ru": "Начать заново", "hy": "Սկսել նորից"},
}

_SMS = {
    "en": "{sender} code: {code}. Valid {minutes} min. Do not share it.",
    "ru": "Код {sender}: {code}. Действует {minutes} мин. Никому не сообщайте.",
    "hy": "{sender} կոդ՝ {code}։ Գործում է {minutes} րոպե։ Մի՛ փոխանցեք այն։",
}


def words(language: str) -> dict[str, str]:
    """Every UI string in one language (English where a string is missing)."""
    return {k: v.get(language, v["en"]) for k, v in _WORDS.items()}


def code_sms(language: str, sender: str, code: str, minutes: int) -> str:
    return _SMS.get(language, _SMS["en"]).format(sender=sender, code=code, minutes=minutes)
