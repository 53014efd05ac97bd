"""The consent ledger: the only writer of consent grants and revocations, each with its proof.

Consent is a ledger per customer and kind (``sms``: marketing SMS, ``recognition``: being
recognised by the store's sensors); the latest record of a kind is its status, and the store
re-reads it when it reserves every send. Every path that changes consent comes here: the code
confirmed at enrolment, a CRM import's evidence, a tenant file, an inbound STOP / START SMS, a
one-click opt-out link, the portal's opt-out form and a provider that reports the number
unsubscribed. The SQL underneath is the store's (``BridgeStore.record_consent``).

One guard for each direction (``grant_guard``, ``revoke_guard``, pure):

- Nothing is written for an erased (or unknown) customer: erasure removed their consents.
- A revocation is recorded unless the kind is revoked already; it is recorded even where no
  consent was ever given, so an opt-out always wins against evidence older than it. Only an
  active consent confirmed after a back-dated revocation (a CRM opt-out with its own time)
  stands.
- A grant is recorded only with a confirmation newer than the kind's latest record: a
  re-grant after a revocation needs a fresh confirmation (a code, an inbound START from the
  number, CRM evidence dated after the opt-out); a newer confirmation of an active consent is
  recorded too, so its proof is kept. A grant without a confirmation time (a tenant file's
  word) is recorded only where the kind has no record yet.

Every record carries its proof: a mapping with at least a ``source``, stored as given.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Final

from cloud_bridge.storage.store import BridgeStore

__all__ = [
    "KINDS",
    "ConsentProofError",
    "Latest",
    "Outcome",
    "grant",
    "grant_guard",
    "revoke",
    "revoke_guard",
]

log = logging.getLogger(__name__)

KINDS: Final = ("sms", "recognition")


class ConsentProofError(ValueError):
    """A consent change without a usable proof (no ``source``) or of an unknown kind."""


class Outcome(StrEnum):
    RECORDED = "recorded"  # a new record was written
    ALREADY = "already"  # the kind already has this status: nothing to write
    SUPERSEDED = "superseded"  # a later record stands (an opt-out, a newer confirmation)
    ERASED = "erased"  # no live customer: nothing is written


Latest = tuple[str, float] | None  # (status, ts) of a kind's latest record; None: no record


def revoke_guard(latest: Latest, at: float) -> Outcome | None:
    """Why a revocation effective ``at`` is not recorded, or None to record it."""
    if latest is None:
        return None
    status, ts = latest
    if status == "revoked":
        return Outcome.ALREADY
    if status == "active" and ts > at:
        return Outcome.SUPERSEDED
    return None


def grant_guard(latest: Latest, confirmed_at: float | None) -> Outcome | None:
    """Why a grant confirmed at ``confirmed_at`` (None: no confirmation time) is not
    recorded, or None to record it."""
    if latest is None:
        return None
    status, ts = latest
    if confirmed_at is not None and confirmed_at > ts:
        return None
    return Outcome.ALREADY if status == "active" else Outcome.SUPERSEDED


def _check(kind: str, proof: Mapping[str, Any]) -> None:
    if kind not in KINDS:
        raise ConsentProofError(f"unknown consent kind {kind!r} (one of {', '.join(KINDS)})")
    if not isinstance(proof.get("source"), str) or not proof["source"]:
        raise ConsentProofError(f"a {kind} consent change needs a proof with its source")


def _latest(store: BridgeStore, customer_id: int, kind: str) -> Latest:
    rows = [r for r in store.consents_of(customer_id) if r["kind"] == kind]
    return (rows[-1]["status"], float(rows[-1]["ts"])) if rows else None


def revoke(
    store: BridgeStore, customer_id: int, kind: str, *, at: float, proof: Mapping[str, Any]
) -> Outcome:
    """Revoke one kind of consent, effective ``at`` (now, or an opt-out's own earlier time)."""
    _check(kind, proof)
    with store.transaction():
        if not store.is_live_customer(customer_id):
            return Outcome.ERASED
        why = revoke_guard(_latest(store, customer_id, kind), at)
        if why is not None:
            return why
        store.record_consent(customer_id, kind, "revoked", at, None, dict(proof))
    log.info("customer %s: %s consent revoked", customer_id, kind)
    return Outcome.RECORDED


def grant(
    store: BridgeStore,
    customer_id: int,
    kind: str,
    *,
    confirmed_at: float | None,
    now: float,
    text_version: str | None,
    proof: Mapping[str, Any],
) -> Outcome:
    """Grant one kind of consent on a confirmation made at ``confirmed_at`` (the record's
    time; None: no confirmation time is known, the record is dated ``now``)."""
    _check(kind, proof)
    with store.transaction():
        if not store.is_live_customer(customer_id):
            return Outcome.ERASED
        why = grant_guard(_latest(store, customer_id, kind), confirmed_at)
        if why is not None:
            return why
        at = now if confirmed_at is None else confirmed_at
        store.record_consent(customer_id, kind, "active", at, text_version, dict(proof))
    log.info("customer %s: %s consent granted", customer_id, kind)
    return Outcome.RECORDED
