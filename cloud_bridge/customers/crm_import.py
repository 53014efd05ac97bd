"""CRM import: customers, segment fields, consent evidence taken elsewhere, and device MACs.

Input is CSV (header row; ``,`` or ``;`` delimited; UTF-8, BOM allowed) or JSON (a list of
objects, or ``{"customers": [...]}``) with the fields in ``FIELDS``. Every row is validated on
its own; the report names the row (CSV: line number in the file; JSON: position, from 1), the
field and the problem. Good rows are applied in ONE transaction; bad rows are skipped.
Re-importing the same file changes nothing: customers compare equal, known devices are left
alone, and a consent is recorded only when it changes the customer's current status.

Consent evidence (``consent_sms`` / ``consent_recognition`` true) needs ``consent_text_version``,
``consent_time`` (ISO 8601; no offset means UTC) and ``consent_source``. It never overrides a
later record in the ledger (an opt-out after the evidence wins). ``false`` revokes an active
consent unless that consent is newer than the row's ``consent_time``; empty leaves it alone.
Customers erased on request are suppressed: their rows are reported and skipped.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal

from cloud_bridge.csv_input import (
    TWICE,
    ImportFileError,
    check_header,
    decode_text,
    load_json,
    sniff_delimiter,
)
from cloud_bridge.customers import consent as ledger
from cloud_bridge.customers.consent import Outcome
from cloud_bridge.customers.erasure import suppressed
from cloud_bridge.customers.phones import PhoneError, normalise_phone
from cloud_bridge.storage.store import BridgeStore
from cloud_bridge.storage.stores import store_country_rows
from edge_agent.roster import parse_mac, subject_id

__all__ = [
    "FIELDS",
    "ImportFileError",
    "Problem",
    "ImportReport",
    "read_rows",
    "import_customers",
]

FIELDS = (
    "crm_id",
    "name",
    "phone",
    "first_purchase",
    "visits",
    "loyalty_tier",
    "favourite_product",
    "consent_sms",
    "consent_recognition",
    "consent_text_version",
    "consent_time",
    "consent_source",
    "macs",
)
REQUIRED = ("crm_id", "name", "phone")
# Customer fields a file may leave out: a column (or JSON key) that is not there keeps what the
# customer has; one that is there but empty clears it.
KEPT_WHEN_ABSENT = ("first_purchase", "visits", "loyalty_tier", "favourite_product")
_TRUE = {"1", "true", "yes", "y", "да", "այո"}
_FALSE = {"0", "false", "no", "n", "нет", "ոչ"}
CLOCK_SKEW_S = 300.0


@dataclass(frozen=True, slots=True)
class Problem:
    row: int
    field: str
    problem: str
    severity: Literal["error", "warning"] = "error"
    crm_id: str | None = None


@dataclass
class ImportReport:
    file: str
    sha256: str
    rows: int = 0
    applied: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    devices_added: int = 0
    consents_recorded: int = 0
    skipped: int = 0
    suppressed: int = 0
    dry_run: bool = False
    problems: list[Problem] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["problems"] = [asdict(p) for p in self.problems]
        return out


@dataclass(frozen=True, slots=True)
class _Row:
    row: int
    crm_id: str
    name: str
    phone: str
    first_purchase: str | None
    visits: int | None
    loyalty_tier: str | None
    favourite_product: str | None
    given: frozenset[str]  # which of KEPT_WHEN_ABSENT the row has
    consent: dict[str, bool | None]
    text_version: str | None
    consent_time: float | None
    consent_source: str | None
    macs: tuple[bytes, ...]


# -- reading ----------------------------------------------------------------------------------


def read_rows(
    path: Path, fmt: str | None = None
) -> tuple[list[tuple[int, dict[str, Any]]], list[Problem], str]:
    """(row number, raw fields) of every record, header problems, and the file's SHA-256."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImportFileError(f"{path}: {exc.strerror}") from None
    fmt = fmt or ("json" if path.suffix.lower() == ".json" else "csv")
    text = decode_text(data, path, csv_file=fmt == "csv")
    sha = hashlib.sha256(data).hexdigest()
    if fmt == "json":
        rows, problems = _read_json(path, text)
    elif fmt == "csv":
        rows, problems = _read_csv(path, text)
    else:
        raise ImportFileError(f"unknown format {fmt!r} (csv or json)")
    return rows, problems, sha


def _read_csv(path: Path, text: str) -> tuple[list[tuple[int, dict[str, Any]]], list[Problem]]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sniff_delimiter(text))
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise ImportFileError(f"{path}: empty file") from None
    except csv.Error as exc:
        raise ImportFileError(f"{path}: line 1: {exc}") from None
    check_header(header, path, FIELDS)
    missing = [f for f in REQUIRED if f not in header]
    if missing:
        raise ImportFileError(f"{path}: the header lacks required column(s) {', '.join(missing)}")
    problems = [
        Problem(1, h or f"column {i + 1}", "unknown column (ignored)", "warning")
        for i, h in enumerate(header)
        if h not in FIELDS
    ]
    rows: list[tuple[int, dict[str, Any]]] = []
    try:
        for values in reader:
            if not any(v.strip() for v in values):
                continue
            line = reader.line_num
            if len(values) > len(header):
                problems.append(
                    Problem(line, "-", f"{len(values)} values for {len(header)} columns")
                )
                continue
            raw = {h: v for h, v in zip(header, values, strict=False) if h in FIELDS}
            rows.append((line, raw))
    except csv.Error as exc:
        raise ImportFileError(f"{path}: line {reader.line_num}: {exc}") from None
    return rows, problems


def _read_json(path: Path, text: str) -> tuple[list[tuple[int, dict[str, Any]]], list[Problem]]:
    doc = load_json(text, path)
    if isinstance(doc, dict) and isinstance(doc.get("customers"), list):
        doc = doc["customers"]
    if not isinstance(doc, list):
        raise ImportFileError(f'{path}: expected a list of customers or {{"customers": [...]}}')
    rows: list[tuple[int, dict[str, Any]]] = []
    problems: list[Problem] = []
    for i, item in enumerate(doc, start=1):
        if not isinstance(item, dict):
            problems.append(Problem(i, "-", "not an object"))
            continue
        unknown = sorted(k for k in item if k not in FIELDS)
        for k in unknown:
            problems.append(Problem(i, str(k), "unknown field (ignored)", "warning"))
        twice = [k for k in getattr(item, "twice", ()) if k in FIELDS]
        for k in twice:
            problems.append(Problem(i, k, TWICE, "error", _text(item, "crm_id")))
        if not twice:
            rows.append((i, {k: v for k, v in item.items() if k in FIELDS}))
    return rows, problems


# -- validation ---------------------------------------------------------------------------------


def _text(raw: dict[str, Any], name: str) -> str | None:
    value = raw.get(name)
    if value is None:
        return None
    value = " ".join(str(value).split())
    return value or None


def _bool(value: Any) -> bool | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("must be true or false (yes/no, 1/0)")


def _when(value: str) -> float:
    text = value.strip()
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError("must be an ISO 8601 time, e.g. 2026-03-01T14:30:00Z") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _macs(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v).strip() for v in value if str(v).strip()]
    return [p for p in re.split(r"[;,\s]+", str(value)) if p]


def validate_row(
    row: int, raw: dict[str, Any], region: str | None, now: float
) -> tuple[_Row | None, list[Problem]]:
    """One record on its own: (a clean row, or None) and its problems."""
    problems: list[Problem] = []
    crm_id = _text(raw, "crm_id")

    def bad(field_: str, problem: str) -> None:
        problems.append(Problem(row, field_, problem, "error", crm_id))

    if crm_id is None:
        bad("crm_id", "required")
    elif len(crm_id) > 64 or " " in crm_id or crm_id.startswith("erased:"):
        bad("crm_id", "must be 1-64 characters without spaces")
    name = _text(raw, "name")
    if name is None:
        bad("name", "required")
    elif len(name) > 80 or any(ord(c) < 32 for c in name):
        bad("name", "longer than 80 characters or has control characters")
    phone = ""
    raw_phone = _text(raw, "phone")
    if raw_phone is None:
        bad("phone", "required")
    else:
        try:
            phone = normalise_phone(raw_phone, region)
        except PhoneError as exc:
            bad("phone", f"phone number {exc}")
    first_purchase = _text(raw, "first_purchase")
    if first_purchase is not None:
        try:
            if date.fromisoformat(first_purchase) > datetime.fromtimestamp(now, UTC).date():
                bad("first_purchase", "is in the future")
        except ValueError:
            bad("first_purchase", "must be a date YYYY-MM-DD")
    visits: int | None = None
    raw_visits = raw.get("visits")
    if raw_visits not in (None, ""):
        try:
            if isinstance(raw_visits, bool) or (
                isinstance(raw_visits, float) and not raw_visits.is_integer()
            ):
                raise ValueError
            visits = int(str(raw_visits).strip())
            if visits < 0:
                raise ValueError
        except ValueError:
            bad("visits", "must be a whole number >= 0")
    loyalty_tier = _text(raw, "loyalty_tier")
    if loyalty_tier is not None and len(loyalty_tier) > 32:
        bad("loyalty_tier", "longer than 32 characters")
    favourite = _text(raw, "favourite_product")
    if favourite is not None and len(favourite) > 80:
        bad("favourite_product", "longer than 80 characters")

    consent: dict[str, bool | None] = {}
    for kind in ("sms", "recognition"):
        try:
            consent[kind] = _bool(raw.get(f"consent_{kind}"))
        except ValueError as exc:
            bad(f"consent_{kind}", str(exc))
            consent[kind] = None
    text_version = _text(raw, "consent_text_version")
    source = _text(raw, "consent_source")
    consent_time: float | None = None
    raw_time = _text(raw, "consent_time")
    if raw_time is not None:
        try:
            consent_time = _when(raw_time)
            if consent_time > now + CLOCK_SKEW_S:
                bad("consent_time", "is in the future")
        except ValueError as exc:
            bad("consent_time", str(exc))
    if any(consent.values()):
        for name_, value in (
            ("consent_text_version", text_version),
            ("consent_time", raw_time),
            ("consent_source", source),
        ):
            if value is None:
                bad(name_, "required as evidence when a consent is true")
    if text_version is not None and len(text_version) > 32:
        bad("consent_text_version", "longer than 32 characters")
    if source is not None and len(source) > 64:
        bad("consent_source", "longer than 64 characters")

    macs: list[bytes] = []
    for i, text in enumerate(_macs(raw.get("macs"))):
        try:
            mac = parse_mac(text)
        except ValueError:
            bad("macs", f"item {i + 1} is not a MAC address")
            continue
        if mac[0] & 1 or mac == b"\0" * 6:
            bad("macs", f"item {i + 1} is a group or null address, not a phone's")
        elif mac not in macs:
            macs.append(mac)

    if problems or crm_id is None or name is None:
        return None, problems
    return (
        _Row(
            row,
            crm_id,
            name,
            phone,
            first_purchase,
            visits,
            loyalty_tier,
            favourite,
            frozenset(f for f in KEPT_WHEN_ABSENT if f in raw),
            consent,
            text_version,
            consent_time,
            source,
            tuple(macs),
        ),
        problems,
    )


# -- import -------------------------------------------------------------------------------------


def _region(store: BridgeStore, store_id: str | None) -> tuple[str | None, str | None]:
    """(phone region, store id for devices): the named store, or the only one configured."""
    if store_id is not None:
        info = store.store_info(store_id)
        if info is None:
            raise ImportFileError(f"store {store_id!r} is not configured")
        return info.country, store_id
    rows = store_country_rows(store)
    if len(rows) == 1:
        return rows[0]["country"], rows[0]["id"]
    return None, None


def import_customers(
    store: BridgeStore,
    subject_key: bytes,
    path: Path,
    now: float,
    fmt: str | None = None,
    store_id: str | None = None,
    device_ttl_days: float = 90.0,
    dry_run: bool = False,
) -> ImportReport:
    """Validate every row, then apply the good ones in one transaction (unless ``dry_run``)."""
    raw_rows, problems, sha = read_rows(path, fmt)
    region, device_store = _region(store, store_id)
    report = ImportReport(str(path), sha, rows=len(raw_rows), dry_run=dry_run)
    report.problems.extend(problems)
    good: list[_Row] = []
    seen_crm: dict[str, int] = {}
    seen_mac: dict[bytes, str] = {}
    bad_rows = {p.row for p in problems if p.severity == "error"}
    for number, raw in raw_rows:
        row, row_problems = validate_row(number, raw, region, now)
        report.problems.extend(row_problems)
        if row is None:
            bad_rows.add(number)
            continue
        errors = _cross_checks(store, row, seen_crm, seen_mac)
        if errors:
            report.problems.extend(errors)
            if any(p.problem.startswith("suppressed") for p in errors):
                report.suppressed += 1
            bad_rows.add(number)
            continue
        seen_crm[row.crm_id] = number
        for mac in row.macs:
            seen_mac[mac] = row.crm_id
        good.append(row)
    shared = _shared_phones(store, good)
    report.problems.extend(shared)
    refused = {p.row for p in shared if p.severity == "error"}
    good = [row for row in good if row.row not in refused]
    bad_rows |= refused
    report.skipped = len(bad_rows)
    if dry_run and any(row.macs for row in good):
        _ = store.cipher  # its first use records the data key id: not in a rolled-back transaction
    # A dry run does the real work in a transaction that is rolled back, so its counts are
    # exactly what the real run will report.
    with store.rolled_back() if dry_run else store.transaction():
        for row in good:
            _apply(store, subject_key, row, now, device_ttl_days, device_store, sha, report)
    report.applied = len(good)
    report.problems.sort(key=lambda p: (p.row, p.field))  # consent warnings came in late
    return report


def _cross_checks(
    store: BridgeStore, row: _Row, seen_crm: dict[str, int], seen_mac: dict[bytes, str]
) -> list[Problem]:
    out: list[Problem] = []

    def bad(field_: str, problem: str) -> None:
        out.append(Problem(row.row, field_, problem, "error", row.crm_id))

    if row.crm_id in seen_crm:
        bad("crm_id", f"duplicate of row {seen_crm[row.crm_id]} in this file")
    if suppressed(store, row.phone, row.crm_id):
        bad(
            "crm_id",
            "suppressed: this customer was erased on request; only a new enrolment "
            "confirmed by SMS code can bring them back",
        )
        return out
    existing = store.customer_row(row.crm_id)
    for i, mac in enumerate(row.macs):
        other = seen_mac.get(mac)
        if other is not None and other != row.crm_id:
            bad("macs", f"item {i + 1} is also given for customer {other} in this file")
            continue
        owners = store.device_owners(mac)
        if owners and (existing is None or any(o != existing["id"] for o in owners)):
            bad("macs", f"item {i + 1} is enrolled by another customer")
    return out


def _shared_phones(store: BridgeStore, rows: list[_Row]) -> list[Problem]:
    """Rows whose phone would belong to another customer too once the import is applied:
    an error on each such row, naming the other customers (never the phone). A phone is one
    customer: consent is proven by a code sent to it, a STOP from it revokes every customer
    that has it and a START restores them all, and offers to it carry one customer's name.

    Who has a phone afterwards: the rows of this file that give it, and the customers that have
    it now and keep it (no good row of theirs in this file). A customer first enrolled at the
    portal (``web-…``) with the phone of a new CRM id becomes that CRM id (``_apply``): not
    another customer. A row whose customer already shares its phone with customers that
    already have it too is applied with a warning (the sharing is older than this import).
    Refusing a row can keep its customer on their old phone, so this runs until nothing more
    is refused."""
    # phone -> CRM ids of the live customers with it now; crm_id -> its phone now
    holders, phones_now = store.phone_holders((r.phone for r in rows), (r.crm_id for r in rows))
    current: dict[str, str | None] = {r.crm_id: phones_now.get(r.crm_id) for r in rows}

    def now_holding(phone: str) -> list[str]:
        return holders.get(phone, [])

    refused: dict[int, Problem] = {}
    warned: dict[int, Problem] = {}
    while True:
        live = [r for r in rows if r.row not in refused]
        by_id = {r.crm_id: r for r in live}
        claims: dict[str, dict[str, _Row | None]] = {}
        for r in live:
            claims.setdefault(r.phone, {})[r.crm_id] = r
        for phone, claimants in claims.items():
            portal = [c for c in now_holding(phone) if c.startswith("web-")]
            adopted = portal[0] if portal and any(current[c] is None for c in claimants) else None
            for cid in now_holding(phone):
                if cid not in by_id and cid != adopted:
                    claimants.setdefault(cid, None)  # keeps the phone it has now
        more = False
        warned.clear()
        for r in live:
            others = [cid for cid in claims[r.phone] if cid != r.crm_id]
            if not others:
                continue
            names = " and ".join(
                f"customer {cid}" + (f" (row {o.row} of this file)" if o is not None else "")
                for cid in others
                for o in (claims[r.phone][cid],)
            )
            older = current[r.crm_id] == r.phone and all(
                claims[r.phone][cid] is None or current.get(cid) == r.phone for cid in others
            )
            if older:
                warned[r.row] = Problem(
                    r.row,
                    "phone",
                    f"the phone is shared with {names} already (before this import): merge "
                    "the records in the CRM; a STOP from it stops them all",
                    "warning",
                    r.crm_id,
                )
                continue
            refused[r.row] = Problem(
                r.row,
                "phone",
                f"the phone would also belong to {names}: one phone is one customer (its "
                "consent code, its STOP, its offers); merge the records in the CRM or give "
                "this row its own phone",
                "error",
                r.crm_id,
            )
            more = True
        if not more:
            return [*refused.values(), *warned.values()]


def _apply(
    store: BridgeStore,
    subject_key: bytes,
    row: _Row,
    now: float,
    ttl_days: float,
    device_store: str | None,
    sha: str,
    report: ImportReport,
) -> None:
    existing = store.customer_row(row.crm_id)
    if existing is None:
        # Enrolled at the portal first (no CRM id yet), now in the CRM: adopt the CRM id.
        portal = [c for c in store.customers_by_phone(row.phone) if c["crm_id"].startswith("web-")]
        if portal:
            store.set_crm_id(portal[0]["id"], row.crm_id)
            existing = store.customer_row(row.crm_id)
    given = {
        "first_purchase": row.first_purchase,
        "visits": row.visits,
        "loyalty_tier": row.loyalty_tier,
        "favourite_product": row.favourite_product,
    }
    if existing is not None:  # a field the file leaves out keeps the customer's value
        given = {k: v if k in row.given else existing.get(k) for k, v in given.items()}
    kept = given.pop("favourite_product")
    favourite = None if kept is None else str(kept)  # a text column: a str or nothing
    segments = given
    wanted = {"name": row.name, "phone": row.phone, "favourite_product": favourite, **segments}
    if existing is None:
        report.created += 1
        subject = subject_id(subject_key, row.crm_id)
    elif all(existing.get(k) == v for k, v in wanted.items()):
        report.unchanged += 1
        subject = existing["subject"]
    else:
        report.updated += 1
        subject = existing["subject"]
    customer_id = store.upsert_customer(
        row.crm_id,
        subject,
        row.name,
        row.phone,
        favourite,
        now,
        segments=segments,
        source="crm" if existing is None else None,
    )
    expires = now + ttl_days * 86400
    for mac in row.macs:
        if store.add_device(
            customer_id, mac, now, expires, source="crm", store_id=device_store, refresh=False
        ):
            report.devices_added += 1
    _consents(store, customer_id, row, now, sha, report)


def _consents(
    store: BridgeStore, customer_id: int, row: _Row, now: float, sha: str, report: ImportReport
) -> None:
    history = store.consents_of(customer_id)
    for kind, value in row.consent.items():
        if value is None:
            continue
        mine = [c for c in history if c["kind"] == kind]
        latest = mine[-1] if mine else None
        status = latest["status"] if latest else None
        evidence_ts = row.consent_time
        if value:
            proof = {
                "method": "crm import",
                "source": row.consent_source,
                "consented_at": _iso(evidence_ts),
                "text_version": row.text_version,
                "imported_at": _iso(now),
                "import_sha256": sha,
                "import_row": row.row,
            }
            done = ledger.grant(
                store, customer_id, kind, confirmed_at=evidence_ts, now=now,
                text_version=row.text_version, proof=proof,
            )  # fmt: skip
            if done is Outcome.SUPERSEDED:
                report.problems.append(
                    Problem(
                        row.row,
                        f"consent_{kind}",
                        "evidence predates a later record (e.g. an opt-out); not applied",
                        "warning",
                        row.crm_id,
                    )
                )
            report.consents_recorded += done is Outcome.RECORDED
        elif value is False and status == "active":
            # A CRM's "no" revokes an active consent; where there is none it is no evidence of
            # anything (an active consent confirmed after the opt-out's time stands: the ledger)
            proof = {
                "method": "crm import",
                "source": row.consent_source or "crm",
                "revoked_at": _iso(evidence_ts or now),
                "imported_at": _iso(now),
                "import_sha256": sha,
                "import_row": row.row,
            }
            done = ledger.revoke(store, customer_id, kind, at=evidence_ts or now, proof=proof)
            report.consents_recorded += done is Outcome.RECORDED


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
