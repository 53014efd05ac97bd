"""The pairing bundle: what the bridge hands a sensor, once, for its pairing code.

Wire contract between the edge agent and the bridge, like ``protocol.py`` (MQTT) and
``roster.py`` (the signed roster file); this one is HTTP. A sensor posts ``{"code": ...}`` to
the bridge's ``PAIR_PATH``; the bridge answers exactly once with a ``PairingConfig`` as JSON
(schema ``passby.pairing/1``). The bridge builds it (``cloud_bridge/sensors/provisioning.py``),
the agent reads it and writes its configuration (``edge_agent/adapters/enroll.py``).

Pure: pydantic models and constants, no IO.
"""

from __future__ import annotations

from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from edge_agent.protocol import ID_PATTERN

__all__ = ["PAIRING_SCHEMA", "PAIR_PATH", "PairedMqtt", "PairingConfig"]

PAIRING_SCHEMA: Final = "passby.pairing/1"
PAIR_PATH: Final = "/api/v1/pair"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class PairedMqtt(_Model):
    """How this sensor reaches the broker."""

    host: str = Field(description="broker host name")
    port: int = Field(description="broker port", ge=1, le=65535)
    tls: bool = Field(description="connect with TLS")
    username: str = Field(description="this sensor's broker user, '{store}.{sensor}'")
    password: str = Field(description="this sensor's broker password", min_length=16)
    ca_pem: str | None = Field(None, description="CA certificate of the broker (private CA)")


class PairingConfig(_Model):
    """What the bridge hands a sensor once, in exchange for its pairing code."""

    schema_: Literal["passby.pairing/1"] = Field(
        PAIRING_SCHEMA, alias="schema", description="payload schema id"
    )
    store_id: str = Field(description="store this sensor belongs to", pattern=ID_PATTERN)
    sensor_id: str = Field(description="this sensor's id within the store", pattern=ID_PATTERN)
    channel: int | None = Field(None, description="Wi-Fi channel of the store AP", ge=1, le=196)
    bridge_url: str = Field(
        description="bridge base URL for roster downloads", pattern="^https?://"
    )
    api_token: str = Field(description="this sensor's bridge API token", min_length=16)
    site_key: str = Field(description="the store's MAC hashing key, hex", pattern="^[0-9a-f]+$")
    roster_public_key: str = Field(
        description="bridge's Ed25519 roster-signing public key, hex", pattern="^[0-9a-f]{64}$"
    )
    mqtt: PairedMqtt = Field(description="broker connection")
