"""Sensor provisioning: broker credentials, API tokens, one-time pairing codes, Mosquitto files.

``add_sensor`` creates a sensor's credentials: a random broker password (the bridge keeps only
the Mosquitto PBKDF2-SHA512 hash its password file needs), an API token ``pbt1.<id>.<secret>``
for roster downloads (kept as the SHA-256 of the secret) and a short pairing code valid for
``provisioning.pairing_ttl_s``. The plaintext credentials exist only sealed (AES-GCM, data key)
next to the code's keyed hash, until ``POST /api/v1/pair`` hands them out exactly once.

The Mosquitto password and ACL files, when configured, are rewritten from the sensor list after
every change (atomically, keeping the files' owner and mode) and the broker gets SIGHUP to
reload them. Sensor user names are ``{store}.{sensor}``. Mosquitto's ``pattern`` lines would
substitute that name verbatim (``passby/v1/%u/...`` -> ``passby/v1/main-st.door-1/...``), never
split it into the ``{store}/{sensor}`` levels of our topics, so each sensor gets its own
``user`` block of ``topic`` lines instead (see deploy/mosquitto/README.md).

Errors: ``ProvisioningError`` (bad request from the operator) > ``PairingError`` (a code that is
unknown, used, void or expired; carries the HTTP status).
"""

from __future__ import annotations

import base64
import contextlib
import grp
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, Field

from cloud_bridge.config import BridgeSettings
from cloud_bridge.storage.fleet import broker_login, credential_by_username, sensors_of_store
from cloud_bridge.storage.store import BridgeStore, IntegrityError
from edge_agent.pairing import PairedMqtt, PairingConfig
from edge_agent.protocol import BRIDGE_HELLO_TOPIC, ID_PATTERN, TOPIC_ROOT

__all__ = [
    "BrokerUpdate",
    "PairingError",
    "Provisioned",
    "ProvisioningError",
    "add_sensor",
    "mosquitto_hash",
    "mosquitto_verify",
    "normalise_code",
    "PairRequest",
    "redeem",
    "render_acl",
    "render_password_file",
    "sensor_acl_block",
    "revoke_sensor",
    "sensor_username",
    "write_broker_files",
]

log = logging.getLogger(__name__)

# Crockford base32: no I, L, O, U, so a code read aloud or handwritten survives.
CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_LENGTH = 10  # 50 bits: unguessable online while a few codes are open at a time
MOSQUITTO_ITERATIONS = 101  # what mosquitto_passwd 2.0 writes; the passwords are 256-bit random
_ID_RE = re.compile(ID_PATTERN)
_SEAL_PURPOSE = b"sensor-pairing/1 "


class ProvisioningError(ValueError):
    """The operator asked for something impossible (unknown store, sensor exists, ...)."""


class PairingError(LookupError):
    """A pairing code that cannot be used; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# -- Mosquitto file formats -------------------------------------------------------------------


def mosquitto_hash(password: str, salt: bytes | None = None) -> str:
    """A Mosquitto 2.x password-file hash: ``$7$<iterations>$<salt b64>$<PBKDF2-SHA512 b64>``."""
    salt = salt if salt is not None else secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, MOSQUITTO_ITERATIONS)
    b64salt, b64digest = base64.b64encode(salt).decode(), base64.b64encode(digest).decode()
    return f"$7${MOSQUITTO_ITERATIONS}${b64salt}${b64digest}"


def mosquitto_verify(password: str, hashed: str) -> bool:
    parts = hashed.split("$")
    if len(parts) != 5 or parts[1] != "7":
        return False
    try:
        iterations, salt, want = (
            int(parts[2]),
            base64.b64decode(parts[3]),
            base64.b64decode(parts[4]),
        )
    except ValueError:
        return False
    got = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    return hmac.compare_digest(got, want)


def sensor_username(store_id: str, sensor_id: str) -> str:
    return f"{store_id}.{sensor_id}"


def bridge_acl_block(username: str) -> list[str]:
    """A bridge account reads every sensor's topics, sends commands and receipts and its hello."""
    root = TOPIC_ROOT
    return [
        f"user {username}",
        f"topic read {root}/#",
        f"topic write {root}/+/+/cmd/#",
        f"topic write {root}/+/+/receipts",
        f"topic write {BRIDGE_HELLO_TOPIC}",
    ]


def sensor_acl_block(store_id: str, sensor_id: str) -> list[str]:
    """A sensor writes only its own subtree and reads only its commands, its receipts and the
    bridge's hello."""
    base = f"{TOPIC_ROOT}/{store_id}/{sensor_id}"
    return [
        f"user {sensor_username(store_id, sensor_id)}",
        f"topic write {base}/status",
        f"topic write {base}/events",
        f"topic write {base}/stats",
        f"topic write {base}/reply/#",
        f"topic read {base}/cmd/#",
        f"topic read {base}/receipts",
        f"topic read {BRIDGE_HELLO_TOPIC}",
    ]


def render_acl(
    bridge_username: str,
    sensors: Iterable[tuple[str, str]],
    bridge_accounts: Iterable[str] = (),
) -> str:
    """The whole ACL file: the bridge's block(s), then one block per sensor (sorted).
    ``bridge_accounts``: further accounts with the bridge's rights (one per extra worker, one
    for commands: with ``use_username_as_clientid`` an account is one connection)."""
    lines = [
        "# passby Mosquitto ACL: generated by 'cloud-bridge sensors'; edits are overwritten.",
        "# A sensor publishes only under its own subtree and reads only its own commands and",
        "# receipts (and the bridge's hello).",
    ]
    accounts = [bridge_username] + sorted(set(bridge_accounts) - {bridge_username})
    for account in accounts:
        lines += ["", *bridge_acl_block(account)]
    for store_id, sensor_id in sorted(set(sensors)):
        lines += ["", *sensor_acl_block(store_id, sensor_id)]
    return "\n".join(lines) + "\n"


def render_password_file(existing: str, managed: set[str], entries: dict[str, str]) -> str:
    """Lines of users we do not manage are kept as they are (e.g. a bridge account made with
    mosquitto_passwd); every user in ``managed`` is dropped and ``entries`` (user -> hash) added.
    No comments: mosquitto_passwd refuses files that have them."""
    kept = []
    for line in existing.splitlines():
        user = line.split(":", 1)[0]
        if line.strip() and user not in managed and user not in entries:
            kept.append(line)
    added = [f"{user}:{entries[user]}" for user in sorted(entries)]
    return "\n".join(kept + added) + "\n"


def _write_like(path: Path, text: str, mode: int = 0o640) -> None:
    """Replace ``path`` atomically, keeping an existing file's mode and owner; a new file gets
    ``mode`` and, as root, the ``mosquitto`` group so the broker can read it after it drops
    privileges."""
    try:
        st = path.stat()
        mode, uid, gid = st.st_mode & 0o7777, st.st_uid, st.st_gid
    except FileNotFoundError:
        uid, gid = -1, -1
        if os.geteuid() == 0:
            with contextlib.suppress(KeyError):
                gid = grp.getgrnam("mosquitto").gr_gid
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        if (uid, gid) != (-1, -1):
            with contextlib.suppress(PermissionError):
                os.chown(tmp, uid, gid)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


@dataclass
class BrokerUpdate:
    """What changed on the broker side, for the operator."""

    written: list[Path] = field(default_factory=list)
    reloaded_pid: int | None = None
    notes: list[str] = field(default_factory=list)


def write_broker_files(store: BridgeStore, settings: BridgeSettings) -> BrokerUpdate:
    """Bring the configured Mosquitto password and ACL files in step with the sensor list."""
    p = settings.provisioning
    update = BrokerUpdate()
    every = store.sensor_credentials(include_revoked=True)
    live = [r for r in every if r["revoked"] is None]
    if p.password_file is not None:
        existing = p.password_file.read_text(encoding="utf-8") if p.password_file.exists() else ""
        entries = {r["mqtt_username"]: r["mqtt_password_hash"] for r in live}
        bridge_password = settings.mqtt.password_value()
        if bridge_password and (settings.mqtt.username or p.bridge_username) == p.bridge_username:
            # The bridge's own account, from its settings; an entry that still matches is kept
            # as it is so the file does not change for nothing.
            current = next(
                (
                    line.split(":", 1)[1]
                    for line in existing.splitlines()
                    if line.split(":", 1)[0] == p.bridge_username and ":" in line
                ),
                "",
            )
            ok = current and mosquitto_verify(bridge_password, current)
            entries[p.bridge_username] = current if ok else mosquitto_hash(bridge_password)
        elif p.bridge_username + ":" not in existing:
            update.notes.append(
                f"{p.password_file} has no '{p.bridge_username}' account: add it with "
                f"'mosquitto_passwd {p.password_file} {p.bridge_username}'"
            )
        managed = {r["mqtt_username"] for r in every}
        _write_like(p.password_file, render_password_file(existing, managed, entries))
        update.written.append(p.password_file)
    if p.acl_file is not None:
        sensors = [(r["store_id"], r["sensor_id"]) for r in live]
        _write_like(p.acl_file, render_acl(p.bridge_username, sensors, p.bridge_accounts))
        update.written.append(p.acl_file)
    if update.written and p.broker_pid_file is not None:
        update.reloaded_pid = _reload_broker(p.broker_pid_file, update)
    return update


def _reload_broker(pid_file: Path, update: BrokerUpdate) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, signal.SIGHUP)  # Mosquitto re-reads password_file and acl_file
        return pid
    except (OSError, ValueError) as exc:
        update.notes.append(
            f"could not signal Mosquitto via {pid_file} ({exc}); reload it by hand "
            f"('systemctl reload mosquitto') so the change takes effect"
        )
        return None


# -- codes and tokens -------------------------------------------------------------------------


def new_code() -> str:
    raw = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
    return f"{raw[:5]}-{raw[5:]}"


def normalise_code(code: str) -> str:
    """Upper case without separators; the letters Crockford base32 leaves out read as digits."""
    text = re.sub(r"[\s-]", "", code).upper()
    return text.translate(str.maketrans("OIL", "011"))


def _code_hash(store: BridgeStore, code: str) -> str:
    return store.cipher.code_hash("sensor-pairing", normalise_code(code))


def new_api_token() -> tuple[str, str, str]:
    """(token, token id, SHA-256 hex of the secret part)."""
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return f"pbt1.{token_id}.{secret}", token_id, hashlib.sha256(secret.encode()).hexdigest()


# -- operations -------------------------------------------------------------------------------


@dataclass
class Provisioned:
    store_id: str
    sensor_id: str
    username: str
    code: str
    expires: float
    broker: BrokerUpdate


def _next_sensor_id(store: BridgeStore, store_id: str) -> str:
    taken = {r["sensor_id"] for r in sensors_of_store(store, store_id)}
    taken |= {
        r["sensor_id"]
        for r in store.sensor_credentials(include_revoked=True)
        if r["store_id"] == store_id
    }
    n = 1
    while f"sensor-{n}" in taken:
        n += 1
    return f"sensor-{n}"


def add_sensor(
    store: BridgeStore,
    settings: BridgeSettings,
    store_id: str,
    sensor_id: str | None = None,
    *,
    channel: int | None = None,
    rotate: bool = False,
    now: float | None = None,
    write_broker: bool = True,
) -> Provisioned:
    """Create a sensor (or with ``rotate``, new credentials for an existing one) and a code.

    ``write_broker=False`` leaves the Mosquitto files alone: a caller adding many sensors (the
    fleet simulator) calls ``write_broker_files`` once at the end instead of once per sensor."""
    now = time.time() if now is None else now
    if store.site_key(store_id) is None:
        raise ProvisioningError(f"unknown store {store_id!r}: create it first (cloud-bridge seed)")
    sensor_id = sensor_id or _next_sensor_id(store, store_id)
    if not _ID_RE.match(sensor_id):
        raise ProvisioningError(f"sensor id {sensor_id!r} does not match {ID_PATTERN}")
    username = sensor_username(store_id, sensor_id)
    password = secrets.token_urlsafe(32)
    token, token_id, token_sha = new_api_token()
    row = {
        "store_id": store_id,
        "sensor_id": sensor_id,
        "mqtt_username": username,
        "mqtt_password_hash": mosquitto_hash(password),
        "token_id": token_id,
        "token_sha256": token_sha,
        "channel": channel,
        "created": now,
    }
    try:
        store.save_sensor_credentials(row, rotate=rotate)
    except IntegrityError as exc:
        if rotate:
            raise ProvisioningError(f"no sensor {store_id}/{sensor_id} to rotate") from None
        other = credential_by_username(store, username)
        if other and (other[0]["store_id"], other[0]["sensor_id"]) != (store_id, sensor_id):
            raise ProvisioningError(
                f"broker user {username!r} already belongs to sensor "
                f"{other[0]['store_id']}/{other[0]['sensor_id']}: choose another sensor id"
            ) from None
        raise ProvisioningError(
            f"sensor {store_id}/{sensor_id} already exists ({exc}); use --rotate for new "
            f"credentials and a new pairing code"
        ) from None
    code = new_code()
    code_hash = _code_hash(store, code)
    sealed = store.cipher.seal(
        json.dumps({"mqtt_password": password, "api_token": token}).encode(),
        _SEAL_PURPOSE + code_hash.encode(),
    )
    expires = now + settings.provisioning.pairing_ttl_s
    store.add_pairing_code(
        {
            "code_hash": code_hash,
            "store_id": store_id,
            "sensor_id": sensor_id,
            "sealed": sealed,
            "created": now,
            "expires": expires,
        }
    )
    store.purge_pairing_codes(now)
    broker = write_broker_files(store, settings) if write_broker else BrokerUpdate()
    log.info("provisioned sensor %s/%s (broker user %s)", store_id, sensor_id, username)
    return Provisioned(store_id, sensor_id, username, code, expires, broker)


def revoke_sensor(
    store: BridgeStore,
    settings: BridgeSettings,
    store_id: str,
    sensor_id: str,
    write_broker: bool = True,
) -> BrokerUpdate:
    """Withdraw a sensor; ``write_broker=False`` as in ``add_sensor``."""
    if not store.revoke_sensor(store_id, sensor_id, time.time()):
        raise ProvisioningError(f"no live sensor {store_id}/{sensor_id}")
    log.info("revoked sensor %s/%s", store_id, sensor_id)
    return write_broker_files(store, settings) if write_broker else BrokerUpdate()


def redeem(
    store: BridgeStore,
    settings: BridgeSettings,
    code: str,
    now: float | None = None,
    used_by: str | None = None,
) -> PairingConfig:
    """Exchange a pairing code for the sensor's configuration, exactly once."""
    from cloud_bridge.sensors.keys import BridgeKeys

    now = time.time() if now is None else now
    code_hash = _code_hash(store, code)
    row, why = store.redeem_pairing_code(code_hash, now, used_by)
    if row is None:
        status, message = {
            "unknown": (404, "unknown pairing code: check it, or ask for a new one"),
            "used": (410, "this pairing code was already used: ask for a new one"),
            "void": (410, "this pairing code was replaced or its sensor revoked"),
            "expired": (410, "this pairing code has expired: ask for a new one"),
        }[why]
        log.warning("pairing refused (%s) from %s", why, used_by or "?")
        raise PairingError(status, message)
    secret = json.loads(store.cipher.unseal(row["sealed"], _SEAL_PURPOSE + code_hash.encode()))
    store_id, sensor_id = row["store_id"], row["sensor_id"]
    cred = broker_login(store, store_id, sensor_id)
    p = settings.provisioning
    ca_pem = p.mqtt_ca_file.read_text(encoding="utf-8") if p.mqtt_ca_file else None
    log.info("sensor %s/%s paired from %s", store_id, sensor_id, used_by or "?")
    return PairingConfig(
        store_id=store_id,
        sensor_id=sensor_id,
        channel=cred["channel"],
        bridge_url=settings.public_url,
        api_token=secret["api_token"],
        site_key=str(store.site_key(store_id)),
        roster_public_key=BridgeKeys(settings.data_dir).public_key_hex(),
        mqtt=PairedMqtt(
            host=p.mqtt_host or settings.mqtt.host,
            port=p.mqtt_port,
            tls=p.mqtt_tls,
            username=cred["mqtt_username"],
            password=secret["mqtt_password"],
            ca_pem=ca_pem,
        ),
    )


class PairRequest(BaseModel):
    code: str = Field(description="pairing code printed by 'cloud-bridge sensors add'")
