"""Provider webhooks and opt-out: status callbacks, inbound STOP/START/HELP, one-click links.

Routes (served by ``cloud_bridge.web.inbound``; the checks and parsing are here):

* ``POST /sms/twilio/status`` and ``/sms/twilio/inbound``: form posts signed with
  ``X-Twilio-Signature`` (HMAC-SHA1 of the URL and the sorted parameters, auth token as key).
* ``POST /sms/smsc/callback``: SMSC.ru status notices and incoming SMS (``md5`` check field
  over the fields and the API password). SMSC posts in the charset the handler URL asks for
  (``smsc_callback_url`` gives ``...?charset=utf-8&md5=1``), else in windows-1251, its default; the
  body is decoded in that charset and the md5 is checked over the bytes SMSC sent.
* ``POST /sms/http/status`` and ``/sms/http/inbound``: the generic gateway's JSON, signed with
  ``X-Passby-Signature: t=UNIX,v1=HEX`` (HMAC-SHA256 of ``t.body``), ``t`` within
  ``delivery.webhook_max_age_s``.
* ``POST /sms/sandbox/inbound``: JSON ``{id, from, to, text}``, only with the sandbox provider.
* ``GET|POST /o/{token}``: the one-click opt-out link of an alphanumeric sender's SMS.

A keyword is one word, case- and space-insensitive, in English, Russian or Armenian. STOP
revokes marketing SMS consent at once (in the request, before the answer: well under a second),
STOPALL recognition too; START restores what an inbound STOP took, HELP only answers. Each gets
one non-marketing confirmation (at most one per customer, action and day). A message id seen
before is a replay and is refused (409); a bad signature is 403. Phone numbers and texts are
never logged or stored: the inbound record keeps a keyed hash of the sender.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import logging
import re
import unicodedata
import urllib.parse
from dataclasses import dataclass
from typing import Any, Final

from fastapi import Request

from cloud_bridge.customers import consent as ledger
from cloud_bridge.customers.consent import Outcome
from cloud_bridge.delivery.providers import (
    SMSC_STATUS_STATES,
    TWILIO_STATUSES,
    twilio_signature,
)
from cloud_bridge.delivery.sms_text import confirmation_text
from cloud_bridge.errors import ReplayError, SignatureError, WebhookError
from cloud_bridge.storage.sends import link_context
from cloud_bridge.storage.store import BridgeStore

__all__ = [
    "KEYWORDS",
    "Keyword",
    "InboundOutcome",
    "parse_keyword",
    "handle_inbound",
    "optout",
    "smsc_signature",
    "smsc_callback_url",
    "smsc_form",
    "SMSC_CHARSETS",
    "TWILIO_STATUSES",
    "SMSC_STATUS_STATES",
    "gateway_signature",
]

log = logging.getLogger(__name__)

# keyword (normalised: case-folded, no spaces) -> (action, language it is in; None = Latin).
KEYWORDS: Final[dict[str, tuple[str, str | None]]] = {
    **{w: ("stop", None) for w in ("stop", "unsubscribe", "cancel", "end", "quit")},
    "stopall": ("stopall", None),
    **{w: ("start", None) for w in ("start", "yes", "unstop")},
    **{w: ("help", None) for w in ("help", "info")},
    # Russian
    **{w: ("stop", "ru") for w in ("стоп", "отписаться", "отписка", "отменить", "отмена")},
    **{w: ("stopall", "ru") for w in ("стопвсе", "стопвсё")},
    **{w: ("start", "ru") for w in ("старт", "да", "подписаться", "возобновить")},
    **{w: ("help", "ru") for w in ("помощь", "инфо", "справка")},
    # Armenian
    **{
        w: ("stop", "hy")
        for w in ("ստոպ", "կանգ", "դադարեցնել", "հրաժարվել", "ապաբաժանորդագրվել", "չեղարկել")
    },
    "ստոպբոլորը": ("stopall", "hy"),
    **{w: ("start", "hy") for w in ("սկսել", "այո", "ստարտ", "բաժանորդագրվել")},
    **{w: ("help", "hy") for w in ("օգնություն", "տեղեկություն", "ինֆո")},
}
_EDGE_PUNCT: Final = re.compile(r"^[\W_]+|[\W_]+$")


@dataclass(frozen=True, slots=True)
class Keyword:
    word: str
    action: str  # stop, stopall, start, help
    language: str | None


def normalise(text: str) -> str:
    """Case-folded, every space removed, punctuation at the ends dropped, ё as е."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    joined = "".join(folded.split())
    return _EDGE_PUNCT.sub("", joined).replace("ё", "е")


def parse_keyword(text: str) -> Keyword | None:
    """The keyword a whole inbound text is, or None (anything else is not a command)."""
    if len(text) > 64:
        return None
    word = normalise(text)
    found = KEYWORDS.get(word)
    if found is None:
        return None
    return Keyword(word, found[0], found[1])


def normalise_phone(phone: str) -> str:
    """E.164 with '+': providers send '79161234501', '+79161234501' or '+7 916 123-45-01'."""
    digits = re.sub(r"[^\d]", "", phone or "")
    return f"+{digits}" if digits else ""


@dataclass(frozen=True, slots=True)
class InboundOutcome:
    action: str | None
    customers: int
    changed: int
    reply_id: int | None


def _revoke(
    store: BridgeStore, customer_id: int, kinds: tuple[str, ...], now: float, proof: dict[str, Any]
) -> int:
    return sum(
        ledger.revoke(store, customer_id, kind, at=now, proof=proof) is Outcome.RECORDED
        for kind in kinds
    )


def _restore(store: BridgeStore, customer_id: int, now: float, proof: dict[str, Any]) -> int:
    """START: back to active what an inbound STOP took, only where an active consent (with its
    code-confirmed proof) existed before; never creates consent from nothing."""
    history = store.consents_of(customer_id)
    changed = 0
    for kind in ("sms", "recognition"):
        rows = [r for r in history if r["kind"] == kind]
        if not rows or rows[-1]["status"] != "revoked":
            continue
        actives = [r for r in rows if r["status"] == "active"]
        if not actives:
            continue
        if kind == "recognition" and rows[-1]["proof"].get("source") != "inbound_sms":
            continue  # recognition withdrawn elsewhere (portal, erasure): START does not undo it
        done = ledger.grant(
            store, customer_id, kind, confirmed_at=now, now=now,
            text_version=actives[-1]["text_version"],
            proof={**proof, "restores_proof_of": actives[-1]["ts"]},
        )  # fmt: skip
        changed += done is Outcome.RECORDED
    return changed


def handle_inbound(
    store: BridgeStore,
    deliverer: Any,
    provider: str,
    message_id: str,
    from_phone: str,
    our_number: str | None,
    text: str,
    now: float,
    *,
    default_language: str = "en",
    translit: bool = False,
) -> InboundOutcome:
    """One inbound SMS: consent changes at once, then one confirmation is queued.
    Raises ReplayError for a message id seen before."""
    if not message_id:
        raise WebhookError("inbound message without an id")
    phone = normalise_phone(from_phone)
    kw = parse_keyword(text)
    phone_hmac = store.cipher.lookup("phone", phone) if phone else None
    if not store.record_inbound(
        provider, message_id, phone_hmac, kw.word if kw else None, kw.action if kw else None, now
    ):
        raise ReplayError(f"inbound message {message_id!r} was seen before")
    if kw is None:
        log.info("inbound %s message: not a keyword (ignored)", provider)
        return InboundOutcome(None, 0, 0, None)
    customers = store.customers_by_phone(phone) if phone else []
    proof = {
        "source": "inbound_sms",
        "provider": provider,
        "message_id": message_id,
        "keyword": kw.word,
    }
    changed = 0
    reply_action = {"stopall": "stop"}.get(kw.action, kw.action)
    for c in customers:
        if kw.action == "stop":
            changed += _revoke(store, c["id"], ("sms",), now, proof)
        elif kw.action == "stopall":
            changed += _revoke(store, c["id"], ("sms", "recognition"), now, proof)
        elif kw.action == "start":
            n = _restore(store, c["id"], now, proof)
            changed += n
            if not n and store.latest_consents(c["id"]).get("sms") != "active":
                reply_action = "help"  # never consented: explain instead of pretending
    store.set_inbound_customers(provider, message_id, len(customers))
    log.info(
        "inbound %s keyword %s: %d customer(s), %d consent change(s)",
        provider, kw.action, len(customers), changed,
    )  # fmt: skip
    reply_id = None
    if customers and deliverer is not None:
        c = customers[0]
        brand = store.customer_brand(c["id"]) or {}
        language = kw.language or store.customer_language(c["id"]) or default_language
        body = confirmation_text(reply_action, language, brand.get("name") or "", translit)
        sender = our_number or brand.get("sender_name") or "Info"
        key = f"{reply_action}:{c['id']}:{int(now // 86400)}"
        reply_id = deliverer.queue_reply(c["id"], reply_action, sender, body, key, language, now)
    return InboundOutcome(kw.action, len(customers), changed, reply_id)


# -- one-click opt-out links -----------------------------------------------------------------------

_OPTOUT_TEXT: Final[dict[str, dict[str, str]]] = {
    "en": {
        "title": "Unsubscribe",
        "ask": "Stop SMS offers from {brand}?",
        "button": "Unsubscribe",
        "done": "You are unsubscribed. {brand} will send you no more offers.",
        "bad": "This link is not valid.",
    },
    "ru": {
        "title": "Отписка",
        "ask": "Больше не получать SMS-предложения от {brand}?",
        "button": "Отписаться",
        "done": "Вы отписаны. {brand} больше не будет присылать вам предложения.",
        "bad": "Ссылка недействительна.",
    },
    "hy": {
        "title": "Ապաբաժանորդագրում",
        "ask": "Դադարեցնե՞լ {brand}-ի SMS առաջարկները։",
        "button": "Ապաբաժանորդագրվել",
        "done": "Դուք ապաբաժանորդագրված եք։ {brand}-ը այլևս առաջարկներ չի ուղարկի։",
        "bad": "Հղումն անվավեր է։",
    },
}


def _page(language: str, title: str, body: str) -> str:
    return (
        f'<!doctype html><html lang="{language}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="robots" content="noindex">'
        f"<title>{html.escape(title)}</title><style>body{{font:18px/1.5 system-ui,sans-serif;"
        "max-width:32em;margin:3em auto;padding:0 1em}button{font-size:1.1em;padding:.6em 1.4em}"
        f"</style></head><body>{body}</body></html>"
    )


def optout(store: BridgeStore, token: str, now: float) -> tuple[bool, int | None]:
    """Revoke marketing SMS consent for the link's customer: (link valid, customer id)."""
    row = store.optout_link_row(token) if re.fullmatch(r"[A-Za-z0-9]{4,32}", token) else None
    if row is None:
        return False, None
    # (an erased customer has nothing left to revoke: the ledger writes nothing for them)
    _revoke(
        store, row["customer_id"], ("sms",), now,
        {"source": "optout_link", "send_id": row["send_id"]},
    )  # fmt: skip
    store.use_optout_link(token, now)
    log.info("opt-out link used: customer %s unsubscribed", row["customer_id"])
    return True, row["customer_id"]


def _link_context(store: BridgeStore, token: str) -> tuple[str, str]:
    """(language, brand) of a link's send, for the page."""
    rows = link_context(store, token)
    if not rows:
        return "en", ""
    lang = rows[0]["language"] if rows[0]["language"] in _OPTOUT_TEXT else "en"
    return lang, rows[0]["name"] or ""


# -- signatures ------------------------------------------------------------------------------------


# The charsets SMSC can post callbacks in (``?charset=`` of the handler URL); its default is
# windows-1251.
SMSC_CHARSETS: Final = ("utf-8", "windows-1251", "koi8-r")
SMSC_DEFAULT_CHARSET: Final = "windows-1251"


def smsc_callback_url(public_url: str) -> str:
    """The handler URL to enter in SMSC's account settings: callbacks in UTF-8, with the md5
    check field (SMSC adds it when the handler URL names ``md5``)."""
    return public_url.rstrip("/") + "/sms/smsc/callback?charset=utf-8&md5=1"


def smsc_signature(fields: list[str], password: str, charset: str = "utf-8") -> str:
    """SMSC callback check field: md5 of the fields and the API password joined by ':', over
    the bytes in the charset the callback was posted in (status: id, phone, status; incoming
    SMS: sms_id, phone, mes, to)."""
    data = ":".join([*fields, password]).encode(charset)
    return hashlib.md5(data).hexdigest()  # noqa: S324 - SMSC's documented check field


def _smsc_charset(query_charset: str | None, content_type: str) -> str:
    """The charset of an SMSC callback: the handler URL's ``charset``, else the content type's,
    else SMSC's default (windows-1251)."""
    given = query_charset
    if not given:
        match = re.search(r"charset=\s*\"?([A-Za-z0-9_.:-]+)", content_type or "")
        given = match.group(1) if match else None
    name = (given or SMSC_DEFAULT_CHARSET).strip().lower()
    name = {"utf8": "utf-8", "cp1251": "windows-1251", "win-1251": "windows-1251"}.get(name, name)
    if name not in SMSC_CHARSETS:
        raise WebhookError(
            f"SMSC callback charset {given!r} is not one SMSC uses ({', '.join(SMSC_CHARSETS)})"
        )
    return name


def smsc_form(body: bytes, charset: str) -> dict[str, str]:
    """An SMSC callback's form fields, decoded in ``charset``; bytes that do not fit it are
    refused whole (WebhookError), never guessed at."""
    try:
        text = body.decode("ascii")  # percent-encoded, as SMSC posts
    except UnicodeDecodeError:
        try:
            text = body.decode(charset)
        except UnicodeDecodeError:
            raise WebhookError(f"SMSC callback body is not valid {charset}") from None
    try:
        pairs = urllib.parse.parse_qsl(
            text, keep_blank_values=True, encoding=charset, errors="strict"
        )
    except UnicodeDecodeError:
        raise WebhookError(
            f"SMSC callback is not valid {charset}: set the handler URL in SMSC's settings to "
            "…/sms/smsc/callback?charset=utf-8 (or leave charset out for windows-1251)"
        ) from None
    return dict(pairs)


def gateway_signature(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def _check_gateway(
    secret: str | None, header: str, body: bytes, now: float, max_age: float
) -> None:
    if not secret:
        raise SignatureError("no webhook secret configured")
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    ts, sig = parts.get("t", ""), parts.get("v1", "")
    try:
        age = abs(now - float(ts))
    except ValueError:
        raise SignatureError("signature without a timestamp") from None
    expected = gateway_signature(secret, ts, body).split("v1=", 1)[1]
    if not sig or not hmac.compare_digest(sig, expected):
        raise SignatureError("bad signature")
    if age > max_age:
        raise ReplayError(f"signed {age:.0f} s ago (limit {max_age:.0f} s)")


def _check_twilio(
    token: str | None, request: Request, public_url: str, params: list[tuple[str, str]]
) -> None:
    if not token:
        raise SignatureError("no Twilio auth token configured")
    given = request.headers.get("X-Twilio-Signature", "")
    query = f"?{request.url.query}" if request.url.query else ""
    candidates = {public_url.rstrip("/") + request.url.path + query, str(request.url)}
    for url in candidates:
        if given and hmac.compare_digest(given, twilio_signature(url, params, token)):
            return
    raise SignatureError("bad X-Twilio-Signature")
