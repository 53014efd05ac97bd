"""Wire protocol: topics stay inside a sensor's subtree; payloads validate strictly."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from edge_agent.protocol import (
    BRIDGE_HELLO_TOPIC,
    BridgeHello,
    DeadReceipt,
    PresenceMessage,
    ReceiptMessage,
    TopicError,
    json_schemas,
    parse_topic,
    topic,
)

GOOD = {
    "schema": "passby.event/1",
    "event_id": "0" * 32,
    "type": "arrive",
    "subject": "0123456789abcdef",
    "ts": 1_700_000_010.0,
    "first_seen": 1_700_000_000.0,
    "last_seen": 1_700_000_010.0,
    "rssi": {"max": -60, "median": -66},
    "frames": 12,
    "dwell_s": 0.0,
}


def test_topic_roundtrip() -> None:
    t = topic("main-st", "door-1", "events")
    assert t == "passby/v1/main-st/door-1/events"
    assert parse_topic(t) == ("main-st", "door-1", "events")


@pytest.mark.parametrize("bad", ["+", "#", "a/b", "", "x" * 65, "main st"])
def test_topic_refuses_escaping_ids(bad: str) -> None:
    with pytest.raises(TopicError):
        topic(bad, "door-1", "events")


@pytest.mark.parametrize("t", ["passby/v2/s/x/events", "other/v1/s/x/events", "passby/v1/s"])
def test_parse_topic_refuses_foreign(t: str) -> None:
    with pytest.raises(TopicError):
        parse_topic(t)


def test_event_roundtrip() -> None:
    msg = PresenceMessage.model_validate(GOOD)
    assert json.loads(msg.to_json())["schema"] == "passby.event/1"
    assert PresenceMessage.model_validate_json(msg.to_json()) == msg


@pytest.mark.parametrize(
    "field,value",
    [
        ("subject", "aa:bb:cc:dd:ee:ff"),  # a MAC is never a subject
        ("subject", "+79161234501"),
        ("type", "teleport"),
        ("event_id", "short"),
        ("frames", -1),
        ("last_seen", 1.0),
        ("extra", "x"),
    ],
)
def test_event_rejects(field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        PresenceMessage.model_validate({**GOOD, field: value})


def test_json_schema_export() -> None:
    schemas = json_schemas()
    assert {
        "events",
        "status",
        "stats",
        "reply/{name}",
        "cmd/ping",
        "cmd/roster",
        "cmd/config",
        "receipts",
        "passby/v1/_bridge/hello",
    } == set(schemas)
    assert "subject" in schemas["events"]["properties"]
    assert {"stored", "dead"} <= set(schemas["receipts"]["properties"])


def test_receipt_roundtrip_and_refusals() -> None:
    msg = ReceiptMessage(
        stored=["a" * 32], dead=[DeadReceipt(event_id="b" * 32, reason="ts: in the future")]
    )
    data = json.loads(msg.to_json())
    assert data["schema"] == "passby.receipt/1"
    assert ReceiptMessage.model_validate_json(msg.to_json()) == msg
    with pytest.raises(ValidationError):
        ReceiptMessage.model_validate({"stored": ["aa:bb:cc:dd:ee:ff"]})
    with pytest.raises(ValidationError):
        ReceiptMessage.model_validate({"stored": [], "extra": 1})


def test_bridge_hello_is_outside_every_sensor_subtree() -> None:
    with pytest.raises(TopicError):
        parse_topic(BRIDGE_HELLO_TOPIC + "/x")  # "_bridge" is no store id
    assert BridgeHello().receipts == 1
