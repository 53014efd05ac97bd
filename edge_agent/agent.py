"""The edge agent's main loop: capture -> parse -> roster match -> presence -> outbox -> uplink."""

from __future__ import annotations

import logging
import secrets
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from edge_agent import __version__
from edge_agent.adapters.outbox import Outbox
from edge_agent.adapters.sdnotify import SdNotifier
from edge_agent.adapters.update_status import failed_update
from edge_agent.config import ConfigError, EdgeSettings
from edge_agent.core import frames
from edge_agent.core.footfall import Footfall
from edge_agent.core.presence import PresenceConfig, PresenceEvent, PresenceTracker
from edge_agent.protocol import PresenceMessage, Rssi, StatsMessage, topic
from edge_agent.roster import Roster, RosterError, load_roster

if TYPE_CHECKING:
    from edge_agent.adapters.commands import CommandWorker

__all__ = ["Pipeline", "RunSummary", "load_roster_file", "replay_dated", "run_capture"]

log = logging.getLogger(__name__)

TICK_S = 1.0  # presence absence checks, in capture time
# A received signal outside this range is a driver artefact (Prism's RSSI item reads 0 when
# unknown, fuzzed headers claim +48 dBm): it counts as "no RSSI", never as "very close".
MIN_DBM, MAX_DBM = -120, -1
BAD_FCS = frames.BAD_FCS


@dataclass
class Counters:
    frames: int = 0
    client: int = 0
    matched: int = 0
    malformed: int = 0
    bad_fcs: int = 0
    events: int = 0


class Pipeline:
    """Per-frame work with no IO: parse, match, track presence, count footfall."""

    def __init__(
        self,
        roster: Roster,
        tracker: PresenceTracker,
        footfall: Footfall,
        emit: Callable[[PresenceEvent], None],
    ) -> None:
        self.roster = roster
        self.tracker = tracker
        self.footfall = footfall
        self.emit = emit
        self.counters = Counters()
        self._next_tick = 0.0
        self._day: int | None = None
        # Set by the command thread, applied by the frame loop between frames (see tick).
        self._new_roster: Roster | None = None
        self._new_presence: PresenceConfig | None = None
        self.forgotten = 0

    def request_swap(self, roster: Roster) -> None:
        self._new_roster = roster
        self._next_tick = 0.0  # apply at the next frame or heartbeat

    def request_reconfigure(self, config: PresenceConfig) -> None:
        self._new_presence = config
        self._next_tick = 0.0

    def _apply_pending(self) -> None:
        roster, self._new_roster = self._new_roster, None
        if roster is not None:
            # Subjects that left the roster (erased, consent withdrawn) are forgotten at once,
            # with no leave: nothing more about them may reach the bridge.
            gone = roster.missing_subjects(self.tracker.tracked())
            self.forgotten += self.tracker.forget(gone)
            self.roster = roster
        config, self._new_presence = self._new_presence, None
        if config is not None:
            self.tracker.reconfigure(config)

    def feed(self, ts: float, linktype: int, data: bytes) -> None:
        c = self.counters
        c.frames += 1
        try:
            parsed = frames.parse(linktype, data, BAD_FCS)
        except frames.MalformedFrame:
            c.malformed += 1
            return
        if ts >= self._next_tick:
            self.tick(ts)
        if parsed is None:
            return
        if not isinstance(parsed, tuple):  # BAD_FCS: the frame's checksum failed
            c.bad_fcs += 1
            return
        ta, _subtype, dbm = parsed
        if dbm is not None and not MIN_DBM <= dbm <= MAX_DBM:
            dbm = None
        c.client += 1
        self.footfall.observe(ta, dbm, ts)
        subject = self.roster.lookup(ta)
        if subject is None:
            return  # unknown device: dropped at once, nothing kept
        c.matched += 1
        for event in self.tracker.feed(subject, dbm, ts):
            self._emit(event)

    def tick(self, now: float) -> None:
        self._next_tick = now + TICK_S
        if self._new_roster is not None or self._new_presence is not None:
            self._apply_pending()
        day = int(now // 86400)
        if self._day is not None and day != self._day:
            # A new UTC day: forget yesterday's footfall identities with the salt.
            self.footfall.rotate_salt(secrets.token_bytes(16), now)
        self._day = day
        for event in self.tracker.tick(now):
            self._emit(event)

    def _emit(self, event: PresenceEvent) -> None:
        self.counters.events += 1
        self.emit(event)


def to_message(event: PresenceEvent, roster_version: int) -> PresenceMessage:
    return PresenceMessage(
        event_id=uuid.uuid4().hex,
        type=event.type,  # type: ignore[arg-type]
        subject=event.subject,
        ts=event.ts,
        first_seen=event.first_seen,
        last_seen=max(event.last_seen, event.first_seen),
        rssi=Rssi(max=event.rssi_max, median=event.rssi_median),
        frames=event.frames,
        dwell_s=max(0.0, event.dwell_s),
        roster_version=roster_version,
    )


def replay_dated(msg: PresenceMessage, now: float) -> PresenceMessage:
    """A replayed event dated no later than ``now`` (the wall clock). A replay faster than
    recorded runs ahead of the clock (a 10-minute capture read in two seconds, the closing
    silence), and the bridge refuses events dated ahead of its clock beyond a small skew; so
    such an event is moved back, all its times by the same amount, to look as if it had just
    happened. Live captures are never moved: their clock is the truth the bridge checks."""
    ahead = max(msg.ts, msg.first_seen, msg.last_seen) - now
    if ahead <= 0:
        return msg
    return msg.model_copy(
        update={
            "ts": msg.ts - ahead,
            "first_seen": msg.first_seen - ahead,
            "last_seen": msg.last_seen - ahead,
        }
    )


def load_roster_file(settings: EdgeSettings) -> Roster:
    """The last-good signed roster from disk, or an empty one (nothing matches) if none yet.

    A roster older than the newest this sensor has ever loaded (``data_dir/roster.version``)
    is refused even when validly signed: putting an old file back must not bring back
    subjects a newer roster removed (erasure, withdrawn consent)."""
    path = settings.roster_path()
    site_key = settings.site_key_bytes()
    if not path.exists():
        log.warning("no roster at %s yet: no device will match until one is delivered", path)
        return Roster.empty(settings.store_id, site_key)
    try:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(settings.roster_public_key))
    except ValueError as exc:
        raise ConfigError(f"roster_public_key is not a 32-byte hex Ed25519 key: {exc}") from None
    try:
        roster = load_roster(path.read_bytes(), public, site_key, store_id=settings.store_id)
    except RosterError as exc:
        raise RosterError(f"{path}: {exc}") from None
    from edge_agent.adapters.commands import ROSTER_MARK, read_roster_mark, write_roster_mark

    newest = read_roster_mark(settings.data_dir)
    if roster.version < newest:
        raise RosterError(
            f"{path}: roster v{roster.version} is older than v{newest}, which this sensor has "
            f"already loaded ({settings.data_dir / ROSTER_MARK}): refusing a rollback; deliver "
            f"v{newest} or newer"
        )
    try:
        write_roster_mark(settings.data_dir, roster.version)
    except OSError as exc:
        log.warning("cannot remember roster v%s in %s: %s", roster.version, settings.data_dir, exc)
    return roster


@dataclass
class RunSummary:
    frames: int = 0
    client: int = 0
    matched: int = 0
    malformed: int = 0
    bad_fcs: int = 0
    events: dict[str, int] = field(default_factory=dict)
    truncated: bool = False
    delivered: bool = False
    outbox_depth: int = 0
    dropped: int = 0
    seconds: float = 0.0


def _disk_free_mb(path: Path) -> float | None:
    try:
        return shutil.disk_usage(path).free / (1 << 20)
    except OSError:
        return None


def _cpu_temp_c() -> float | None:
    try:
        return int(Path("/sys/class/thermal/thermal_zone0/temp").read_text().strip()) / 1000.0
    except (OSError, ValueError):
        return None


def run_capture(
    settings: EdgeSettings,
    records: Iterable[tuple[float, int, bytes | None]],
    *,
    speed: float = 0.0,
    rebase: bool = True,
    drain_timeout_s: float = 30.0,
    stop: threading.Event | None = None,
    is_truncated: Callable[[], bool] = lambda: False,
    iface_state: str = "replay",
) -> RunSummary:
    """Run the whole edge chain over capture records and wait for the broker to ack the events.

    ``speed`` 0 replays as fast as possible, 1 as recorded. ``rebase`` shifts capture timestamps
    so the first frame is "now", which makes a replayed capture look live to the bridge; an
    event of a rebased replay that would be dated ahead of the wall clock is dated now
    (``replay_dated``).
    """
    from edge_agent.adapters.commands import CommandWorker, RemoteConfig, presence_config
    from edge_agent.adapters.uplink import Uplink  # paho is only needed when we actually publish

    stop = stop or threading.Event()
    remote = RemoteConfig(settings)
    p = remote.presence
    tracker = PresenceTracker(presence_config(p))
    footfall = Footfall(
        secrets.token_bytes(16), visit_dwell_s=p.visit_dwell_s, near_dbm=p.enter_dbm
    )
    outbox = Outbox(settings.data_dir / "outbox.db", limit=settings.outbox_limit)
    events_topic = topic(settings.store_id, settings.sensor_id, "events")
    summary = RunSummary()
    pipe = Pipeline(load_roster_file(settings), tracker, footfall, lambda e: emit(e))
    started_wall = time.time()
    started_mono = time.monotonic()

    def status() -> dict[str, object]:
        return {
            "agent_version": __version__,
            "uptime_s": round(time.monotonic() - started_mono, 1),
            "roster_version": pipe.roster.version,
            "outbox_depth": outbox.depth(),
            "frames": pipe.counters.frames,
        }

    commands = CommandWorker(
        settings,
        remote,
        current_roster=lambda: pipe.roster,
        swap_roster=pipe.request_swap,
        reconfigure=pipe.request_reconfigure,
        reply=lambda name, body: uplink.publish_reply(name, body),
        status=status,
    )
    uplink = Uplink(
        settings.mqtt,
        settings.store_id,
        settings.sensor_id,
        outbox,
        lambda: pipe.roster.version,
        on_command=commands.submit,
    )

    def emit(event: PresenceEvent) -> None:
        msg = to_message(event, pipe.roster.version)
        if rebase:
            msg = replay_dated(msg, time.time())
        outbox.add(events_topic, msg.to_json(), msg.event_id)
        summary.events[event.type] = summary.events.get(event.type, 0) + 1
        uplink.kick()

    commands.start()
    uplink.start()
    if not uplink.wait_connected(10.0):
        log.warning(
            "broker %s:%s not reachable yet (%s); events are kept in the outbox",
            settings.mqtt.host,
            settings.mqtt.port,
            uplink.last_connect_error or "no answer",
        )
    systemd = SdNotifier()
    systemd.ready(f"capturing ({iface_state}), roster v{pipe.roster.version}")
    offset: float | None = None
    first_ts = last_ts = 0.0
    next_stats = time.monotonic() + remote.stats_interval_s
    frames_at_stats = 0

    def maybe_stats() -> None:
        nonlocal next_stats, frames_at_stats
        mono = time.monotonic()
        systemd.watchdog(mono)  # the frame loop is alive (systemd's WatchdogSec)
        if mono < next_stats:
            return
        interval = remote.stats_interval_s + (mono - next_stats)
        rate = (pipe.counters.frames - frames_at_stats) / interval
        frames_at_stats = pipe.counters.frames
        next_stats = mono + remote.stats_interval_s
        uplink.publish_stats(
            _stats(
                settings, pipe, outbox, commands, footfall, rate, started_mono, last_ts, iface_state
            )
        )
        systemd.status(
            f"{rate:.0f} frames/s, roster v{pipe.roster.version}, outbox {outbox.depth()}"
        )

    try:
        for ts, linktype, data in records:
            if stop.is_set():
                break
            if data is None:
                # A live source with nothing to read: time still passes for presence and stats.
                last_ts = ts
                pipe.tick(ts)
                maybe_stats()
                continue
            if offset is None:
                first_ts = ts
                offset = (started_wall - ts) if rebase else 0.0
            if speed > 0:
                due = started_mono + (ts - first_ts) / speed
                delay = due - time.monotonic()
                if delay > 0:
                    stop.wait(delay)
            last_ts = ts + offset
            pipe.feed(last_ts, linktype, data)
            if pipe.counters.frames & 0x3F == 0:
                maybe_stats()
        if offset is not None and not stop.is_set() and iface_state == "replay":
            # The capture ended: the silence after it times out whoever was still present.
            pipe.tick(last_ts + p.absence_timeout_s + TICK_S)
        uplink.publish_stats(
            _stats(
                settings,
                pipe,
                outbox,
                commands,
                footfall,
                0.0,
                started_mono,
                time.time(),
                iface_state,
            )
        )
        summary.delivered = uplink.wait_drained(drain_timeout_s)
    finally:
        systemd.stopping()
        uplink.stop()
        commands.stop()
        c = pipe.counters
        summary.frames, summary.client, summary.matched = c.frames, c.client, c.matched
        summary.malformed = c.malformed
        summary.bad_fcs = c.bad_fcs
        summary.truncated = is_truncated()
        summary.outbox_depth = outbox.depth()
        summary.dropped = outbox.dropped
        summary.seconds = time.monotonic() - started_mono
        outbox.close()
    return summary


def _stats(
    settings: EdgeSettings,
    pipe: Pipeline,
    outbox: Outbox,
    commands: CommandWorker,
    footfall: Footfall,
    rate: float,
    started_mono: float,
    now: float,
    iface_state: str,
) -> str:
    c = pipe.counters
    return StatsMessage(
        ts=time.time(),
        uptime_s=time.monotonic() - started_mono,
        agent_version=__version__,
        frames=c.frames,
        frames_per_s=rate,
        client_frames=c.client,
        matched=c.matched,
        malformed=c.malformed,
        outbox_depth=outbox.depth(),
        dropped=outbox.dropped,
        outbox_recovered=outbox.recovered,
        roster_version=pipe.roster.version,
        roster_refused=commands.roster_refused,
        bad_fcs=c.bad_fcs,
        channel=settings.channel,
        iface_state=iface_state,
        cpu_temp_c=_cpu_temp_c(),
        disk_free_mb=_disk_free_mb(settings.data_dir),
        footfall={k: int(v) for k, v in footfall.snapshot(now).items()},
        update_failed=failed_update(settings.update_status_file),
    ).to_json()
