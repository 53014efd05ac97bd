"""Edge agent settings: one pydantic model per concern, from a TOML file and PASSBY_ env vars.

Precedence: explicit arguments > environment (``PASSBY_``, nested with ``__``) > TOML file >
defaults. Secrets (site key, broker password) may come from files so they stay out of the TOML
and out of logs (``SecretStr`` never prints its value).
"""

from __future__ import annotations

import contextvars
import tomllib
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from edge_agent.protocol import ID_PATTERN

__all__ = [
    "ConfigError",
    "MqttSettings",
    "PresenceSettings",
    "EdgeSettings",
    "load_settings",
    "PassbySettings",
]

_toml_path: contextvars.ContextVar[Path | None] = contextvars.ContextVar("_toml_path", default=None)


class ConfigError(ValueError):
    """Settings that do not validate; the message names the file and each bad field."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PassbySettings(BaseSettings):
    """Base for both sides: TOML file + PASSBY_ environment, unknown keys refused."""

    model_config = SettingsConfigDict(
        env_prefix="PASSBY_", env_nested_delimiter="__", extra="forbid"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _toml_path.get()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return (*sources, file_secret_settings)


def read_secret(value: SecretStr | None, file: Path | None, what: str) -> str | None:
    """A secret given inline or in a file (first line, stripped)."""
    if value is not None:
        return value.get_secret_value()
    if file is not None:
        try:
            return file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read {what} file {file}: {exc.strerror}") from None
    return None


class MqttSettings(_Section):
    host: str = Field("127.0.0.1", description="broker host name or address")
    port: int = Field(1883, description="broker port (8883 for TLS)", ge=1, le=65535)
    tls: bool = Field(False, description="connect with TLS")
    ca_file: Path | None = Field(None, description="CA bundle that signed the broker certificate")
    cert_file: Path | None = Field(None, description="client certificate (mutual TLS)")
    key_file: Path | None = Field(None, description="client private key (mutual TLS)")
    username: str | None = Field(None, description="broker user name")
    password: SecretStr | None = Field(None, description="broker password (prefer password_file)")
    password_file: Path | None = Field(None, description="file holding the broker password")
    keepalive_s: int = Field(30, description="MQTT keepalive in seconds", ge=5, le=3600)
    session_expiry_s: int = Field(
        7 * 86400, description="how long the broker keeps our session while offline", ge=0
    )
    reconnect_min_s: float = Field(1.0, description="first reconnect delay", gt=0)
    reconnect_max_s: float = Field(
        10.0,
        description="cap of the reconnect backoff, seconds; at most 15 so a sensor is back "
        "within 15 s of the broker returning",
        gt=0,
        le=15,
    )
    receipts: Literal["auto", "on", "off"] = Field(
        "auto",
        description="forget an event only on the bridge's receipt: 'auto' once the bridge has "
        "announced receipts (remembered in the outbox), 'on' always, 'off' on the broker's PUBACK "
        "(protocol v1 before receipts)",
    )
    receipt_timeout_s: float = Field(
        30.0,
        description="an event published without a receipt within this is sent again (doubling "
        "per attempt up to 8x)",
        gt=0,
    )

    def password_value(self) -> str | None:
        return read_secret(self.password, self.password_file, "broker password")


class PresenceSettings(_Section):
    enter_dbm: int = Field(-70, description="smoothed RSSI at or above which a subject arrives")
    leave_dbm: int = Field(-80, description="smoothed RSSI below which a present subject leaves")
    absence_timeout_s: float = Field(90.0, description="silence after which a subject left", gt=0)
    visit_dwell_s: float = Field(300.0, description="dwell that makes a stay a visit", gt=0)
    window_s: float = Field(15.0, description="RSSI smoothing window", gt=0)
    max_subjects: int = Field(100_000, description="subjects tracked at once (memory bound)", ge=1)

    @model_validator(mode="after")
    def _hysteresis(self) -> PresenceSettings:
        if self.leave_dbm >= self.enter_dbm:
            raise ValueError(
                f"leave_dbm ({self.leave_dbm}) must be below enter_dbm ({self.enter_dbm})"
            )
        return self


class EdgeSettings(PassbySettings):
    """Everything the sensor box needs to run."""

    store_id: str = Field(description="store this sensor belongs to", pattern=ID_PATTERN)
    sensor_id: str = Field(description="this sensor's id within the store", pattern=ID_PATTERN)
    data_dir: Path = Field(Path("var/edge"), description="outbox and last-good roster live here")
    site_key: SecretStr | None = Field(None, description="store's MAC hashing key, hex")
    site_key_file: Path | None = Field(None, description="file holding the site key, hex")
    roster_file: Path | None = Field(
        None, description="signed roster (default data_dir/roster.bin)"
    )
    roster_public_key: str = Field(description="bridge's Ed25519 roster-signing public key, hex")
    channel: int | None = Field(None, description="Wi-Fi channel of the store AP", ge=1, le=196)
    bridge_url: str | None = Field(
        None,
        description="bridge HTTP(S) base URL for roster downloads, e.g. https://bridge.example",
    )
    api_token: SecretStr | None = Field(
        None, description="sensor's bridge API token (prefer api_token_file)"
    )
    api_token_file: Path | None = Field(
        None, description="file holding the sensor's bridge API token"
    )
    ca_file: Path | None = Field(None, description="CA bundle for the bridge's HTTPS certificate")
    mqtt: MqttSettings = Field(default_factory=MqttSettings, description="broker connection")
    presence: PresenceSettings = Field(default_factory=PresenceSettings, description="presence")
    outbox_limit: int = Field(100_000, description="events kept while offline", ge=1)
    update_status_file: Path = Field(
        Path("/opt/passby/update-status.json"),
        description="where passby-update records the last agent update; a failed one is "
        "reported in the stats (the console's fleet page shows it)",
    )
    stats_interval_s: float = Field(60.0, description="seconds between stats messages", gt=0)

    def site_key_bytes(self) -> bytes:
        raw = read_secret(self.site_key, self.site_key_file, "site key")
        if raw is None:
            raise ConfigError("site_key or site_key_file is required")
        try:
            key = bytes.fromhex(raw)
        except ValueError:
            raise ConfigError("site key is not hex") from None
        if not 16 <= len(key) <= 64:
            raise ConfigError(f"site key must be 16..64 bytes, got {len(key)}")
        return key

    def api_token_value(self) -> str | None:
        return read_secret(self.api_token, self.api_token_file, "API token")

    def roster_path(self) -> Path:
        return self.roster_file or self.data_dir / "roster.bin"


S = TypeVar("S", bound=PassbySettings)


def _describe(exc: ValidationError, path: Path | None) -> str:
    where = str(path) if path else "settings"
    lines = [f"{where}: {len(exc.errors())} invalid setting(s)"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"  {loc}: {err['msg']}")
    return "\n".join(lines)


def load_settings(cls: type[S], path: str | Path | None, **overrides: Any) -> S:
    """Load settings from a TOML file (optional) plus environment; ConfigError says what's wrong."""
    p = Path(path) if path is not None else None
    if p is not None:
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            tomllib.loads(p.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    token = _toml_path.set(p)
    try:
        return cls(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, p)) from None
    finally:
        _toml_path.reset(token)
