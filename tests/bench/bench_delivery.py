"""Delivery: sends/s through a local Twilio-shaped server with a 50 msg/s bucket and faults
injected, and the whole chain's latency from a frame entering the agent to the provider
receiving the HTTP request, over >= 1 000 arrivals through Mosquitto on loopback.

Throughput: ``SENDS`` reserved offers go through the real Deliverer (16 senders, one shared
50 msg/s token bucket) to ``FakeTwilio`` on 127.0.0.1, which answers 429/500/503, slow
(read timeout: reconciled through its status API), drops connections before and after taking
the message. ``bucket_utilisation`` is the share of the bucket's tokens used while offers were
waiting for one: provider requests started per second while the queue was not empty, over
the bucket's rate (the limiter, not the sender pool, must be the bottleneck); ``duplicates`` counts
messages the server took twice for one intent (must be 0).

Chain: the agent's per-frame pipeline (parse, roster lookup, presence) -> SQLite outbox ->
paho QoS 1 -> Mosquitto -> bridge ingest (SQLite) -> decision worker (decide, atomic cap
reservation) -> Deliverer (final text, key, token) -> HTTP POST received by the server. One
strong probe request per enrolled phone (a single reading arrives at once), ``ARRIVAL_RATE``
arrivals a second, each a different customer; latency = server arrival time - time the frame
was fed, same clock (one process). ``optout_p99_ms``: a signed STOP webhook until the consent
is revoked, through the ASGI app in process.

Loaded: the service's decision worker (its own connection, as ``cloud-bridge run``) and
deliverer with a 10 msg/s bucket (the default ``provider.rate_per_s``) and a 400-send queue (a
40 s wait at that rate: longer than the orphan sweep's 30 s patience) take ``LOAD_ARRIVALS``
arrivals at ``LOAD_ARRIVAL_RATE``/s, three times what the provider takes, through the local
Twilio-shaped server. ``loaded_adopted_share`` is the share of reserved sends the sweep took
over (a live bridge must send them itself: goal 0); ``loaded_decision_to_provider_p99_ms`` is
the decision's commit to the provider's acceptance (under overload the queue's wait, at most
queue / rate); sends that could not wait are shed at once and their decisions read ``shed``.
Decisions and the deliverer run on a clock pinned to 12:00 in the store's time zone, so the
case measures the same path at any hour (the chain's store sends around the clock, so it does
too).
"""

from __future__ import annotations

import logging
import os
import secrets
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from delivery_helpers import BRAND, STORE_ID, add_customer, new_store, seed_intents, states
from fake_providers import TWILIO_SID, TWILIO_TOKEN, FakeTwilio, FaultPlan

from cloud_bridge.config import ProviderSettings
from cloud_bridge.delivery.outbox import Deliverer, DeliveryOptions
from cloud_bridge.delivery.providers import make_provider
from cloud_bridge.delivery.ratelimit import TokenBucket

SENDS = int(os.environ.get("PASSBY_BENCH_SENDS", 1500))
ARRIVALS = int(os.environ.get("PASSBY_BENCH_ARRIVALS", 1000))
ARRIVAL_RATE = float(os.environ.get("PASSBY_BENCH_ARRIVAL_RATE", 40))
RATE = 50.0
LOAD_RATE = 10.0
LOAD_QUEUE = 400
LOAD_SENDERS = 8
LOAD_ARRIVALS = int(os.environ.get("PASSBY_BENCH_LOAD_ARRIVALS", 750))
LOAD_ARRIVAL_RATE = 3 * LOAD_RATE
FAULTS = {
    "429": 0.03,
    "500": 0.02,
    "503": 0.02,
    "slow_ok": 0.01,
    "slow_drop": 0.005,
    "drop": 0.01,
    "drop_after": 0.01,
}
CALLBACK = "http://127.0.0.1:9/sms/twilio/status"  # carries our key to the server; never called


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def twilio_settings(fake: FakeTwilio, read_timeout: float = 0.5) -> ProviderSettings:
    return ProviderSettings(
        kind="twilio",
        rate_per_s=RATE,
        read_timeout_s=read_timeout,
        connect_timeout_s=1.0,
        # The local server lists a message the moment it takes it: absence is believed at 1 s.
        twilio={
            "account_sid": TWILIO_SID,
            "auth_token": TWILIO_TOKEN,
            "base_url": fake.url,
            "absent_after_s": 1.0,
        },
    )


# -- throughput under faults ----------------------------------------------------------------------


def throughput(tmp: Path) -> dict[str, Any]:
    fake = FakeTwilio(FaultPlan(weights=FAULTS, seed=11), slow_s=1.0, retry_after="1").start()
    store = new_store(tmp / "throughput.db")
    bucket = TokenBucket(RATE, burst=1)
    provider = make_provider(twilio_settings(fake), store)
    d = Deliverer(
        store,
        provider,
        DeliveryOptions(
            senders=16,
            queue_size=SENDS * 2,
            max_attempts=20,
            retry_base_s=0.2,
            retry_max_s=2.0,
            reconcile_after_s=1.0,
            lease_s=10.0,
            status_callback_url=CALLBACK,
        ),
        bucket=bucket,
    )
    ids = seed_intents(store, SENDS, time.time(), provider="twilio")
    samples: list[tuple[float, int, int]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            samples.append((time.monotonic(), d.counters.attempts, d.queue_depth()))

    sampler = threading.Thread(target=sample, daemon=True)
    d.start()
    sampler.start()
    t0 = time.monotonic()
    for sid in ids:
        d.deliver(sid)
    deadline = t0 + SENDS / RATE * 3 + 60
    while time.monotonic() < deadline:
        s = states(store)
        if (
            sum(s.get(k, 0) for k in ("accepted", "delivered", "failed", "expired", "shed"))
            >= SENDS
        ):
            break
        time.sleep(0.1)
    stop.set()
    sampler.join()
    d.stop()
    final = states(store)
    span = store.query(
        "SELECT min(attempt_at) AS first, max(accepted_at) AS last FROM sends "
        "WHERE state IN ('accepted','delivered')"
    )[0]
    # Requests started per second while offers were waiting for a token (queue non-empty at
    # both ends of a sample interval), over the bucket's rate.
    used = capacity = 0.0
    for (t1, n1, q1), (t2, n2, q2) in zip(samples, samples[1:], strict=False):
        if q1 > 0 and q2 > 0:
            used += n2 - n1
            capacity += RATE * (t2 - t1)
    accepted = final.get("accepted", 0) + final.get("delivered", 0)
    elapsed = (span["last"] or 0) - (span["first"] or 0)
    out = {
        "sends": SENDS,
        "accepted": accepted,
        "not_accepted": SENDS - accepted,
        "sends_per_s": round(accepted / elapsed, 1) if elapsed > 0 else 0.0,
        "bucket_utilisation": round(used / capacity, 3) if capacity else None,
        "attempts": d.counters.attempts,
        "retried": d.counters.retried,
        "unknown": d.counters.unknown,
        "reconciled": d.counters.reconciled,
        "faults_injected": sum(fake.plan.drawn[f] for f in FAULTS),
        "duplicates": fake.duplicates(),
        "throughput_s": round(elapsed, 1),
    }
    fake.stop()
    store.close()
    return out


# -- frame -> provider request through Mosquitto ----------------------------------------------------


def chain(tmp: Path) -> dict[str, Any]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from test_frames import BCAST, dot11, radiotap, rt_fields

    from cloud_bridge.config import MqttSettings as BridgeMqttSettings
    from cloud_bridge.dev.mosquitto import LocalMosquitto
    from cloud_bridge.ingest.consumer import Ingest
    from cloud_bridge.offers.worker import DecisionWorker
    from edge_agent.adapters.outbox import Outbox
    from edge_agent.adapters.uplink import Uplink
    from edge_agent.agent import Pipeline, to_message
    from edge_agent.config import MqttSettings
    from edge_agent.core.footfall import Footfall
    from edge_agent.core.presence import PresenceTracker
    from edge_agent.protocol import topic
    from edge_agent.roster import build_roster, load_roster, mac_hash

    broker = LocalMosquitto(tmp / "mosquitto")
    broker.start()
    fake = FakeTwilio(FaultPlan()).start()
    store = new_store(tmp / "chain.db")
    store.upsert_campaign(
        {
            "id": "fav-15",
            "name": "15% off",
            "trigger": "arrive",
            "template": "{{ first_name }}, 15% off {{ favourite_product }} today at {{ store_name }}.",
            "stores": [STORE_ID],
        }
    )
    now = time.time()
    site = secrets.token_bytes(16)
    macs, phones, entries = [], [], []
    for i in range(ARRIVALS):
        cid = add_customer(store, i, now)
        row = store.query("SELECT subject, phone FROM customers WHERE id=?", [cid])[0]
        subject = f"{i + 1:016x}"
        store.db.execute("UPDATE customers SET subject=? WHERE id=?", [subject, cid])
        mac = bytes([0x02, 0x10]) + i.to_bytes(4, "big")
        macs.append(mac)
        phones.append(row["phone"])
        entries.append((mac_hash(site, mac), subject))
    key = Ed25519PrivateKey.generate()
    roster = load_roster(build_roster(key, STORE_ID, 1, now, entries), key.public_key(), site)

    mqtt = MqttSettings(host=broker.host, port=broker.port)
    provider = make_provider(twilio_settings(fake, read_timeout=5.0), store)
    deliverer = Deliverer(
        store,
        provider,
        DeliveryOptions(senders=8, queue_size=4 * ARRIVALS, status_callback_url=CALLBACK),
        bucket=TokenBucket(RATE, burst=1),
    )
    worker = DecisionWorker(store, provider, deliverer=deliverer)
    ingest = Ingest(
        BridgeMqttSettings(host=broker.host, port=broker.port),
        store,
        worker.notify,
        client_id="bench-bridge",
    )
    deliverer.start()
    worker.start()
    ingest.start()
    if not ingest.connected.wait(10):
        raise RuntimeError("bridge could not connect to Mosquitto")
    outbox = Outbox(tmp / "edge" / "outbox.db")
    uplink = Uplink(mqtt, STORE_ID, "door-1", outbox, lambda: roster.version)
    uplink.start()
    if not uplink.wait_connected(10):
        raise RuntimeError("agent could not connect to Mosquitto")
    events_topic = topic(STORE_ID, "door-1", "events")

    def emit(event: Any) -> None:
        msg = to_message(event, roster.version)
        outbox.add(events_topic, msg.to_json(), msg.event_id)
        uplink.kick()

    pipe = Pipeline(roster, PresenceTracker(), Footfall(secrets.token_bytes(16)), emit)
    header = radiotap(rt_fields(-45, flags=0, tsft=False))
    body = b"\x00\x00\x01\x04\x02\x04\x0b\x16"
    fed: dict[str, float] = {}
    start = time.monotonic()
    for i, mac in enumerate(macs):
        due = start + i / ARRIVAL_RATE
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        frame = header + dot11(0, 4, BCAST, mac, BCAST, body=body)
        t = time.time()
        fed[phones[i]] = t
        pipe.feed(t, 127, frame)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and fake.state.requests < ARRIVALS:
        time.sleep(0.05)
    uplink.stop()
    outbox.close()
    ingest.stop()
    worker.stop()
    deliverer.stop()
    latencies = [(t - fed[to]) * 1000 for t, to in fake.state.request_times if to in fed]
    # Where the time goes: frame -> event stored by the bridge -> send reserved -> request.
    rows = store.query(
        "SELECT c.phone, e.received, s.ts AS reserved FROM sends s "
        "JOIN customers c ON c.id=s.customer_id JOIN decisions d ON d.id=s.decision_id "
        "JOIN events e ON e.event_id=d.event_id"
    )
    arrived = {to: t for t, to in fake.state.request_times}
    ingest = [(r["received"] - fed[r["phone"]]) * 1000 for r in rows if r["phone"] in fed]
    decide = [(r["reserved"] - r["received"]) * 1000 for r in rows]
    send = [(arrived[r["phone"]] - r["reserved"]) * 1000 for r in rows if r["phone"] in arrived]
    out = {
        "arrivals": ARRIVALS,
        "arrival_rate": ARRIVAL_RATE,
        "provider_requests": fake.state.requests,
        "presence_events": pipe.counters.events,
        "e2e_p50_ms": round(statistics.median(latencies), 1) if latencies else None,
        "e2e_p99_ms": round(pct(latencies, 0.99), 1) if latencies else None,
        "e2e_max_ms": round(max(latencies), 1) if latencies else None,
        "e2e_duplicates": fake.duplicates(),
        "e2e_ingest_p50_ms": round(statistics.median(ingest), 1) if ingest else None,
        "e2e_decide_p50_ms": round(statistics.median(decide), 1) if decide else None,
        "e2e_send_p50_ms": round(statistics.median(send), 1) if send else None,
        "e2e_send_p99_ms": round(pct(send, 0.99), 1) if send else None,
    }
    fake.stop()
    store.close()
    broker.stop()
    return out


# -- loaded: more arrivals than the provider's rate, the sweep must adopt nothing -------------------


def pinned_clock(tz: str, hour: int = 12) -> tuple[Any, float]:
    """Wall time moved to today's ``hour``:00 in ``tz`` when it is first read (it runs on from
    there at the real pace), and that offset."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    real = time.time()
    local = datetime.fromtimestamp(real, ZoneInfo(tz))
    offset = local.replace(hour=hour, minute=0, second=0, microsecond=0).timestamp() - real
    return (lambda: time.time() + offset), offset


def loaded(tmp: Path) -> dict[str, Any]:
    import uuid

    from cloud_bridge.offers.worker import DecisionWorker

    clock, _ = pinned_clock("Europe/Moscow")  # the bench store's time zone
    fake = FakeTwilio(FaultPlan()).start()
    store = new_store(tmp / "loaded.db")
    now = clock()
    subjects = []
    for i in range(LOAD_ARRIVALS):
        cid = add_customer(store, i, now)
        subject = f"{i + 1:016x}"
        store.db.execute("UPDATE customers SET subject=? WHERE id=?", [subject, cid])
        subjects.append(subject)
    settings = twilio_settings(fake, read_timeout=5.0)
    provider = make_provider(settings.model_copy(update={"rate_per_s": LOAD_RATE}), store)
    d = Deliverer(
        store,
        provider,
        DeliveryOptions(senders=LOAD_SENDERS, queue_size=LOAD_QUEUE, status_callback_url=CALLBACK),
        bucket=TokenBucket(LOAD_RATE, burst=1),
        clock=clock,
    )
    worker = DecisionWorker(store, provider, deliverer=d, own_connection=True, clock=clock)
    d.start()
    worker.start()
    start = time.monotonic()
    for i, subject in enumerate(subjects):
        delay = start + i / LOAD_ARRIVAL_RATE - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        eid = uuid.uuid4().hex
        t = clock()
        store.insert_event(eid, STORE_ID, "door-1", "arrive", subject, t, "{}", t)
        worker.notify(eid)
    deadline = time.monotonic() + LOAD_QUEUE / LOAD_RATE + 60
    while time.monotonic() < deadline:
        left = store.query(
            "SELECT count(*) AS n FROM sends WHERE state IN ('reserved', 'sending', 'unknown')"
        )[0]["n"]
        decided = store.query("SELECT count(*) AS n FROM decisions")[0]["n"]
        if decided >= LOAD_ARRIVALS and left == 0:
            break
        time.sleep(0.2)
    worker.stop()
    d.stop()
    final = states(store)
    waits = [
        (r["accepted_at"] - r["ts"]) * 1000
        for r in store.query("SELECT ts, accepted_at FROM sends WHERE accepted_at IS NOT NULL")
    ]
    reserved = sum(final.values())
    reasons = {
        r["reason"]: r["n"]
        for r in store.query(
            "SELECT reason, count(*) AS n FROM decisions WHERE outcome='send' GROUP BY reason"
        )
    }
    out = {
        "loaded_arrivals": LOAD_ARRIVALS,
        "loaded_arrival_rate": LOAD_ARRIVAL_RATE,
        "loaded_rate": LOAD_RATE,
        "loaded_queue": LOAD_QUEUE,
        "loaded_reserved": reserved,
        "loaded_accepted": final.get("accepted", 0) + final.get("delivered", 0),
        "loaded_shed": final.get("shed", 0),
        "loaded_left": sum(final.get(s, 0) for s in ("reserved", "sending", "unknown")),
        "loaded_adopted": d.counters.adopted,
        "loaded_adopted_share": round(d.counters.adopted / reserved, 4) if reserved else None,
        "loaded_tokens": d.bucket.stats.taken,
        "loaded_requests": fake.state.requests,
        "loaded_duplicates": fake.duplicates(),
        "loaded_decision_to_provider_p50_ms": round(statistics.median(waits), 1) if waits else None,
        "loaded_decision_to_provider_p99_ms": round(pct(waits, 0.99), 1) if waits else None,
        "loaded_decision_to_provider_max_ms": round(max(waits), 1) if waits else None,
        "loaded_decisions_read_sent": reasons.get("sent", 0),
        "loaded_decisions_read_shed": reasons.get("shed", 0),
    }
    fake.stop()
    store.close()
    return out


# -- STOP webhook -> consent revoked ----------------------------------------------------------------


def optout_latency(runs: int = 200) -> dict[str, Any]:
    from fastapi.testclient import TestClient

    from cloud_bridge.config import BridgeSettings
    from cloud_bridge.delivery.providers import SandboxProvider, twilio_signature
    from cloud_bridge.web.app import create_app

    store = new_store()
    settings = BridgeSettings(
        public_url="http://testserver",
        provider={
            "kind": "twilio",
            "twilio": {"account_sid": TWILIO_SID, "auth_token": TWILIO_TOKEN},
        },
    )
    app = create_app(store, settings)
    app.state.deliverer = Deliverer(store, SandboxProvider(store), bucket=TokenBucket(1e6, 1000))
    client = TestClient(app)
    now = time.time()
    took = []
    for i in range(runs):
        cid = add_customer(store, i, now)
        phone = store.query("SELECT phone FROM customers WHERE id=?", [cid])[0]["phone"]
        params = {"MessageSid": f"SM{i}", "From": phone, "To": "+15550001111", "Body": "STOP"}
        sig = twilio_signature("http://testserver/sms/twilio/inbound", params, TWILIO_TOKEN)
        t0 = time.perf_counter()
        client.post("/sms/twilio/inbound", data=params, headers={"X-Twilio-Signature": sig})
        revoked = store.latest_consents(cid).get("sms") == "revoked"
        took.append((time.perf_counter() - t0) * 1000)
        if not revoked:
            raise RuntimeError("STOP did not revoke consent")
    store.close()
    return {
        "optout_p50_ms": round(statistics.median(took), 1),
        "optout_p99_ms": round(pct(took, 0.99), 1),
    }


def check_paths(c: dict[str, Any], ld: dict[str, Any]) -> None:
    """Fail loudly when a case did not do the work it claims: every arrival of the chain (a
    different consenting customer each, in a store sending around the clock) must reach the
    provider, and the loaded case must send and shed, not leave its sends behind."""
    problems = []
    if c["provider_requests"] < ARRIVALS:
        problems.append(
            f"chain: {c['provider_requests']} of {ARRIVALS} arrivals reached the provider"
        )
    if not ld["loaded_accepted"] or ld["loaded_left"]:
        problems.append(
            f"loaded: {ld['loaded_accepted']} sent, {ld['loaded_left']} left unsent at the end"
        )
    if problems:
        raise RuntimeError("delivery bench measured the wrong path: " + "; ".join(problems))


def run() -> dict[str, Any]:
    from rich.console import Console
    from rich.table import Table

    logging.disable(logging.WARNING)  # expected disconnect notices would clutter the table
    try:
        with tempfile.TemporaryDirectory() as tmp:
            t = throughput(Path(tmp))
            c = chain(Path(tmp))
            ld = loaded(Path(tmp))
        o = optout_latency()
    finally:
        logging.disable(logging.NOTSET)
    check_paths(c, ld)

    table = Table(
        title=f"delivery: {BRAND!r} through a local Twilio-shaped server, {RATE:.0f} msg/s bucket"
    )
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_column("goal", justify="right")
    rows = [
        ("offers sent (faults injected)", f"{t['accepted']:,} of {t['sends']:,}", "all"),
        ("sends/s", f"{t['sends_per_s']:.1f}", f"<= {RATE:.0f}"),
        ("bucket utilisation (while backlogged)", f"{t['bucket_utilisation']:.1%}", ">= 95%"),
        ("attempts / retried / unknown / reconciled",
         f"{t['attempts']:,} / {t['retried']} / {t['unknown']} / {t['reconciled']}", ""),
        ("faults injected", f"{t['faults_injected']}", ""),
        ("duplicates (under faults)", f"{t['duplicates']}", "0"),
        (f"chain: arrivals at {c['arrival_rate']:.0f}/s", f"{c['arrivals']:,} -> {c['provider_requests']:,} requests", ""),
        ("chain: frame -> provider request p50", f"{c['e2e_p50_ms']} ms", ""),
        ("chain: frame -> provider request p99", f"{c['e2e_p99_ms']} ms", "< 250 ms"),
        ("chain: max", f"{c['e2e_max_ms']} ms", ""),
        ("chain p50: frame->stored / ->reserved / ->request",
         f"{c['e2e_ingest_p50_ms']} / {c['e2e_decide_p50_ms']} / {c['e2e_send_p50_ms']} ms", ""),
        ("chain: duplicates", f"{c['e2e_duplicates']}", "0"),
        ("STOP webhook -> consent revoked p99", f"{o['optout_p99_ms']} ms", "<= 1000 ms"),
        (f"loaded: {ld['loaded_arrivals']:,} arrivals at {ld['loaded_arrival_rate']:.0f}/s, "
         f"{ld['loaded_rate']:.0f} msg/s, queue {ld['loaded_queue']}",
         f"{ld['loaded_accepted']:,} sent, {ld['loaded_shed']:,} shed, {ld['loaded_left']} left", ""),
        ("loaded: sends adopted by the sweep", f"{ld['loaded_adopted']} "
         f"({ld['loaded_adopted_share']:.1%})", "0"),
        ("loaded: tokens taken / provider requests",
         f"{ld['loaded_tokens']:,} / {ld['loaded_requests']:,}", "equal"),
        ("loaded: decision -> provider accepted p50 / p99",
         f"{ld['loaded_decision_to_provider_p50_ms'] / 1000:.1f} / "
         f"{ld['loaded_decision_to_provider_p99_ms'] / 1000:.1f} s",
         f"<= {(LOAD_QUEUE + LOAD_SENDERS) / LOAD_RATE:.1f} s ((queue + senders) / rate)"),
        ("loaded: decisions reading sent / shed",
         f"{ld['loaded_decisions_read_sent']:,} / {ld['loaded_decisions_read_shed']:,}",
         "= sent / shed"),
        ("loaded: duplicates", f"{ld['loaded_duplicates']}", "0"),
    ]  # fmt: skip
    for row in rows:
        table.add_row(*row)
    Console().print(table)
    return {
        **t,
        **c,
        **o,
        **ld,
        "duplicates": t["duplicates"] + c["e2e_duplicates"] + ld["loaded_duplicates"],
    }
