"""Bridge settings: TOML file + PASSBY_ environment, one model per concern, unknown keys refused."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from edge_agent.config import ConfigError, MqttSettings, PassbySettings, load_settings

__all__ = [
    "BridgeSettings",
    "ProviderSettings",
    "PolicySettings",
    "WebSettings",
    "EnrolSettings",
    "ProvisioningSettings",
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


class EnrolSettings(_Section):
    portal_mac_param: str | None = Field(
        None,
        description="extra captive-portal redirect parameter carrying the client MAC, besides "
        "UniFi 'id', openNDS 'clientmac', Meraki 'client_mac' and Aruba 'mac'",
        pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$",
    )
    consent_version: str = Field(
        "v1",
        description="consent text version new enrolments read (cloud_bridge/consent_texts/)",
        pattern=r"^v\d+$",
    )
    device_ttl_days: float = Field(
        90.0, description="an enrolled MAC expires this long after its last portal login", gt=0
    )
    code_ttl_s: float = Field(600.0, description="an SMS code is valid this long, seconds", gt=0)
    code_attempts: int = Field(5, description="wrong codes allowed before the code dies", ge=1)
    codes_per_phone_per_hour: int = Field(
        3, description="codes sent to one phone number per hour", ge=1
    )
    enrolments_per_ip_per_hour: int = Field(
        30,
        description="enrolments started from one IP per hour (a store's guests share one IP)",
        ge=1,
    )
    api_token: SecretStr | None = Field(
        None,
        description="bearer token for the customer admin API (erasure); unset: the API refuses",
    )


class ProvisioningSettings(_Section):
    """Sensor provisioning (``cloud-bridge sensors``): broker files and what sensors are told."""

    password_file: Path | None = Field(
        None,
        description="Mosquitto password_file to keep in step with provisioned sensors "
        "(unset: sensors add prints the line to add)",
    )
    acl_file: Path | None = Field(
        None, description="Mosquitto acl_file, rewritten from the sensor list (unset: not written)"
    )
    bridge_username: str = Field(
        "bridge", description="broker account of the bridge: reads passby/v1/#, writes commands"
    )
    broker_pid_file: Path | None = Field(
        None,
        description="Mosquitto pid file; the broker gets SIGHUP to reload the files after a change",
    )
    mqtt_host: str | None = Field(
        None, description="broker host name sensors connect to (default: mqtt.host)"
    )
    mqtt_port: int = Field(8883, description="broker port sensors connect to", ge=1, le=65535)
    mqtt_tls: bool = Field(True, description="sensors connect to the broker with TLS")
    mqtt_ca_file: Path | None = Field(
        None, description="CA certificate handed to sensors to verify the broker (private CA)"
    )
    pairing_ttl_s: float = Field(
        3 * 86400.0, description="how long a sensor pairing code stays valid, seconds", gt=0
    )


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

    provisioning: ProvisioningSettings = Field(
        default_factory=ProvisioningSettings, description="sensor credentials and pairing"
    )
    enrol: EnrolSettings = Field(
        default_factory=EnrolSettings, description="enrolment page, consent codes, devices"
    )
    data_key: SecretStr | None = Field(
        None,
        description="64 hex digits encrypting MACs at rest (env PASSBY_DATA_KEY); "
        "default: data_dir/keys/data.key, created with mode 0600 on first use",
    )

    @field_validator("data_key")
    @classmethod
    def _data_key(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None:
            try:
                ok = len(bytes.fromhex(v.get_secret_value().strip())) == 32
            except ValueError:
                ok = False
            if not ok:
                raise ValueError("must be 64 hex digits (32 bytes)")
        return v

    def database_path(self) -> Path:
        return self.database or self.data_dir / "bridge.db"

    def data_key_bytes(self) -> bytes:
        """The data key: this setting (or PASSBY_DATA_KEY), else the key file under data_dir."""
        from cloud_bridge.datakey import load_data_key

        if self.data_key is not None:
            return bytes.fromhex(self.data_key.get_secret_value().strip())
        return load_data_key(self.data_dir / "keys", env={})
