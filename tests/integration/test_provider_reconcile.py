"""Reconciliation against local servers speaking Twilio's and SMSC.ru's APIs: a send whose fate
is unknown is sent again only when the provider positively shows it does not have it.

Each case drives one offer through ``Deliverer`` (sending in the test's thread, the sweep called
by hand) and ends with the provider's own count: no key accepted twice.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from delivery_helpers import add_customer, new_store, reserve
from fake_providers import TWILIO_SID, TWILIO_TOKEN, FakeSmsc, FakeTwilio, FaultPlan

from cloud_bridge.config import ProviderSettings
from cloud_bridge.delivery.outbox import Deliverer, DeliveryOptions
from cloud_bridge.delivery.providers import Outgoing, make_provider
from cloud_bridge.delivery.ratelimit import TokenBucket
from cloud_bridge.storage.sends import send_log_rows, send_row
from cloud_bridge.storage.store import BridgeStore

READ_TIMEOUT = 0.3
CALLBACK = "http://127.0.0.1:9/sms/twilio/status"  # carries our key to the fake; never called


def _deliverer(store: BridgeStore, provider: Any, **options: Any) -> Deliverer:
    opts = {
        "reconcile_after_s": 0.0,
        "retry_base_s": 0.01,
        "retry_max_s": 0.01,
        "status_callback_url": CALLBACK,
        **options,
    }
    return Deliverer(store, provider, DeliveryOptions(**opts), bucket=TokenBucket(1000, 10))


def _twilio(fake: FakeTwilio, store: BridgeStore, absent_after_s: float = 0.0) -> Any:
    settings = ProviderSettings(
        kind="twilio",
        twilio={"account_sid": TWILIO_SID, "auth_token": TWILIO_TOKEN, "base_url": fake.url},
        connect_timeout_s=1.0,
        read_timeout_s=READ_TIMEOUT,
    )
    provider = make_provider(settings, store)
    provider.absent_after_s = absent_after_s  # type: ignore[attr-defined]
    return provider


def _smsc(fake: FakeSmsc, store: BridgeStore, block_s: float = 0.5) -> Any:
    settings = ProviderSettings(
        kind="smsc",
        smsc={"login": fake.LOGIN, "password": fake.PASSWORD, "base_url": fake.url},
        connect_timeout_s=1.0,
        read_timeout_s=READ_TIMEOUT,
    )
    provider = make_provider(settings, store)
    provider.duplicate_window_s = 0.0  # type: ignore[attr-defined]
    provider.block_s = block_s  # type: ignore[attr-defined]
    return provider


def _row(store: BridgeStore, send_id: int) -> dict[str, Any]:
    row = send_row(store, send_id)
    assert row is not None, send_id
    return {k: row[k] for k in ("state", "error", "provider_id", "idem_key", "attempts")}


def _settle(d: Deliverer, store: BridgeStore, send_id: int, rounds: int = 5) -> dict[str, Any]:
    """Reconcile an unknown row and attempt a due retry a few times, as the timer would."""
    for _ in range(rounds):
        row = _row(store, send_id)
        if row["state"] == "unknown":
            now = time.time()
            store.move_send(
                "sends", send_id, ("unknown",), "unknown", now, "test: due", next_at=now
            )
            d.sweep(time.time())
        elif row["state"] == "reserved":
            d.attempt("sends", send_id)
        else:
            break
    return _row(store, send_id)


@pytest.fixture()
def store():  # type: ignore[no-untyped-def]
    s = new_store()
    yield s
    s.close()


def _one_offer(store: BridgeStore, provider: str, i: int = 1) -> int:
    now = time.time()
    return reserve(store, add_customer(store, i, now), now, provider=provider)


# -- Twilio ------------------------------------------------------------------------------------


def test_twilio_message_still_queued_is_found_not_sent_again(store: BridgeStore) -> None:
    """The answer is lost while Twilio still has the message queued (date_sent empty): the
    lookup must find it, not call it absent."""
    with FakeTwilio(FaultPlan(["drop_after"])) as fake:
        d = _deliverer(store, _twilio(fake, store))
        sid = _one_offer(store, "twilio")
        assert d.deliver(sid).status == "unknown"
        row = _settle(d, store, sid)
        assert fake.duplicates() == 0 and len(fake.accepted_keys()) == 1
        assert row["state"] == "accepted"
        assert row["provider_id"] == fake.state.accepted[0].sid


def test_twilio_message_already_sent_is_found(store: BridgeStore) -> None:
    with FakeTwilio(FaultPlan(["drop_after"])) as fake:
        d = _deliverer(store, _twilio(fake, store))
        sid = _one_offer(store, "twilio")
        d.deliver(sid)
        fake.advance("delivered")
        row = _settle(d, store, sid)
        assert fake.duplicates() == 0 and row["state"] == "delivered"


def test_twilio_504_after_taking_it_is_found(store: BridgeStore) -> None:
    with FakeTwilio(FaultPlan(["504_after"])) as fake:
        d = _deliverer(store, _twilio(fake, store))
        sid = _one_offer(store, "twilio")
        assert d.deliver(sid).status == "unknown"
        row = _settle(d, store, sid)
        assert fake.duplicates() == 0 and row["state"] == "accepted"


def test_twilio_never_took_it_is_sent_once_after_the_settle_time(store: BridgeStore) -> None:
    """Dropped before Twilio took it: absence is believed only after ``absent_after_s``
    (a request still in flight at Twilio must have finished), then it is sent once."""
    with FakeTwilio(FaultPlan(["drop"])) as fake:
        provider = _twilio(fake, store, absent_after_s=3600.0)
        d = _deliverer(store, provider)
        sid = _one_offer(store, "twilio")
        assert d.deliver(sid).status == "unknown"
        row = _settle(d, store, sid, rounds=2)
        assert row["state"] == "unknown" and not fake.accepted_keys()  # too early to tell
        provider.absent_after_s = 0.0
        row = _settle(d, store, sid)
        assert row["state"] == "accepted"
        assert fake.accepted_keys()[row["idem_key"]] == 1 and fake.duplicates() == 0


def test_twilio_other_message_in_the_window_is_not_proof_of_absence(store: BridgeStore) -> None:
    """Another text to the same number at that time (Smart Encoding or a shortened link can
    change a body): we cannot tell it is not ours, so nothing is sent again."""
    with FakeTwilio(FaultPlan(["ok", "drop"])) as fake:
        d = _deliverer(store, _twilio(fake, store))
        now = time.time()
        cid = add_customer(store, 1, now)
        reply = d.queue_reply(cid, "help", "Cafe", "Reply STOP to opt out.", "help:1", "en", now)
        assert reply is not None and len(fake.accepted_keys()) == 1
        second = reserve(store, cid, now, provider="twilio")
        assert d.deliver(second).status == "unknown"
        row = _settle(d, store, second)
        assert row["state"] == "unknown"
        last = [r for r in send_log_rows(store) if r["kind"] == "offer" and r["send_id"] == second][
            -1
        ]["detail"]
        assert "absence cannot be proven" in last
        assert len(fake.accepted_keys()) == 1 and fake.duplicates() == 0


@pytest.mark.parametrize("fault", ["507", "504"])
def test_twilio_other_5xx_is_asked_about_not_failed(store: BridgeStore, fault: str) -> None:
    """A 5xx nobody lists by name may have been processed: unknown and asked about, never a
    permanent failure; here Twilio never took it, so it is sent once more."""
    with FakeTwilio(FaultPlan([fault])) as fake:
        d = _deliverer(store, _twilio(fake, store))
        sid = _one_offer(store, "twilio")
        assert d.deliver(sid).status == "unknown"
        row = _settle(d, store, sid)
        assert row["state"] == "accepted" and fake.duplicates() == 0
        assert len(fake.accepted_keys()) == 1


@pytest.mark.parametrize(
    "ttl_s,expect",
    [(5 * 3600, 5 * 3600), (20 * 3600, 36000), (120, 120)],
)
def test_twilio_validity_period_is_the_offers_remaining_life(
    store: BridgeStore, ttl_s: int, expect: int
) -> None:
    """Twilio allows ValidityPeriod 1..36 000 s (10 h): the offer's remaining life, capped."""
    with FakeTwilio(FaultPlan()) as fake:
        d = _deliverer(store, _twilio(fake, store), offer_ttl_s=float(ttl_s))
        sid = _one_offer(store, "twilio")
        assert d.deliver(sid).status == "accepted"
        sent = int(fake.state.accepted[0].validity or 0)
        assert expect - 3 <= sent <= expect


# One table for the status lookup and the status callback (tests/db/test_inbound.py checks the
# callback against the same expectations).
TWILIO_EXPECT = {
    "queued": "accepted",
    "accepted": "accepted",
    "scheduled": "accepted",
    "sending": "accepted",
    "sent": "accepted",
    "delivered": "delivered",
    "read": "delivered",
    "undelivered": "undelivered",
    "partially_delivered": "undelivered",
    "failed": "failed",
    "canceled": "failed",
    "receiving": "error",  # an inbound message's status: not one of ours
    "received": "error",
}


@pytest.mark.parametrize("status", sorted(TWILIO_EXPECT))
def test_twilio_every_status_by_sid(store: BridgeStore, status: str) -> None:
    with FakeTwilio(FaultPlan()) as fake:
        provider = _twilio(fake, store)
        accepted = provider.submit(
            Outgoing(key="k1", to="+79160000001", sender="Cafe", body="hi", attempt_at=time.time())
        )
        fake.advance(status, error_code=30003 if status == "undelivered" else None)
        msg = Outgoing(key="k1", to="+79160000001", sender="Cafe", body="hi")
        looked = provider.status(
            Outgoing(
                **{
                    **{f: getattr(msg, f) for f in msg.__slots__},
                    "provider_id": accepted.provider_id,
                }
            )  # type: ignore[attr-defined]
        )
        assert looked.status == TWILIO_EXPECT[status], looked


# -- SMSC.ru -----------------------------------------------------------------------------------


def test_smsc_status_answer_without_a_status_is_not_absence(store: BridgeStore) -> None:
    with FakeSmsc(FaultPlan(["drop_after"]), duplicate_window_s=0.0) as fake:
        d = _deliverer(store, _smsc(fake, store))
        sid = _one_offer(store, "smsc")
        assert d.deliver(sid).status == "unknown"
        fake.status_override[str(sid)] = {"last_date": "", "err": 0}  # no "status" field
        row = _settle(d, store, sid)
        assert row["state"] == "unknown" and fake.duplicates() == 0
        assert len(fake.accepted_keys()) == 1


def test_smsc_single_lookup_error_3_is_not_found(store: BridgeStore) -> None:
    """Older SMSC answers a single-message lookup of an unknown id with error 3 ("message not
    found"), as documented: that is absence, so the message is sent (once)."""
    with FakeSmsc(FaultPlan(["drop"]), duplicate_window_s=0.0, not_found_as_error=True) as fake:
        d = _deliverer(store, _smsc(fake, store))
        sid = _one_offer(store, "smsc")
        assert d.deliver(sid).status == "unknown"
        row = _settle(d, store, sid)
        assert row["state"] == "accepted" and fake.duplicates() == 0
        assert fake.accepted_keys()[str(sid)] == 1


def test_smsc_status_minus_2_stopped_is_final(store: BridgeStore) -> None:
    with FakeSmsc(FaultPlan(["drop_after"]), duplicate_window_s=0.0) as fake:
        d = _deliverer(store, _smsc(fake, store))
        sid = _one_offer(store, "smsc")
        d.deliver(sid)
        fake.status_code = -2
        row = _settle(d, store, sid)
        assert row["state"] == "failed" and "stopped" in row["error"]
        assert fake.duplicates() == 0


def test_smsc_error_4_waits_out_the_block_and_asks_first(store: BridgeStore) -> None:
    """Error 4 (address blocked): nothing is sent during the block; after it the bridge asks
    status.php first (an earlier identical request may have gone out), then sends once."""
    with FakeSmsc(FaultPlan(), duplicate_window_s=0.0) as fake:
        provider = _smsc(fake, store, block_s=0.6)
        d = _deliverer(store, provider)
        sid = _one_offer(store, "smsc")
        fake.block_for(0.6)
        result = d.deliver(sid)
        assert result.status == "unknown" and (result.retry_after or 0) >= 0.6
        row = _row(store, sid)
        assert row["state"] == "unknown"
        next_at = send_row(store, sid)["next_at"]
        assert next_at >= time.time() + 0.3  # not before the block ends
        d.sweep(time.time())  # not due yet: nothing asked, nothing sent
        assert len(fake.requests_seen()) == 1
        time.sleep(0.7)
        before = len(fake.requests_seen())
        d.sweep(time.time())
        seen = fake.requests_seen()[before:]
        assert seen and seen[0][1].startswith("/sys/status.php")
        row = _settle(d, store, sid)
        assert row["state"] == "accepted" and fake.accepted_keys()[str(sid)] == 1


def test_smsc_error_4_on_a_copy_that_went_out_is_not_sent_again(store: BridgeStore) -> None:
    """The first request was taken but its answer lost; the retry meets the block: the bridge
    finds the first copy instead of sending a second."""
    with FakeSmsc(FaultPlan(["drop_after"]), duplicate_window_s=0.0) as fake:
        provider = _smsc(fake, store, block_s=0.3)
        d = _deliverer(store, provider)
        sid = _one_offer(store, "smsc")
        assert d.deliver(sid).status == "unknown"
        fake.block_for(0.3)
        d.sweep(time.time())  # the lookup meets error 4: still unknown, nothing sent
        assert _row(store, sid)["state"] == "unknown"
        time.sleep(0.4)
        row = _settle(d, store, sid)
        assert row["state"] in ("accepted", "delivered") and fake.duplicates() == 0
