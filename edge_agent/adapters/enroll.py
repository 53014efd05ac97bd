"""Enrolment: trade a one-time pairing code for this sensor's configuration and credentials.

``edge-agent enroll CODE --bridge URL`` posts the code to the bridge's ``/api/v1/pair``, which
answers exactly once with a ``PairingConfig`` (the wire contract: ``edge_agent/pairing.py``).
We write ``edge.toml`` plus the secrets in their own files (``site.key``, ``mqtt.password``,
``api.token``, and the CA certificates when given) with mode 0600 in a 0700 directory; the TOML
only names the files, so it holds no secret. An existing ``edge.toml`` is never overwritten
without ``force``, and that check happens *before* the code is spent.

Errors: ``EnrollError`` (what went wrong and what to do; the CLI prints it and exits 2).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from pydantic import ValidationError

from edge_agent.pairing import PAIR_PATH, PairingConfig

__all__ = [
    "EnrollError",
    "enroll",
    "fetch_pairing",
    "write_sensor_config",
]

CONFIG_NAME = "edge.toml"


class EnrollError(RuntimeError):
    """Enrolment failed; the message says why and what to do."""


def fetch_pairing(
    code: str, bridge_url: str, ca_file: Path | None = None, timeout_s: float = 30.0
) -> PairingConfig:
    """POST the code to the bridge; the bridge answers with the configuration exactly once."""
    import httpx

    url = bridge_url.rstrip("/") + PAIR_PATH
    verify: str | bool = str(ca_file) if ca_file else True
    try:
        response = httpx.post(url, json={"code": code}, timeout=timeout_s, verify=verify)
    except httpx.HTTPError as exc:
        raise EnrollError(f"cannot reach the bridge at {url}: {exc}") from None
    if response.status_code != 200:
        try:
            detail = response.json().get("detail", response.text)
        except (ValueError, AttributeError):
            detail = response.text
        raise EnrollError(f"the bridge refused the pairing code ({response.status_code}): {detail}")
    try:
        return PairingConfig.model_validate_json(response.content)
    except ValidationError as exc:
        raise EnrollError(f"the bridge sent an unusable configuration: {exc}") from None


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def _write_private(path: Path, text: str) -> None:
    """Write atomically with mode 0600 (never briefly readable by others)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def check_target(out: Path, force: bool) -> Path:
    """The config path to write; refuses an existing config unless ``force``."""
    config = out / CONFIG_NAME
    if config.exists() and not force:
        raise EnrollError(
            f"{config} already exists; this sensor looks enrolled. Use --force to replace it "
            f"(the old credentials stop working once the bridge rotated them)"
        )
    return config


def write_sensor_config(
    cfg: PairingConfig,
    out: Path,
    *,
    data_dir: Path | None = None,
    bridge_ca_file: Path | None = None,
    force: bool = False,
) -> Path:
    """Write edge.toml and the secret files into ``out`` (0700); returns the config path."""
    out = out.resolve()
    config = check_target(out, force)
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(out, 0o700)
    files = {
        "site.key": cfg.site_key,
        "mqtt.password": cfg.mqtt.password,
        "api.token": cfg.api_token,
    }
    if cfg.mqtt.ca_pem:
        files["broker-ca.pem"] = cfg.mqtt.ca_pem
    for name, secret in files.items():
        _write_private(out / name, secret.strip() + "\n")
    bridge_ca: Path | None = None
    if bridge_ca_file is not None:
        bridge_ca = out / "bridge-ca.pem"
        if bridge_ca_file.resolve() != bridge_ca:
            _write_private(bridge_ca, bridge_ca_file.read_text(encoding="utf-8"))
    data = (data_dir or out / "data").resolve()
    top: dict[str, object] = {
        "store_id": cfg.store_id,
        "sensor_id": cfg.sensor_id,
        "data_dir": data,
        "site_key_file": out / "site.key",
        "roster_public_key": cfg.roster_public_key,
        "bridge_url": cfg.bridge_url,
        "api_token_file": out / "api.token",
    }
    if cfg.channel is not None:
        top["channel"] = cfg.channel
    if bridge_ca is not None:
        top["ca_file"] = bridge_ca
    mqtt: dict[str, object] = {
        "host": cfg.mqtt.host,
        "port": cfg.mqtt.port,
        "tls": cfg.mqtt.tls,
        "username": cfg.mqtt.username,
        "password_file": out / "mqtt.password",
    }
    if cfg.mqtt.ca_pem:
        mqtt["ca_file"] = out / "broker-ca.pem"
    lines = [
        f"# passby edge agent: written by 'edge-agent enroll' for {cfg.store_id}/{cfg.sensor_id}.",
        "# Secrets live in the files named here (mode 0600), not in this file.",
        *(f"{k} = {_toml_value(v)}" for k, v in top.items()),
        "",
        "[mqtt]",
        *(f"{k} = {_toml_value(v)}" for k, v in mqtt.items()),
    ]
    _write_private(config, "\n".join(lines) + "\n")
    return config


def enroll(
    code: str,
    bridge_url: str,
    out: Path,
    *,
    ca_file: Path | None = None,
    data_dir: Path | None = None,
    force: bool = False,
) -> tuple[Path, PairingConfig]:
    """Fetch the configuration for ``code`` and write it; returns (config path, config)."""
    from edge_agent.config import ConfigError, EdgeSettings, load_settings

    check_target(out.resolve(), force)  # before the code is spent
    if ca_file is not None and not ca_file.is_file():
        raise EnrollError(f"CA file {ca_file} does not exist")
    cfg = fetch_pairing(code, bridge_url, ca_file)
    path = write_sensor_config(cfg, out, data_dir=data_dir, bridge_ca_file=ca_file, force=force)
    try:
        load_settings(EdgeSettings, path).site_key_bytes()
    except ConfigError as exc:
        raise EnrollError(f"the written configuration does not validate: {exc}") from None
    return path, cfg
