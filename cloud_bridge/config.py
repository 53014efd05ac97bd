"""Bridge settings: TOML file + PASSBY_ environment, one model per concern, unknown keys refused.

Precedence: explicit arguments > environment (``PASSBY_``, nested with ``__``) > TOML file >
defaults. Secrets may come from files so they stay out of the TOML and out of logs
(``SecretStr`` never prints its value).

The bridge's own settings: the edge agent loads its settings the same way
(``edge_agent/config.py``), but the two sides share only the wire contract, so each keeps its
loader (this module's ``BridgeSettingsBase``, ``load_settings``, ``read_secret``, about 60
lines) and its ``[mqtt]`` model.
"""

from __future__ import annotations

import contextvars
import tomllib
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from cloud_bridge.offers.policy import OVERALL_CAP, OVERALL_DAYS

__all__ = [
    "BridgeSettings",
    "BridgeSettingsBase",
    "MqttSettings",
    "ProviderSettings",
    "TwilioSettings",
    "SmscSettings",
    "HttpGatewaySettings",
    "DeliverySettings",
    "PolicySettings",
    "WebSettings",
    "EnrolSettings",
    "ProvisioningSettings",
    "ConfigError",
    "load_settings",
    "read_secret",
]

_toml_path: contextvars.ContextVar[Path | None] = contextvars.ContextVar("_toml_path", default=None)


class ConfigError(ValueError):
    """Settings that do not validate; the message names the file and each bad field."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BridgeSettingsBase(BaseSettings):
    """TOML file (given to ``load_settings``) + PASSBY_ environment, unknown keys refused."""

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


S = TypeVar("S", bound=BridgeSettingsBase)


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
    """The bridge's broker connection (``[mqtt]``, ``[command_mqtt]``); see ``ingest/mqtt.py``."""

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
        10.0, description="cap of the reconnect backoff, seconds (at most 15)", gt=0, le=15
    )
    # A sensor's settings, accepted here as they always were (the [mqtt] model was once shared
    # with the edge agent); the bridge does not read them.
    receipts: Literal["auto", "on", "off"] = Field(
        "auto",
        description="a sensor's setting (see the edge agent's [mqtt]); the bridge ignores it",
    )
    receipt_timeout_s: float = Field(
        30.0,
        description="a sensor's setting (see the edge agent's [mqtt]); the bridge ignores it",
        gt=0,
    )

    def password_value(self) -> str | None:
        return read_secret(self.password, self.password_file, "broker password")


class TwilioSettings(_Section):
    """Twilio Messages API (Basic auth with the account SID and auth token)."""

    account_sid: str | None = Field(
        None, description="Twilio Account SID (AC...)", pattern=r"^AC[0-9a-fA-F]{32}$"
    )
    auth_token: SecretStr | None = Field(
        None,
        description="Twilio auth token (prefer auth_token_file); also checks X-Twilio-Signature",
    )
    auth_token_file: Path | None = Field(None, description="file holding the Twilio auth token")
    messaging_service_sid: str | None = Field(
        None,
        description="send through this Messaging Service (MG...) instead of From = sender name",
        pattern=r"^MG[0-9a-fA-F]{32}$",
    )
    base_url: str = Field(
        "https://api.twilio.com", description="Twilio API base URL", pattern=r"^https?://"
    )
    absent_after_s: float = Field(
        60.0,
        description="a send whose answer was lost is believed not taken (and sent again) only "
        "if Twilio's message list shows nothing to that number this long after the attempt",
        ge=0,
        le=3600,
    )

    def auth_token_value(self) -> str | None:
        return read_secret(self.auth_token, self.auth_token_file, "Twilio auth token")


class SmscSettings(_Section):
    """SMSC.ru HTTP API (login and password; the password also checks callbacks)."""

    login: str | None = Field(None, description="SMSC.ru login")
    password: SecretStr | None = Field(
        None, description="SMSC.ru API password (prefer password_file); also checks callbacks"
    )
    password_file: Path | None = Field(None, description="file holding the SMSC.ru password")
    base_url: str = Field("https://smsc.ru", description="SMSC API base URL", pattern=r"^https?://")

    def password_value(self) -> str | None:
        return read_secret(self.password, self.password_file, "SMSC password")


class HttpGatewaySettings(_Section):
    """Any HTTP SMS gateway: placeholders {to} {sender} {body} {key} {id} {validity_s}."""

    url: str | None = Field(
        None, description="send URL, placeholders allowed (URL-encoded)", pattern=r"^https?://"
    )
    method: Literal["POST", "PUT", "GET"] = Field("POST", description="HTTP method of a send")
    body_format: Literal["json", "form", "none"] = Field(
        "json", description="how placeholder values are escaped in body_template"
    )
    body_template: str = Field(
        '{"to": "{to}", "from": "{sender}", "text": "{body}", "reference": "{key}"}',
        description="request body with placeholders",
    )
    headers: dict[str, str] = Field(default_factory=dict, description="extra request headers")
    token: SecretStr | None = Field(
        None, description="sent as 'Authorization: Bearer' (prefer token_file)"
    )
    token_file: Path | None = Field(None, description="file holding the gateway token")
    account: str = Field("", description="rate-limit account name (default: the URL's host)")
    success_status: list[int] = Field(
        [200, 201, 202], description="HTTP statuses that can mean 'accepted'"
    )
    success_regex: str | None = Field(
        None, description="and the response body must match this regex (unset: status alone)"
    )
    id_regex: str | None = Field(
        r'"(?:id|message_id|messageId)"\s*:\s*"?([A-Za-z0-9_.:-]+)',
        description="regex whose first group is the gateway's message id",
    )
    retry_status: list[int] = Field(
        [429, 500, 502, 503],
        description="HTTP statuses that surely mean 'not accepted, try later'",
    )
    status_url: str | None = Field(
        None,
        description="GET URL of one message's status ({key}, {provider_id}, {id}); "
        "404 = never accepted. Unset: ambiguous sends wait for a receipt",
        pattern=r"^https?://",
    )
    delivered_regex: str | None = Field(
        r"(?i)delivered", description="status response matching this: delivered"
    )
    failed_regex: str | None = Field(
        r"(?i)failed|undeliverable|rejected", description="status response matching this: failed"
    )
    webhook_secret: SecretStr | None = Field(
        None,
        description="HMAC-SHA256 key of the gateway's receipts and inbound SMS "
        "(X-Passby-Signature: t=UNIX,v1=HEX over 't.body'); prefer webhook_secret_file",
    )
    webhook_secret_file: Path | None = Field(None, description="file holding the webhook secret")

    def token_value(self) -> str | None:
        return read_secret(self.token, self.token_file, "gateway token")

    def webhook_secret_value(self) -> str | None:
        return read_secret(self.webhook_secret, self.webhook_secret_file, "gateway webhook secret")


class ProviderSettings(_Section):
    kind: Literal["sandbox", "twilio", "smsc", "http"] = Field(
        "sandbox",
        description="SMS provider: 'twilio', 'smsc' (SMSC.ru), 'http' (generic gateway) or "
        "'sandbox' (records messages in the store: demo and tests)",
    )
    rate_per_s: float = Field(
        10.0,
        description="messages per second for this provider account: one token bucket shared "
        "by every sender of the process",
        gt=0,
        le=10_000,
    )
    burst: int = Field(1, description="tokens the bucket may hold (messages sent at once)", ge=1)
    connect_timeout_s: float = Field(
        3.0, description="no connection by then: surely not sent, retried", gt=0
    )
    read_timeout_s: float = Field(
        10.0,
        description="no answer by then: outcome unknown, reconciled, never resent blindly",
        gt=0,
    )
    twilio: TwilioSettings = Field(default_factory=TwilioSettings, description="Twilio account")
    smsc: SmscSettings = Field(default_factory=SmscSettings, description="SMSC.ru account")
    http: HttpGatewaySettings = Field(
        default_factory=HttpGatewaySettings, description="generic HTTP gateway"
    )

    @model_validator(mode="after")
    def _credentials(self) -> ProviderSettings:
        if self.kind == "twilio" and not self.twilio.account_sid:
            raise ValueError("kind 'twilio' needs twilio.account_sid and an auth token")
        if self.kind == "twilio" and not (self.twilio.auth_token or self.twilio.auth_token_file):
            raise ValueError("kind 'twilio' needs twilio.auth_token or twilio.auth_token_file")
        if self.kind == "smsc" and not (
            self.smsc.login and (self.smsc.password or self.smsc.password_file)
        ):
            raise ValueError("kind 'smsc' needs smsc.login and smsc.password or password_file")
        if self.kind == "http" and not self.http.url:
            raise ValueError("kind 'http' needs http.url")
        return self


class DeliverySettings(_Section):
    """The send outbox: expiry, queue, retries, cost, mandatory parts."""

    offer_ttl_s: float = Field(
        600.0,
        description="an offer not accepted by the provider this long after the customer was "
        "seen expires and is never sent (proximity is now)",
        gt=0,
    )
    queue_size: int = Field(
        1000, description="sends waiting for a token at most; more are shed with a reason", ge=1
    )
    senders: int = Field(8, description="concurrent provider requests", ge=1, le=256)
    max_attempts: int = Field(
        6, description="attempts of one send that surely failed to reach the provider", ge=1
    )
    retry_base_s: float = Field(
        0.5, description="first retry delay (doubles, with jitter; Retry-After wins)", gt=0
    )
    retry_max_s: float = Field(30.0, description="longest delay between retries", gt=0)
    reconcile_after_s: float = Field(
        5.0,
        description="after an ambiguous attempt, ask the provider's status API this much later",
        gt=0,
    )
    max_parts: int = Field(
        2, description="most SMS parts a campaign text may take (checked at save)", ge=1, le=10
    )
    transliterate: bool = Field(
        False, description="send Cyrillic in Latin letters (GSM-7: 160 characters, not 70)"
    )
    prices: dict[str, float] = Field(
        default_factory=lambda: {"*": 0.05},
        description="price of one SMS part by recipient country (ISO code); '*' for the rest",
    )
    currency: str = Field("USD", description="currency of prices", pattern=r"^[A-Z]{3}$")
    default_language: Literal["en", "ru", "hy"] = Field(
        "en", description="opt-out language when neither customer nor text tells"
    )
    optout_base_url: str | None = Field(
        None,
        description="base URL of one-click opt-out links (default public_url); keep it short",
        pattern=r"^https?://",
    )
    webhook_max_age_s: float = Field(
        300.0, description="signed webhooks older than this are refused as replays", gt=0
    )


class PolicySettings(_Section):
    overall_cap: int = Field(
        OVERALL_CAP, description="SMS per customer across campaigns per window", ge=1
    )
    overall_days: int = Field(OVERALL_DAYS, description="window of the overall cap, days", ge=1)
    offer_ttl_s: float = Field(600.0, description="an event older than this is not acted on", gt=0)
    max_clock_skew_s: float = Field(
        120.0,
        description="an event dated more than this ahead of the bridge's clock is dead-lettered "
        "(never decided); a sensor whose clock is off by more raises the clock_skew fleet alert",
        gt=0,
        le=3600,
    )
    regular_visits: int = Field(
        3, description="known visits (CRM count + sensed) from which a customer is a regular", ge=1
    )
    lapsed_days: int = Field(
        60, description="no visit or purchase for this many days: the customer is lapsed", ge=1
    )
    optout_max_rate: float = Field(
        0.02, description="opt-out guard: pause a campaign above this opt-outs/sends", gt=0, le=1
    )
    optout_min_sends: int = Field(
        200, description="opt-out guard: only judge a campaign after this many sends", ge=1
    )
    optout_window_days: float = Field(
        7.0, description="an opt-out this long after a campaign's SMS counts against it", gt=0
    )
    guard_every_s: float = Field(10.0, description="how often the opt-out guard runs", gt=0)
    return_days: int = Field(
        14, description="a visit this many days after an SMS (or holdout) is a return", ge=1
    )


class WebSettings(_Section):
    host: str = Field("127.0.0.1", description="console/API listen address")
    port: int = Field(8080, description="console/API port (0 = pick a free one)", ge=0, le=65535)
    session_idle_s: float = Field(
        4 * 3600.0, description="a console session ends after this long without a request", gt=0
    )
    session_max_s: float = Field(
        24 * 3600.0, description="a console session ends this long after login, whatever", gt=0
    )
    cookie_secure: Literal["auto", "always", "never"] = Field(
        "auto",
        description="mark session cookies Secure: 'auto' when the request came over https "
        "(behind a proxy: when it sends X-Forwarded-Proto and uvicorn trusts it)",
    )
    login_failures_per_user: int = Field(
        5,
        description="failed logins for one user name from one address (since its last success "
        "there) per login_window_s before that address gets 429 for that user",
        ge=1,
    )
    login_failures_per_ip: int = Field(
        20,
        description="failed logins from one address (IPv6: its /64), any user names, per "
        "login_window_s before that address gets 429",
        ge=1,
    )
    login_failures_per_account: int = Field(
        100,
        description="failed logins for one user name from all addresses per login_window_s "
        "before the account refuses every address that failed on it (others still log in)",
        ge=1,
    )
    login_window_s: float = Field(900.0, description="window of the login limits, seconds", gt=0)
    trusted_proxies: list[str] = Field(
        [],
        description="addresses or networks (CIDR) of reverse proxies whose X-Forwarded-For and "
        "X-Forwarded-Proto are believed; anyone else is judged by the socket address and "
        "scheme (default none; nginx on this host: ['127.0.0.1', '::1'])",
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        import ipaddress

        for item in v:
            try:
                ipaddress.ip_network(item.strip(), strict=False)
            except ValueError:
                raise ValueError(
                    f"trusted_proxies: {item!r} is not an IP address or network (CIDR); "
                    "host names are not resolved"
                ) from None
        return [item.strip() for item in v]


class EnrolSettings(_Section):
    portal_mac_param: str | None = Field(
        None,
        description="extra captive-portal redirect parameter carrying the client MAC, besides "
        "UniFi 'id', openNDS 'clientmac', Meraki 'client_mac' and Aruba 'mac'",
        pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$",
    )
    consent_version: str = Field(
        "v1",
        description="consent text version new enrolments read (cloud_bridge/customers/texts/)",
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
    optouts_per_ip_per_hour: int = Field(
        30,
        description="opt-outs by phone number on the portal page from one address per hour "
        "(no code is asked: this keeps one address from withdrawing everyone's consent)",
        ge=1,
    )
    api_token: SecretStr | None = Field(
        None,
        description="bearer token of the customer API (what it may do: api_token_scopes); "
        "unset: those calls are refused",
    )

    @field_validator("api_token")
    @classmethod
    def _long_token(cls, v: SecretStr | None) -> SecretStr | None:
        # Bearer tokens are not throttled: they must be unguessable instead.
        if v is not None and len(v.get_secret_value().strip()) < 20:
            raise ValueError(
                "enrol.api_token must be at least 20 characters (openssl rand -hex 32): "
                "bearer tokens are not rate limited, so they must be unguessable"
            )
        return v

    api_token_scopes: list[Literal["customers.erase", "enrol.link"]] = Field(
        ["customers.erase"],
        description="what api_token allows: 'customers.erase' (DELETE /api/v1/customers/ID), "
        "'enrol.link' (an enrolment may name crm_id or source 'crm': attach a phone and a "
        "device to that CRM customer; for a loyalty app's server)",
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
        "bridge",
        description="broker account of the bridge: reads passby/v1/#, writes commands, receipts "
        "and the bridge hello",
    )
    bridge_accounts: list[str] = Field(
        default_factory=list,
        description="further broker accounts with the bridge's rights in the generated ACL: one "
        "per extra worker and one for commands (Mosquitto ties each account to one connection)",
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


class BridgeSettings(BridgeSettingsBase):
    """Everything the cloud bridge needs to run."""

    def commands_mqtt(self) -> MqttSettings:
        """The broker connection commands are sent with."""
        return self.command_mqtt or self.mqtt

    data_dir: Path = Field(Path("var/bridge"), description="database and generated keys live here")
    database: str | None = Field(
        None,
        description="SQLite file (default data_dir/bridge.db) or a postgresql:// URL: several "
        "bridge workers then share one database (see deploy/cloud/SCALE.md)",
    )
    worker_id: str = Field(
        "1",
        pattern=r"^[A-Za-z0-9_.-]{1,32}$",
        description="this bridge process's name among several: its MQTT client id is "
        "passby-bridge-<worker_id> (each worker needs its own, and its own broker account where "
        "Mosquitto ties client ids to accounts; a restarted worker keeps its id and gets back "
        "the events the broker held for it)",
    )
    orphan_after_s: float = Field(
        10.0,
        gt=0,
        description="PostgreSQL store: each worker decides the events its own ingest stored, and "
        "takes over events left undecided this long (a worker that died mid-batch)",
    )
    mqtt: MqttSettings = Field(default_factory=MqttSettings, description="broker connection")
    command_mqtt: MqttSettings | None = Field(
        None,
        description="broker connection for sensor commands (CLI ping/config, roster "
        "announcements) with its own account: Mosquitto's use_username_as_clientid gives an "
        "account one connection, so sharing this worker's would disconnect it (default: mqtt)",
    )
    provider: ProviderSettings = Field(default_factory=ProviderSettings, description="SMS provider")
    delivery: DeliverySettings = Field(
        default_factory=DeliverySettings, description="send outbox, retries, cost, opt-out"
    )
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

    def database_path(self) -> Path | str:
        """The SQLite file, or the PostgreSQL URL as given."""
        if self.database and self.database.startswith(("postgresql://", "postgres://")):
            return self.database
        return Path(self.database) if self.database else self.data_dir / "bridge.db"

    def data_key_bytes(self) -> bytes:
        """The data key: this setting (or PASSBY_DATA_KEY), else the key file under data_dir."""
        from cloud_bridge.storage.datakey import load_data_key

        if self.data_key is not None:
            return bytes.fromhex(self.data_key.get_secret_value().strip())
        return load_data_key(self.data_dir / "keys", env={})
