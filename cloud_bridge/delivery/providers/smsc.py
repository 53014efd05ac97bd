"""SMSC.ru: the HTTP API (``send.php``, ``status.php``; login and password in POST bodies).

Error codes of send.php and status.php, every message status as the delivery state machine reads
it (``SMSC_STATUS_STATES``, shared by the status lookup and the callbacks in
``delivery/inbound.py``), ``smsc_validity`` and ``SmscProvider``.
"""

from __future__ import annotations

import re
from typing import Any, Final

import httpx

from cloud_bridge.delivery.providers.base import (
    Action,
    LookupStatus,
    OneOff,
    Outgoing,
    SendResult,
    StatusResult,
    classify_exception,
    json_object,
    retry_for_status,
)
from cloud_bridge.errors import ProviderConfigError

__all__ = [
    "SMSC_ERRORS",
    "SMSC_STATUS_ERRORS",
    "SMSC_STATUSES",
    "SMSC_STATUS_STATES",
    "SMSC_BLOCK_S",
    "smsc_status",
    "smsc_validity",
    "SmscProvider",
]

# send.php error codes (https://smsc.ru/api/http/send/sms/).
SMSC_ERRORS: dict[int, str] = {
    1: "parameter error",
    2: "invalid login or password",
    3: "insufficient funds",
    4: "address temporarily blocked (frequent errors or repeated requests)",
    5: "invalid date format",
    6: "message forbidden (by text or sender name)",
    7: "invalid phone number format",
    8: "message cannot be delivered to this number",
    9: "identical send request repeated within a minute",
}
# status.php error codes: 3 is "message not found" (a single-message lookup; a multiple one
# answers status -3 instead), 4 the same address block as send.php's, 9 too many lookups of
# one message within a minute.
SMSC_STATUS_ERRORS: dict[int, str] = {
    1: "parameter error",
    2: "invalid login or password",
    3: "message not found",
    4: "address temporarily blocked",
    5: "error deleting the message",
    9: "more than five lookups of one message within a minute",
}
# status.php / callback message statuses.
SMSC_STATUSES: dict[int, str] = {
    -3: "message not found",
    -2: "stopped",
    -1: "waiting to be sent",
    0: "passed to the operator",
    1: "delivered",
    2: "read",
    3: "expired",
    4: "link followed",
    20: "cannot be delivered",
    22: "invalid number",
    23: "message forbidden",
    24: "insufficient funds",
    25: "unavailable number",
}
# Every SMSC status as the delivery state machine reads it (status lookup and callback alike).
# A code not listed here is not guessed at: the lookup answers "error", the callback is ignored.
SMSC_STATUS_STATES: Final[dict[int, LookupStatus]] = {
    -3: "not_found",
    -2: "failed",  # stopped (by the account or SMSC) before it went out; never resend
    -1: "accepted",
    0: "accepted",
    1: "delivered",
    2: "delivered",
    4: "delivered",  # the recipient followed a link in it
    3: "undelivered",  # expired in the network
    20: "undelivered",
    22: "failed",
    23: "failed",
    24: "failed",
    25: "failed",
}
_SMSC_INVALID = {22, 25}
# SMSC's FAQ: an address is blocked for 10 (frequent errors) or 30 minutes. A send refused with
# error 4 is asked about, not resent, once the shorter block is over.
SMSC_BLOCK_S: Final = 600.0


def smsc_status(code: int, pid: str | None = None) -> StatusResult | None:
    """One SMSC status code (lookup or callback) as a StatusResult; None if not documented."""
    state = SMSC_STATUS_STATES.get(code)
    if state is None:
        return None
    reason = f"SMSC status {code}: {SMSC_STATUSES[code]}"
    if state == "not_found":
        return StatusResult("not_found", error=reason)
    if state in ("accepted", "delivered"):
        return StatusResult(state, provider_id=pid)
    return StatusResult(
        state,
        provider_id=pid,
        error=reason,
        code=str(code),
        action="invalid_number" if code in _SMSC_INVALID else None,
    )


def smsc_validity(seconds: int | None) -> str | None:
    """SMSC's ``valid`` parameter (hh:mm, 00:01..24:00)."""
    if not seconds:
        return None
    minutes = min(24 * 60, max(1, -(-int(seconds) // 60)))
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


class SmscProvider(OneOff):
    """SMSC.ru HTTP API: ``/sys/send.php`` and ``/sys/status.php`` with ``fmt=3`` (JSON), both by
    POST (SMSC takes GET or POST), so the password and the phone never sit in a URL."""

    name = "smsc"
    can_reconcile = True
    block_s = SMSC_BLOCK_S

    def __init__(
        self,
        client: httpx.Client,
        login: str,
        password: str,
        base_url: str = "https://smsc.ru",
        duplicate_window_s: float = 60.0,
    ) -> None:
        if not login or not password:
            raise ProviderConfigError("smsc needs provider.smsc.login and password")
        self.client = client
        self.login = login
        self.password = password
        self.base = base_url.rstrip("/")
        self.account = f"smsc:{login}"
        # SMSC refuses an identical send within a minute (error 9): ask after that.
        self.duplicate_window_s = duplicate_window_s

    def _auth(self) -> dict[str, str]:
        return {"login": self.login, "psw": self.password, "fmt": "3", "charset": "utf-8"}

    def submit(self, msg: Outgoing) -> SendResult:
        data = {
            **self._auth(),
            "phones": msg.to,
            "mes": msg.body,
            "sender": msg.sender,
            "id": str(msg.numeric_id),
            "cost": "3",
        }
        valid = smsc_validity(msg.validity_s)
        if valid:
            data["valid"] = valid
        try:
            r = self.client.post(f"{self.base}/sys/send.php", data=data)
        except httpx.HTTPError as exc:
            return classify_exception(exc)
        retry = retry_for_status(r)
        if retry is not None:
            return retry
        body = json_object(r)
        if r.status_code != 200 or not body:
            return SendResult("unknown", error=f"HTTP {r.status_code} without a JSON answer")
        if "error_code" in body:
            return self._error(_int(body["error_code"]))
        if "id" in body:
            cnt = body.get("cnt")
            return SendResult(
                "accepted",
                provider_id=str(body["id"]),
                parts=int(cnt) if isinstance(cnt, int | str) and str(cnt).isdigit() else None,
            )
        return SendResult("unknown", error="answer without id or error_code")

    def send(self, to: str, sender: str, body: str) -> SendResult:
        """A one-off text (an enrolment code, unique each time): error 4 refused this request
        and no identical one came before it, so it surely was not sent."""
        result = super().send(to, sender, body)
        if result.status == "unknown" and result.code == "4":
            return SendResult("failed", error=result.error, code="4")
        return result

    def _error(self, code: int | None) -> SendResult:
        reason = f"SMSC {code}: {SMSC_ERRORS.get(code or 0, 'unknown error')}"
        if code == 4:
            # The address is blocked; this request was not processed, but the block may be for
            # repeated identical requests, so an earlier copy may have gone out. Wait out the
            # block, then ask; never resend blindly.
            return SendResult("unknown", error=reason, code="4", retry_after=self.block_s)
        if code == 9:
            # "Identical request within a minute": an earlier identical request reached SMSC,
            # so the message may be on its way. Ask (after the window), never resend blindly.
            return SendResult(
                "unknown", error=reason, code="9", retry_after=self.duplicate_window_s
            )
        if code is None:
            return SendResult("unknown", error="SMSC answered an error without a code")
        action: Action | None = "invalid_number" if code in (7, 8) else None
        return SendResult("failed", error=reason, code=str(code), action=action)

    def status(self, msg: Outgoing) -> StatusResult:
        data = {**self._auth(), "phone": msg.to, "id": str(msg.numeric_id)}
        try:
            r = self.client.post(f"{self.base}/sys/status.php", data=data)
        except httpx.HTTPError as exc:
            return StatusResult("error", error=f"status API: {type(exc).__name__}")
        body = json_object(r)
        if r.status_code != 200 or not body:
            return StatusResult("error", error=f"status API HTTP {r.status_code}")
        if "error_code" in body:
            code = _int(body["error_code"])
            reason = f"SMSC status error {code}: {SMSC_STATUS_ERRORS.get(code or 0, 'unknown')}"
            if code == 3:  # documented "message not found" of a single-message lookup
                return StatusResult("not_found", error=reason, code="3")
            return StatusResult("error", error=reason, code=None if code is None else str(code))
        code = _int(body.get("status"))
        if code is None:
            # A missing or garbled status is not "not found": ask again later.
            return StatusResult("error", error="SMSC status answer without a status")
        found = smsc_status(code, str(msg.numeric_id))
        if found is None:
            return StatusResult("error", error=f"SMSC status {code}: not documented")
        return found


def _int(value: Any) -> int | None:
    """An integer field of a provider's JSON (number or numeric string), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value)
    return None
