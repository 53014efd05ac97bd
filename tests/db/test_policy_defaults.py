"""The offer policy's defaults live once (cloud_bridge/offers/policy.py): no other module spells
them again, the schema's historical defaults agree with them, and the advisory check (the
history ``decide`` reads) and the binding one (``reserve_offer``) count the same send states."""

from __future__ import annotations

import ast
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud_bridge.delivery.outbox import FROM
from cloud_bridge.offers import policy
from cloud_bridge.offers.decide import Campaign, History, StoreInfo
from cloud_bridge.storage.store import BridgeStore

BRIDGE = Path(__file__).parents[2] / "cloud_bridge"
POLICY = BRIDGE / "offers" / "policy.py"

# A slot (class field, argument default, keyword, dict key) of this name holding this literal
# repeats a policy default.
SLOTS: dict[str, set[object]] = {
    "cap_count": {policy.CAP_COUNT},
    "count": {policy.CAP_COUNT},
    "cap_days": {policy.CAP_DAYS},
    "days": {policy.CAP_DAYS},
    "overall_cap": {policy.OVERALL_CAP},
    "overall_days": {policy.OVERALL_DAYS},
    "send_start": {policy.SEND_START},
    "send_end": {policy.SEND_END},
    "sending_hours": {policy.SEND_START, policy.SEND_END},
}
GENERIC = {"count", "days"}
HOURS = {
    policy.SEND_START,
    policy.SEND_END,
    *(h for span in policy.COUNTRY_HOURS.values() for h in span),
}


def _literals(node: ast.AST) -> Iterator[object]:
    """The literal values a default expression would give (not a Field's bounds)."""
    if isinstance(node, ast.Constant):
        yield node.value
    elif isinstance(node, ast.Tuple | ast.List):
        for e in node.elts:
            yield from _literals(e)
    elif isinstance(node, ast.BoolOp):  # form_value or 30
        for v in node.values:
            yield from _literals(v)
    elif isinstance(node, ast.Call):  # Field(30, ge=1): the default, positional or default=
        if node.args:
            yield from _literals(node.args[0])
        for kw in node.keywords:
            if kw.arg == "default":
                yield from _literals(kw.value)


def _slots(tree: ast.AST) -> Iterator[tuple[str, ast.AST, int]]:
    """(name, value, line) of every named slot that can carry a default (the generic names
    ``count`` and ``days`` only as class fields and dict keys, as the caps models spell them)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value:
            yield node.target.id, node.value, node.lineno
        elif isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Name) and t.id not in GENERIC:
                    yield t.id, node.value, node.lineno
        elif isinstance(node, ast.keyword) and node.arg and node.arg not in GENERIC:
            yield node.arg, node.value, node.value.lineno
        elif isinstance(node, ast.Dict):
            for k, v in zip(node.keys, node.values, strict=True):
                if isinstance(k, ast.Constant) and isinstance(k.value, str):
                    yield k.value, v, v.lineno
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            a = node.args
            positional = [*a.posonlyargs, *a.args]
            for arg, default in zip(
                positional[len(positional) - len(a.defaults) :], a.defaults, strict=True
            ):
                if arg.arg not in GENERIC:
                    yield arg.arg, default, default.lineno
            for arg, kw_default in zip(a.kwonlyargs, a.kw_defaults, strict=True):
                if kw_default is not None and arg.arg not in GENERIC:
                    yield arg.arg, kw_default, kw_default.lineno


def repeated_defaults(root: Path) -> list[str]:
    """Where a module under ``root`` other than offers/policy.py spells a policy default."""
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel == Path("offers/policy.py"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for name, value, line in _slots(tree):
            if name == "CAPPED_STATES":
                found.append(f"{rel}:{line}: CAPPED_STATES defined")
            if name in SLOTS:
                same = [v for v in _literals(value) if v in SLOTS[name] and type(v) is not bool]
                if same:
                    found.append(f"{rel}:{line}: {name} = {same!r}")
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and node.value in HOURS
            ):
                found.append(f"{rel}:{node.lineno}: sending hour {node.value!r}")
    return sorted(set(found))


def test_policy_defaults_are_spelled_only_in_the_policy_module() -> None:
    assert repeated_defaults(BRIDGE) == []


def test_the_scan_finds_each_kind_of_repeated_default(tmp_path: Path) -> None:
    """The scan is not blind: each way the defaults were once repeated is reported."""
    (tmp_path / "offers").mkdir()
    (tmp_path / "offers" / "policy.py").write_text('SEND_START = "09:00"\n')  # exempt
    (tmp_path / "m.py").write_text(
        "from pydantic import Field\n"
        "class C:\n"
        "    cap_days: int = 30\n"
        "    sending_hours: tuple[str, str] = Field(('09:00', '21:00'), description='x')\n"
        "class D:\n"
        "    days: int = Field(30, ge=1, le=366)\n"
        "    count: int = Field(1, ge=1)\n"
        "    overall_days: int = Field(30, ge=1)\n"
        "caps = {'count': form or 1, 'days': form or 30}\n"
        "CAPPED_STATES = ('reserved',)\n"
        "def f(cap_count: int = 1, *, send_end: str = '21:00') -> None: ...\n"
        "US = ('08:00', '21:00')\n"
        "fine = {'days': 7, 'count': 0, 'cap_days': cap_days}\n"
    )
    found = repeated_defaults(tmp_path)
    assert [f.split(":")[1] for f in found if "sending hour" not in f] == [
        "10", "11", "11", "3", "4", "6", "7", "8", "9", "9",
    ]  # fmt: skip
    assert {f.split(":")[1] for f in found if "sending hour" in f} == {"4", "11", "12"}
    assert not any(f.startswith("offers") for f in found)


def test_the_models_take_their_defaults_from_the_policy() -> None:
    from cloud_bridge.config import PolicySettings
    from cloud_bridge.offers.campaigns import CapsDef
    from cloud_bridge.offers.decide import Policy
    from cloud_bridge.tenant import CampaignDef as TenantCampaign
    from cloud_bridge.tenant import StoreDef

    caps = CapsDef()
    assert (caps.count, caps.days) == (policy.CAP_COUNT, policy.CAP_DAYS)
    c = Campaign("x", "x", "arrive", "hi")
    assert (c.cap_count, c.cap_days) == (policy.CAP_COUNT, policy.CAP_DAYS)
    t = TenantCampaign(id="x", name="x", trigger="arrive", template="hi")
    assert (t.cap_count, t.cap_days) == (policy.CAP_COUNT, policy.CAP_DAYS)
    s = StoreInfo("s", "S", "UTC", "RU", "Shop")
    assert (s.send_start, s.send_end) == (policy.SEND_START, policy.SEND_END)
    sd = StoreDef(id="s", name="S", timezone="UTC", country="RU", sender_name="Shop")
    assert sd.sending_hours == (policy.SEND_START, policy.SEND_END)
    p, ps = Policy(), PolicySettings()
    assert (p.overall_cap, p.overall_days) == (ps.overall_cap, ps.overall_days)
    assert (p.overall_cap, p.overall_days) == (policy.OVERALL_CAP, policy.OVERALL_DAYS)


@pytest.fixture()
def store(db_location: str | Path) -> Iterator[BridgeStore]:
    s = BridgeStore(db_location)
    yield s
    s.close()


def test_schema_defaults_agree_with_the_policy(store: BridgeStore) -> None:
    """Released migrations keep their SQL defaults; a row written without the fields gets the
    policy's values (on both engines)."""
    store.upsert_store(
        {"id": "s", "name": "S", "timezone": "UTC", "country": "RU", "sender_name": "Shop",
         "site_key": "00" * 16}
    )  # fmt: skip
    store.upsert_campaign({"id": "c", "name": "C", "trigger": "arrive", "template": "hi"})
    info = store.store_info("s")
    assert info is not None
    assert (info.send_start, info.send_end) == (policy.SEND_START, policy.SEND_END)
    [campaign] = store.campaigns()
    assert (campaign.cap_count, campaign.cap_days) == (policy.CAP_COUNT, policy.CAP_DAYS)


def test_advisory_and_binding_checks_count_the_same_send_states(store: BridgeStore) -> None:
    """For every state a send can be in: the history decide reads lists it exactly when the
    reservation counts it against the cap, and those states are policy.CAPPED_STATES."""
    now = time.time()
    store.upsert_store(
        {"id": "s", "name": "S", "timezone": "UTC", "country": "RU", "sender_name": "Shop",
         "site_key": "00" * 16}
    )  # fmt: skip
    states = sorted({*FROM, *(s for froms in FROM.values() for s in froms)})
    assert set(policy.CAPPED_STATES) < set(states)
    advisory, binding = set(), set()
    for i, state in enumerate(states):
        cid = store.upsert_customer(f"C-{i}", f"subj-{i}", f"N{i}", f"+7916{i:07d}", None, now)
        for kind in ("sms", "recognition"):
            store.record_consent(cid, kind, "active", now - 10, "t", {"source": "test"})

        def reserve(event: str, at: float, cid: int = cid) -> tuple[int | None, str]:
            return store.reserve_offer(
                event, cid, "c", "A", "s", at, cap_count=1, cap_days=30, overall_cap=99,
                overall_days=30, sender="Shop", body="hi", provider="sandbox",
            )  # fmt: skip

        send_id, why = reserve(f"e{i}a", now - 5)
        assert send_id is not None, why
        store.update_send(send_id, state)
        sends, _ = store.engine_history(cid, now - 86400)
        history = History(sends=sends)
        if any(c == "c" for c, _ in history.sends):
            advisory.add(state)
        if reserve(f"e{i}b", now)[1] == "campaign_cap":
            binding.add(state)
    assert advisory == binding == set(policy.CAPPED_STATES)
