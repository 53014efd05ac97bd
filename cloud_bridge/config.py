"""Bridge settings: TOML file + PASSBY_ environment, one model per concern, unknown keys refused."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from edge_agent.config import ConfigError, MqttSettings, PassbySettings, load_settings

__all__ = [
    "BridgeSettings",
    "ProviderSettings",
    "PolicySettings",
    "WebSettings",
    "ConfigError",
    "load_settings",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProviderSettings(_Section):
    kind: Literal["sandbox"] = Field(
        "sandbox", description="SMS provider: 'sandbox' records messages in the store (demo)"
    )


class PolicySettings(_Section):
    overall_cap: int = Field(4, description="SMS per customer across campaigns per window", ge=1)
    overall_days: int = Field(30, description="window of the overall cap, days", ge=1)
    offer_ttl_s: float = Field(600.0, description="an event older than this is not acted on", gt=0)


class WebSettings(_Section):
    host: str = Field("127.0.0.1", description="console/API listen address")
    port: int = Field(8080, description="console/API port (0 = pick a free one)", ge=0, le=65535)


class BridgeSettings(PassbySettings):
    """Everything the cloud bridge needs to run."""

    data_dir: Path = Field(Path("var/bridge"), description="database and generated keys live here")
    database: Path | None = Field(None, description="SQLite file (default data_dir/bridge.db)")
    mqtt: MqttSettings = Field(default_factory=MqttSettings, description="broker connection")
    provider: ProviderSettings = Field(default_factory=ProviderSettings, description="SMS provider")
    policy: PolicySettings = Field(default_factory=PolicySettings, description="offer policy")
    web: WebSettings = Field(default_factory=WebSettings, description="console and API")
    workers: int = Field(1, description="decision worker threads", ge=1, le=64)
    public_url: str = Field(
        "http://127.0.0.1:8080",
        description="base URL sensors use to reach this bridge's API (roster downloads, pairing)",
        pattern=r"^https?://",
    )

    def database_path(self) -> Path:
        return self.database or self.data_dir / "bridge.db"
