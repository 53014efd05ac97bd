"""The MQTT wire protocol (topics and JSON payloads) shared by the edge agent and the bridge.

Every topic has exactly one payload model (zigbee2mqtt's lesson: the topic map is code).
No raw MAC, phone number or name may ever appear in a payload: subjects are keyed hashes.

Topic root: ``passby/v1/{store_id}/{sensor_id}/``

| leaf           | direction | QoS / retain | model          |
|----------------|-----------|--------------|----------------|
| ``status``     | up        | 1 / retained | StatusMessage  |
| ``events``     | up        | 1            | PresenceMessage|
| ``stats``      | up        | 0            | StatsMessage   |
| ``cmd/{name}`` | down      | 1            | COMMANDS[name] |
| ``reply/{name}``| up       | 1            | ReplyMessage   |
| ``receipts``   | down      | 1            | ReceiptMessage |

and one topic outside every sensor's subtree: ``passby/v1/_bridge/hello`` (down, QoS 1,
retained, ``BridgeHello``), where the bridge announces that it sends receipts.

End-to-end receipts (``passby.receipt/1``): the bridge publishes on a sensor's ``receipts`` the
``event_id`` of every event from that sensor it has committed to its database (``stored``;
duplicates included, so a lost receipt is made good by the sensor's resend) or dead-lettered
(``dead``, with the reason), after the commit and before its PUBACK. A sensor that has seen a
``BridgeHello`` with ``receipts >= 1`` (it remembers that in its outbox) deletes an event only
on its receipt, never on the broker's PUBACK, and sends again what stays unconfirmed after
``mqtt.receipt_timeout_s``. A sensor that never saw the hello (an old bridge) deletes on PUBACK
as protocol v1 always did; an old sensor never subscribes to ``receipts`` and the broker drops
them. The ``events`` payload and the topic root are unchanged, so old and new sides mix.

Every command carries a ``request_id`` that its reply echoes. Commands: ``ping``, ``roster``
(a new signed roster exists: version, URL, SHA-256), ``config`` (change presence thresholds or
the stats interval; validated by the agent, a bad change is refused with the reason).
"""

from __future__ import annotations

import json
import re
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "PROTOCOL_VERSION",
    "EVENT_SCHEMA",
    "TOPIC_ROOT",
    "ID_PATTERN",
    "SUBJECT_PATTERN",
    "Rssi",
    "PresenceMessage",
    "StatusMessage",
    "StatsMessage",
    "TopicError",
    "topic",
    "parse_topic",
    "json_schemas",
    "PingCommand",
    "RosterCommand",
    "ConfigCommand",
    "COMMANDS",
    "ReplyMessage",
    "RECEIPT_SCHEMA",
    "RECEIPTS_VERSION",
    "BRIDGE_HELLO_TOPIC",
    "DeadReceipt",
    "ReceiptMessage",
    "BridgeHello",
    "EVENT_ID_PATTERN",
]

PROTOCOL_VERSION = 1
EVENT_SCHEMA: Final = "passby.event/1"
RECEIPT_SCHEMA: Final = "passby.receipt/1"
RECEIPTS_VERSION = 1  # what BridgeHello.receipts announces
EVENT_ID_PATTERN = r"^[0-9a-f]{32}$"
# Outside every sensor's subtree: "_bridge" cannot be a store id (ID_PATTERN starts alphanumeric).
BRIDGE_HELLO_TOPIC: Final = f"passby/v{PROTOCOL_VERSION}/_bridge/hello"
TOPIC_ROOT = f"passby/v{PROTOCOL_VERSION}"
# Store and sensor ids are path segments: no MQTT wildcards, separators or spaces.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
# A subject is a 64-bit keyed hash of a CRM id, hex encoded; never a MAC or phone.
SUBJECT_PATTERN = r"^[0-9a-f]{16}$"
_ID_RE = re.compile(ID_PATTERN)
_EVENT_ID_RE = re.compile(EVENT_ID_PATTERN)
LEAVES = ("status", "events", "stats")


class TopicError(ValueError):
    """A topic that is not ``passby/v1/{store}/{sensor}/{leaf}``."""


def topic(store_id: str, sensor_id: str, leaf: str) -> str:
    """Build a topic under a sensor's subtree, refusing ids that would escape it."""
    for name, value in (("store_id", store_id), ("sensor_id", sensor_id)):
        if not _ID_RE.match(value):
            raise TopicError(f"{name} {value!r} does not match {ID_PATTERN}")
    return f"{TOPIC_ROOT}/{store_id}/{sensor_id}/{leaf}"


def parse_topic(name: str) -> tuple[str, str, str]:
    """Split a topic into (store_id, sensor_id, leaf); raise TopicError if it is not ours."""
    parts = name.split("/")
    if len(parts) < 5 or "/".join(parts[:2]) != TOPIC_ROOT:
        raise TopicError(f"topic {name!r} is not under {TOPIC_ROOT}/{{store}}/{{sensor}}/")
    store_id, sensor_id, leaf = parts[2], parts[3], "/".join(parts[4:])
    if not _ID_RE.match(store_id) or not _ID_RE.match(sensor_id):
        raise TopicError(f"topic {name!r} has an invalid store or sensor id")
    return store_id, sensor_id, leaf


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True)


class Rssi(_Model):
    """Received signal over the stay so far, in dBm (None when the capture has no radio header)."""

    max: int | None = Field(description="strongest smoothed-window sample, dBm", ge=-127, le=20)
    median: int | None = Field(description="median of the stay's samples, dBm", ge=-127, le=20)


class PresenceMessage(_Model):
    """An enrolled subject arrived near the store, visited (dwelled), or left."""

    schema_: Literal["passby.event/1"] = Field(
        EVENT_SCHEMA, alias="schema", description="payload schema id"
    )
    event_id: str = Field(
        description="unique id (hex); the bridge drops duplicates by it",
        pattern=EVENT_ID_PATTERN,
    )
    type: Literal["arrive", "visit", "leave"] = Field(description="presence transition")
    subject: str = Field(description="pseudonymous subject id", pattern=SUBJECT_PATTERN)
    ts: float = Field(
        description="when the transition happened, epoch seconds UTC by the sensor's clock (the "
        "bridge refuses times ahead of its own by more than its allowed skew)",
        gt=0,
    )
    first_seen: float = Field(description="first frame of this stay, epoch seconds", gt=0)
    last_seen: float = Field(description="latest frame of this stay, epoch seconds", gt=0)
    rssi: Rssi = Field(description="signal summary of the stay")
    frames: int = Field(description="frames heard from the subject during the stay", ge=0)
    dwell_s: float = Field(description="seconds near the store so far", ge=0)
    roster_version: int = Field(0, description="roster version that matched the subject", ge=0)

    @field_validator("last_seen")
    @classmethod
    def _ordered(cls, v: float, info: Any) -> float:
        first = info.data.get("first_seen")
        if first is not None and v < first:
            raise ValueError("last_seen is before first_seen")
        return v


class StatusMessage(_Model):
    """Retained birth (online) and last will (offline) of a sensor."""

    state: Literal["online", "offline"] = Field(description="online birth or offline last will")
    agent_version: str = Field("", description="edge agent version")
    protocol: int = Field(PROTOCOL_VERSION, description="wire protocol version")
    roster_version: int = Field(0, description="roster version loaded", ge=0)
    ts: float = Field(0.0, description="when the state was published, epoch seconds", ge=0)


class StatsMessage(_Model):
    """Periodic health and anonymous footfall counters of a sensor."""

    ts: float = Field(
        description="when the stats were taken, epoch seconds by the sensor's clock (the bridge "
        "measures the sensor's clock offset from it)",
        gt=0,
    )
    uptime_s: float = Field(description="seconds since agent start", ge=0)
    agent_version: str = Field(description="edge agent version")
    frames: int = Field(description="frames read since start", ge=0)
    frames_per_s: float = Field(description="frames per second over the last interval", ge=0)
    client_frames: int = Field(description="client-originated frames since start", ge=0)
    matched: int = Field(description="frames from enrolled devices since start", ge=0)
    malformed: int = Field(description="malformed frames since start", ge=0)
    outbox_depth: int = Field(
        description="events waiting for the bridge's receipt (or the broker's ack, without receipts)",
        ge=0,
    )
    dropped: int = Field(description="events dropped because the outbox was full", ge=0)
    outbox_recovered: int = Field(
        0, description="times a corrupt or locked outbox was moved aside at start", ge=0
    )
    roster_version: int = Field(description="roster version loaded", ge=0)
    roster_refused: int = Field(
        0, description="roster downloads refused (signature, version...)", ge=0
    )
    bad_fcs: int = Field(0, description="frames dropped for a failed FCS since start", ge=0)
    channel: int | None = Field(None, description="Wi-Fi channel the sensor listens on")
    iface_state: str = Field("", description="capture source state, e.g. 'replay', 'up', 'down'")
    cpu_temp_c: float | None = Field(None, description="CPU temperature, Celsius")
    disk_free_mb: float | None = Field(None, description="free space on the data disk, MiB")
    footfall: dict[str, int] = Field(
        default_factory=dict, description="anonymous unique-device counts for the current hour"
    )
    update_failed: str | None = Field(
        None,
        description="the last agent update that failed ('VERSION: reason'), until one succeeds",
        max_length=300,
    )


_REQUEST_ID = Field(description="id the reply echoes (hex)", pattern=r"^[0-9a-f]{8,64}$")


class PingCommand(_Model):
    """Are you there? The reply carries uptime, versions and outbox depth."""

    request_id: str = _REQUEST_ID
    ts: float = Field(0.0, description="when the command was sent, epoch seconds", ge=0)


class RosterCommand(_Model):
    """A new signed roster is available: download it, verify it, swap it in."""

    request_id: str = _REQUEST_ID
    ts: float = Field(0.0, description="when the command was sent, epoch seconds", ge=0)
    version: int = Field(description="roster version on offer", ge=1)
    url: str = Field(description="HTTP(S) URL of the roster file", pattern=r"^https?://")
    sha256: str = Field(description="SHA-256 of the file, hex", pattern=r"^[0-9a-f]{64}$")


class ConfigCommand(_Model):
    """Change run-time settings. Only the keys below may change remotely."""

    request_id: str = _REQUEST_ID
    ts: float = Field(0.0, description="when the command was sent, epoch seconds", ge=0)
    presence: dict[str, float] = Field(
        default_factory=dict,
        description="presence settings to change (enter_dbm, leave_dbm, absence_timeout_s, visit_dwell_s, window_s)",
    )
    stats_interval_s: float | None = Field(None, description="new stats interval, seconds", gt=0)


COMMANDS: dict[str, type[_Model]] = {
    "ping": PingCommand,
    "roster": RosterCommand,
    "config": ConfigCommand,
}


class ReplyMessage(_Model):
    """The agent's answer to a command, on ``reply/{name}``."""

    request_id: str = Field(description="the command's request_id", pattern=r"^[0-9a-f]{8,64}$|^$")
    ok: bool = Field(description="whether the command was carried out")
    detail: str = Field("", description="what happened, or why it was refused", max_length=500)
    ts: float = Field(description="when the agent answered, epoch seconds", gt=0)
    data: dict[str, Any] = Field(default_factory=dict, description="command-specific results")


class DeadReceipt(_Model):
    """An event the bridge dead-lettered: the sensor drops it and logs the reason."""

    event_id: str = Field(description="the event's event_id", pattern=EVENT_ID_PATTERN)
    reason: str = Field(description="why the bridge refused it", max_length=300)


class ReceiptMessage(_Model):
    """The bridge has these events of this sensor for good: the sensor may forget them."""

    schema_: Literal["passby.receipt/1"] = Field(
        RECEIPT_SCHEMA, alias="schema", description="payload schema id"
    )
    stored: list[str] = Field(
        default_factory=list,
        description="event_ids committed to the bridge's database (new or duplicate)",
        max_length=10_000,
    )
    dead: list[DeadReceipt] = Field(
        default_factory=list,
        description="event_ids dead-lettered, with the reason",
        max_length=10_000,
    )
    ts: float = Field(0.0, description="when the bridge sent it, epoch seconds", ge=0)

    @field_validator("stored")
    @classmethod
    def _ids(cls, v: list[str]) -> list[str]:
        bad = [x for x in v if not _EVENT_ID_RE.match(x)]
        if bad:
            raise ValueError(f"{len(bad)} stored id(s) are not 32 hex digits")
        return v


class BridgeHello(_Model):
    """Retained on BRIDGE_HELLO_TOPIC: what the bridge offers sensors. ``receipts`` 0 (or an
    empty retained message) withdraws receipts: sensors go back to forgetting on PUBACK."""

    schema_: Literal["passby.bridge/1"] = Field(
        "passby.bridge/1", alias="schema", description="payload schema id"
    )
    receipts: int = Field(
        RECEIPTS_VERSION, description="receipt schema version sent (0: none)", ge=0
    )
    ts: float = Field(0.0, description="when the bridge announced it, epoch seconds", ge=0)


def json_schemas() -> dict[str, Any]:
    """JSON Schema of every payload, for third parties."""
    schemas: dict[str, Any] = {
        "events": PresenceMessage.model_json_schema(by_alias=True),
        "status": StatusMessage.model_json_schema(by_alias=True),
        "stats": StatsMessage.model_json_schema(by_alias=True),
        "reply/{name}": ReplyMessage.model_json_schema(by_alias=True),
        "receipts": ReceiptMessage.model_json_schema(by_alias=True),
        BRIDGE_HELLO_TOPIC: BridgeHello.model_json_schema(by_alias=True),
    }
    for name, model in COMMANDS.items():
        schemas[f"cmd/{name}"] = model.model_json_schema(by_alias=True)
    return schemas


if __name__ == "__main__":  # pragma: no cover - convenience export
    print(json.dumps(json_schemas(), indent=2))
