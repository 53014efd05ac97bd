"""Remote commands on ``cmd/{name}``: ping, roster announcements and config changes.

Commands arrive on the MQTT network thread and are queued; one worker thread carries them out
(a roster download must not stall the network or the frame loop) and answers on
``reply/{name}`` with the command's request id. Anything that touches the per-frame state
(roster swap, presence thresholds) is handed to the Pipeline, which applies it between frames.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import ValidationError

from edge_agent.config import EdgeSettings, PresenceSettings
from edge_agent.core.presence import PresenceConfig
from edge_agent.protocol import COMMANDS, ConfigCommand, ReplyMessage, RosterCommand
from edge_agent.roster import Roster, RosterError, load_roster

__all__ = ["CommandWorker", "RemoteConfig", "presence_config", "write_atomic"]

log = logging.getLogger(__name__)

REMOTE_CONFIG = "remote-config.json"  # accepted remote changes, re-applied at start
MAX_ROSTER_BYTES = 256 << 20
# Presence settings a bridge may change remotely (memory bounds stay local).
REMOTE_PRESENCE_KEYS = frozenset(
    {"enter_dbm", "leave_dbm", "absence_timeout_s", "visit_dwell_s", "window_s"}
)


def presence_config(p: PresenceSettings) -> PresenceConfig:
    return PresenceConfig(
        enter_dbm=p.enter_dbm,
        leave_dbm=p.leave_dbm,
        absence_timeout_s=p.absence_timeout_s,
        visit_dwell_s=p.visit_dwell_s,
        window_s=p.window_s,
        max_subjects=p.max_subjects,
    )


ROSTER_MARK = "roster.version"  # in data_dir: the newest roster version ever loaded here


def read_roster_mark(data_dir: Path) -> int:
    """The newest roster version this sensor has loaded (0: none, or an unreadable mark)."""
    try:
        return int((data_dir / ROSTER_MARK).read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def write_roster_mark(data_dir: Path, version: int) -> None:
    """Remember ``version`` (only ever upwards) so a restart can refuse an older roster."""
    if version > read_roster_mark(data_dir):
        write_atomic(data_dir / ROSTER_MARK, f"{version}\n".encode(), 0o644)


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write, fsync, rename: a power cut leaves the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class RemoteConfig:
    """The settings a bridge may change at run time, validated, persisted under data_dir."""

    def __init__(self, settings: EdgeSettings) -> None:
        self.settings = settings
        self.path = settings.data_dir / REMOTE_CONFIG
        self.presence = settings.presence
        self.stats_interval_s = settings.stats_interval_s
        if self.path.exists():
            try:
                saved = json.loads(self.path.read_text())
                self.apply(saved.get("presence", {}), saved.get("stats_interval_s"))
            except (ValueError, OSError) as exc:
                log.error("ignoring %s: %s", self.path, exc)

    def apply(self, presence: dict[str, Any], stats_interval_s: float | None) -> None:
        """Validate and adopt; raises ValueError with the reason (the old values are kept)."""
        unknown = set(presence) - REMOTE_PRESENCE_KEYS
        if unknown:
            raise ValueError(f"presence settings {sorted(unknown)} cannot be changed remotely")
        merged = {**self.presence.model_dump(), **presence}
        for key in ("enter_dbm", "leave_dbm"):
            if float(merged[key]) != int(merged[key]):
                raise ValueError(f"presence.{key} must be a whole number of dBm")
            merged[key] = int(merged[key])
        try:
            new = PresenceSettings.model_validate(merged)
        except ValidationError as exc:
            reasons = "; ".join(
                f"presence.{'.'.join(str(p) for p in e['loc']) or '(all)'}: {e['msg']}"
                for e in exc.errors()
            )
            raise ValueError(reasons) from None
        if stats_interval_s is not None and stats_interval_s <= 0:
            raise ValueError("stats_interval_s must be > 0")
        self.presence = new
        if stats_interval_s is not None:
            self.stats_interval_s = float(stats_interval_s)

    def save(self) -> None:
        presence = {
            k: v for k, v in self.presence.model_dump().items() if k in REMOTE_PRESENCE_KEYS
        }
        body = {"presence": presence, "stats_interval_s": self.stats_interval_s}
        write_atomic(self.path, json.dumps(body, indent=2).encode())


class CommandWorker:
    """Carries out queued commands and answers each one."""

    def __init__(
        self,
        settings: EdgeSettings,
        remote: RemoteConfig,
        current_roster: Callable[[], Roster],
        swap_roster: Callable[[Roster], None],
        reconfigure: Callable[[PresenceConfig], None],
        reply: Callable[[str, str], None],
        status: Callable[[], dict[str, Any]],
        http: httpx.Client | None = None,
    ) -> None:
        self.settings = settings
        self.remote = remote
        self.current_roster = current_roster
        self.swap_roster = swap_roster
        self.reconfigure = reconfigure
        self.reply = reply
        self.status = status
        self.http = http or httpx.Client(
            timeout=httpx.Timeout(30.0, connect=10.0),
            verify=str(settings.ca_file) if settings.ca_file else True,
        )
        self.roster_refused = 0
        self.handled = 0
        self._queue: queue.Queue[tuple[str, bytes] | None] = queue.Queue(maxsize=1000)
        self._thread = threading.Thread(target=self._run, name="commands", daemon=True)

    # called from the MQTT network thread
    def submit(self, name: str, payload: bytes) -> None:
        try:
            self._queue.put_nowait((name, payload))
        except queue.Full:
            log.error("command queue full; dropping command %s", name)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            name, payload = item
            answer = self.handle(name, payload)
            self.handled += 1
            try:
                self.reply(name, answer.to_json())
            except Exception:  # the reply is best effort; the command itself is done
                log.exception("could not publish the reply to %s", name)

    def handle(self, name: str, payload: bytes) -> ReplyMessage:
        now = time.time()
        model = COMMANDS.get(name)
        if model is None:
            return ReplyMessage(request_id="", ok=False, detail=f"unknown command {name!r}", ts=now)
        try:
            cmd = model.model_validate_json(payload)
        except ValidationError as exc:
            rid = _request_id(payload)
            why = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(payload)'}: {e['msg']}"
                for e in exc.errors()[:5]
            )
            return ReplyMessage(
                request_id=rid, ok=False, detail=f"invalid {name} command: {why}"[:500], ts=now
            )
        rid = str(getattr(cmd, "request_id", ""))
        if isinstance(cmd, RosterCommand):
            return self._roster(cmd, now)
        if isinstance(cmd, ConfigCommand):
            return self._config(cmd, now)
        return ReplyMessage(request_id=rid, ok=True, detail="pong", ts=now, data=self.status())

    def _roster(self, cmd: RosterCommand, now: float) -> ReplyMessage:
        current = self.current_roster()
        if cmd.version == current.version:
            return ReplyMessage(
                request_id=cmd.request_id,
                ok=True,
                detail=f"roster v{cmd.version} already loaded",
                ts=now,
                data={"roster_version": current.version},
            )
        try:
            new, data = self._fetch_roster(cmd, current.version)
        except (RosterError, httpx.HTTPError, ValueError) as exc:
            self.roster_refused += 1
            log.error("roster v%s refused: %s", cmd.version, exc)
            return ReplyMessage(
                request_id=cmd.request_id,
                ok=False,
                detail=f"roster v{cmd.version} refused: {exc}"[:500],
                ts=now,
                data={"roster_version": current.version},
            )
        write_atomic(self.settings.roster_path(), data)
        write_roster_mark(self.settings.data_dir, new.version)
        self.swap_roster(new)
        log.info(
            "roster v%s loaded (%s entries); v%s kept as last good",
            new.version,
            len(new),
            new.version,
        )
        return ReplyMessage(
            request_id=cmd.request_id,
            ok=True,
            detail=f"roster v{new.version} loaded",
            ts=now,
            data={"roster_version": new.version, "entries": len(new)},
        )

    def _fetch_roster(self, cmd: RosterCommand, loaded: int) -> tuple[Roster, bytes]:
        if cmd.version < loaded:
            raise RosterError(f"version {cmd.version} is older than the loaded version {loaded}")
        headers = {}
        token = self.settings.api_token_value()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        with self.http.stream("GET", cmd.url, headers=headers) as resp:
            if resp.status_code != 200:
                raise ValueError(f"download failed: HTTP {resp.status_code}")
            chunks, size = [], 0
            for chunk in resp.iter_bytes():
                size += len(chunk)
                if size > MAX_ROSTER_BYTES:
                    raise ValueError(f"roster larger than {MAX_ROSTER_BYTES} bytes")
                chunks.append(chunk)
        data = b"".join(chunks)
        digest = hashlib.sha256(data).hexdigest()
        if digest != cmd.sha256:
            raise ValueError(
                f"download is corrupt or truncated (sha256 {digest[:12]}..., announced {cmd.sha256[:12]}...)"
            )
        public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(self.settings.roster_public_key))
        roster = load_roster(
            data,
            public,
            self.settings.site_key_bytes(),
            store_id=self.settings.store_id,
            min_version=loaded,
        )
        if roster.version != cmd.version:
            raise RosterError(
                f"file holds version {roster.version}, announcement said {cmd.version}"
            )
        return roster, data

    def _config(self, cmd: ConfigCommand, now: float) -> ReplyMessage:
        try:
            self.remote.apply(dict(cmd.presence), cmd.stats_interval_s)
        except ValueError as exc:
            log.error("config change refused: %s", exc)
            return ReplyMessage(
                request_id=cmd.request_id, ok=False, detail=f"refused: {exc}"[:500], ts=now
            )
        self.remote.save()
        self.reconfigure(presence_config(self.remote.presence))
        return ReplyMessage(
            request_id=cmd.request_id,
            ok=True,
            detail="config applied",
            ts=now,
            data={
                "presence": self.remote.presence.model_dump(),
                "stats_interval_s": self.remote.stats_interval_s,
            },
        )


def _request_id(payload: bytes) -> str:
    """Best effort: the request id of a command that failed validation, so the reply matches."""
    try:
        rid = json.loads(payload).get("request_id", "")
    except (ValueError, AttributeError):
        return ""
    return (
        rid
        if isinstance(rid, str)
        and 8 <= len(rid) <= 64
        and all(c in "0123456789abcdef" for c in rid)
        else ""
    )
