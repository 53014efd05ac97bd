"""One consent ledger (cloud_bridge/customers/consent.py) writes every grant and revocation.

Before it, five paths revoked consent with different guards: inbound STOP/STOPALL and the opt-out
link (unless already revoked), the portal's opt-out form (only an active consent), a CRM import's
"false" (only an active consent not newer than the row's time), the provider's "unsubscribed"
(no guard: a row every time) and a tenant file (unless already revoked, only a kind with a
record). Grants: the enrolment code (always), a CRM import (unless active; not over a later
record), a tenant file (unless active: also over a STOP), inbound START (back to the last
active). One test per difference below pins the unified behaviour (module docstring of
consent.py); the architecture test keeps every other module from writing consent itself."""

from __future__ import annotations

import ast
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from delivery_helpers import add_customer, new_store, reserve

from cloud_bridge.config import EnrolSettings
from cloud_bridge.customers import consent as ledger
from cloud_bridge.customers.consent import ConsentProofError, Outcome, grant_guard, revoke_guard
from cloud_bridge.customers.crm_import import import_customers
from cloud_bridge.customers.enrol import Enrolments
from cloud_bridge.delivery.outbox import Deliverer, DeliveryOptions
from cloud_bridge.delivery.providers import Outgoing, SandboxProvider, SendResult, StatusResult
from cloud_bridge.delivery.ratelimit import TokenBucket
from cloud_bridge.sensors.keys import BridgeKeys
from cloud_bridge.storage.store import BridgeStore
from cloud_bridge.tenant import load_tenant, seed

BRIDGE = Path(__file__).parents[2] / "cloud_bridge"
TENANT = BRIDGE / "dev" / "demo" / "tenant.toml"
WRITES = ("INSERT INTO CONSENTS", "UPDATE CONSENTS")


def consent_writers(root: Path) -> list[str]:
    """Modules under ``root`` (other than customers/consent.py and storage/) that write consent:
    call a ``record_consent`` method or hold SQL that inserts or updates consent rows."""
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel == Path("customers/consent.py") or rel.parts[0] == "storage":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr == "record_consent":
                found.append(f"{rel}:{node.lineno}: record_consent")
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                sql = " ".join(node.value.upper().split())
                if any(w in sql for w in WRITES):
                    found.append(f"{rel}:{node.lineno}: SQL writes consents")
    return sorted(found)


def test_only_the_ledger_writes_consent() -> None:
    assert consent_writers(BRIDGE) == []


def test_the_writer_scan_sees_calls_and_sql(tmp_path: Path) -> None:
    (tmp_path / "customers").mkdir()
    (tmp_path / "storage").mkdir()
    (tmp_path / "customers" / "consent.py").write_text("store.record_consent(1)\n")
    (tmp_path / "storage" / "store.py").write_text("q = 'INSERT INTO consents(a) VALUES (?)'\n")
    (tmp_path / "m.py").write_text(
        "store.record_consent(1, 'sms', 'revoked', 0.0)\n"
        "db.execute('''insert into\n   consents(a) values (?)''')\n"
        "f = self.store.record_consent\n"
        "db.execute('SELECT status FROM consents')\n"
    )
    assert consent_writers(tmp_path) == [
        "m.py:1: record_consent",
        "m.py:2: SQL writes consents",
        "m.py:4: record_consent",
    ]


# -- the guards (pure) ------------------------------------------------------------------------


def test_revoke_guard() -> None:
    assert revoke_guard(None, 10.0) is None  # never consented: the opt-out is still recorded
    assert revoke_guard(("active", 5.0), 10.0) is None
    assert revoke_guard(("active", 10.0), 10.0) is None
    assert revoke_guard(("revoked", 5.0), 10.0) is Outcome.ALREADY
    assert revoke_guard(("active", 11.0), 10.0) is Outcome.SUPERSEDED  # confirmed after it


def test_grant_guard() -> None:
    assert grant_guard(None, 10.0) is None
    assert grant_guard(None, None) is None
    assert grant_guard(("revoked", 5.0), 10.0) is None  # a fresh confirmation after the STOP
    assert grant_guard(("revoked", 10.0), 10.0) is Outcome.SUPERSEDED
    assert grant_guard(("revoked", 11.0), 10.0) is Outcome.SUPERSEDED  # the STOP is later
    assert grant_guard(("revoked", 5.0), None) is Outcome.SUPERSEDED  # no confirmation time
    assert grant_guard(("active", 5.0), 10.0) is None  # a newer confirmation: its proof kept
    assert grant_guard(("active", 10.0), 10.0) is Outcome.ALREADY  # the same evidence again
    assert grant_guard(("active", 5.0), None) is Outcome.ALREADY


# -- the ledger on both engines -----------------------------------------------------------------


@pytest.fixture()
def store(db_location: str | Path) -> Iterator[BridgeStore]:
    s = new_store(db_location)
    yield s
    s.close()


def statuses(store: BridgeStore, cid: int, kind: str) -> list[str]:
    return [r["status"] for r in store.consents_of(cid) if r["kind"] == kind]


def test_every_change_needs_a_proof_with_its_source(store: BridgeStore) -> None:
    cid = add_customer(store, 1, time.time())
    with pytest.raises(ConsentProofError, match="proof"):
        ledger.revoke(store, cid, "sms", at=time.time(), proof={"code": "x"})
    with pytest.raises(ConsentProofError, match="kind"):
        ledger.grant(
            store, cid, "email", confirmed_at=1.0, now=1.0, text_version=None,
            proof={"source": "t"},
        )  # fmt: skip
    assert statuses(store, cid, "sms") == ["active"]


def test_a_stop_without_consent_is_recorded_and_wins_over_older_evidence(
    store: BridgeStore,
) -> None:
    """An opt-out where nothing was granted is recorded (STOP, link, portal, provider alike),
    so evidence dated before it cannot grant afterwards; evidence dated after it can."""
    now = time.time()
    cid = add_customer(store, 1, now, consent=False)
    proof = {"source": "inbound_sms"}
    assert ledger.revoke(store, cid, "sms", at=now, proof=proof) is Outcome.RECORDED
    older = {"source": "paper form", "method": "crm import"}
    got = ledger.grant(
        store, cid, "sms", confirmed_at=now - 60, now=now + 1, text_version="v1", proof=older
    )
    assert got is Outcome.SUPERSEDED and statuses(store, cid, "sms") == ["revoked"]
    got = ledger.grant(
        store, cid, "sms", confirmed_at=now + 60, now=now + 61, text_version="v1", proof=older
    )
    assert got is Outcome.RECORDED and statuses(store, cid, "sms") == ["revoked", "active"]


def test_an_erased_customer_gets_no_consent_rows(store: BridgeStore) -> None:
    now = time.time()
    cid = add_customer(store, 1, now)
    store.erase_customer(cid, now)
    proof = {"source": "provider"}
    assert ledger.revoke(store, cid, "sms", at=now, proof=proof) is Outcome.ERASED
    got = ledger.grant(
        store, cid, "sms", confirmed_at=now + 1, now=now + 1, text_version="v", proof=proof
    )
    assert got is Outcome.ERASED and store.consents_of(cid) == []
    assert ledger.revoke(store, 999_999, "sms", at=now, proof=proof) is Outcome.ERASED


# -- one test per difference between the five old paths ---------------------------------------


class OptOutProvider:
    """Says every number has unsubscribed (Twilio 21610)."""

    name = "sandbox"
    account = "optout"
    can_reconcile = False

    def submit(self, msg: Outgoing) -> SendResult:
        return SendResult("failed", error="21610", code="21610", action="opt_out")

    def status(self, msg: Outgoing) -> StatusResult:
        return StatusResult("not_found")


def deliverer(store: BridgeStore) -> Deliverer:
    options = DeliveryOptions(reconcile_after_s=0.0, retry_base_s=0.0)
    return Deliverer(store, OptOutProvider(), options, bucket=TokenBucket(rate=10_000, burst=100))  # type: ignore[arg-type]


def test_provider_unsubscribed_twice_writes_one_revocation(store: BridgeStore) -> None:
    """Difference: the provider path wrote a revoked row on every refusal; now once."""
    now = time.time()
    cid = add_customer(store, 1, now)
    first = reserve(store, cid, now)
    d = deliverer(store)
    d.deliver(first)
    assert statuses(store, cid, "sms") == ["active", "revoked"]
    proof = store.consents_of(cid)[-1]["proof"]
    assert proof == {"source": "provider", "provider": "sandbox", "code": "21610"}
    # a second send that passed its consent check before the revocation is refused too
    d._act("opt_out", {"customer_id": cid}, "21610", now + 1)
    assert statuses(store, cid, "sms") == ["active", "revoked"]


def test_provider_unsubscribed_for_an_erased_customer_writes_nothing(store: BridgeStore) -> None:
    """Difference: the provider path wrote a consent row for a customer erased meanwhile."""
    now = time.time()
    cid = add_customer(store, 1, now)
    send_id = reserve(store, cid, now)
    job = {"customer_id": cid}
    store.erase_customer(cid, now)
    deliverer(store)._act("opt_out", job, "21610", now + 1)
    assert store.consents_of(cid) == []
    assert send_id


def test_portal_opt_out_records_a_revocation_for_every_kind(store: BridgeStore) -> None:
    """Difference: the portal form revoked only active consents; an opt-out of a kind never
    granted is now recorded too (as STOP always did), so older evidence cannot grant it."""
    now = time.time()
    cid = add_customer(store, 1, now, consent=False, phone="+79161234599")
    store.record_consent(cid, "sms", "active", now, "test", {"source": "test"})
    enrolments = Enrolments(store, EnrolSettings(), SandboxProvider(store), b"k" * 32)
    enrolments.opt_out("main-st", "+79161234599", now + 1, "203.0.113.7", "UA")
    assert store.latest_consents(cid) == {"sms": "revoked", "recognition": "revoked"}
    proof = store.consents_of(cid)[-1]["proof"]
    assert proof["source"] == "portal opt-out" and proof["ip"] == "203.0.113.7"
    enrolments.opt_out("main-st", "+79161234599", now + 2, "203.0.113.7", "UA")
    assert len(store.consents_of(cid)) == 3  # twice: no new rows


@pytest.fixture()
def bridge(tmp_path: Path, db_location: str | Path) -> Iterator[tuple[BridgeStore, BridgeKeys]]:
    store = BridgeStore(db_location)
    keys = BridgeKeys(tmp_path)
    seed(store, keys, load_tenant(TENANT), time.time())
    yield store, keys
    store.close()


def test_tenant_reseed_does_not_resurrect_a_stop(bridge: tuple[BridgeStore, BridgeKeys]) -> None:
    """Difference: re-seeding a tenant file granted again over a STOP (the file has no
    confirmation time); now a STOP stands, and re-seeding writes nothing new."""
    store, keys = bridge
    anna = store.customer_row("C-1001")
    assert anna is not None and store.latest_consents(anna["id"])["sms"] == "active"
    rows = len(store.consents_of(anna["id"]))
    seed(store, keys, load_tenant(TENANT), time.time())
    assert len(store.consents_of(anna["id"])) == rows
    ledger.revoke(store, anna["id"], "sms", at=time.time(), proof={"source": "inbound_sms"})
    seed(store, keys, load_tenant(TENANT), time.time() + 1)
    assert store.latest_consents(anna["id"])["sms"] == "revoked"
    assert store.latest_consents(anna["id"])["recognition"] == "active"


CRM_HEADER = (
    "crm_id,name,phone,consent_sms,consent_recognition,consent_text_version,consent_time,"
    "consent_source\n"
)


def test_crm_evidence_newer_than_an_active_consent_keeps_its_proof(
    bridge: tuple[BridgeStore, BridgeKeys], tmp_path: Path
) -> None:
    """Difference: a CRM import skipped evidence for a consent already active; a newer
    confirmation is now recorded with its proof (the same evidence again still writes nothing)."""
    store, keys = bridge
    path = tmp_path / "crm.csv"
    first = "C-3001,Lena,+79161239901,yes,,paper-v3,2025-01-10T12:00:00Z,paper form 1\n"
    path.write_text(CRM_HEADER + first, encoding="utf-8")
    assert import_customers(store, keys.subject_key, path, time.time()).consents_recorded == 1
    assert import_customers(store, keys.subject_key, path, time.time()).consents_recorded == 0
    newer = first.replace("paper-v3,2025-01-10", "paper-v4,2025-06-10").replace("1\n", "2\n")
    path.write_text(CRM_HEADER + newer, encoding="utf-8")
    assert import_customers(store, keys.subject_key, path, time.time()).consents_recorded == 1
    lena = store.customer_row("C-3001")
    assert lena is not None
    rows = store.consents_of(lena["id"])
    assert [(r["status"], r["text_version"]) for r in rows] == [
        ("active", "paper-v3"),
        ("active", "paper-v4"),
    ]
    assert rows[-1]["proof"]["source"] == "paper form 2"
