"""Fleet health (pure): a sensor's state and alerts from its latest status, stats and history.

No IO, no clock: the caller passes the sensor row, its recent stats history and ``now``.

State: ``online`` (retained birth, heard recently), ``offline`` (the last will, or the broker
said so), ``silent`` (says online but nothing heard for ``SILENT_AFTER_S``: a cut cable keeps
the retained birth until the broker's keepalive runs out) and ``never`` (provisioned, never
heard).

Alerts (``ALERTS``), each with the fix a person can apply:

* ``offline``: offline or silent for more than ``OFFLINE_ALERT_S`` (5 min);
* ``outbox_growing``: the events waiting for the broker grew across the last samples;
* ``no_frames``: online, yet no frame heard on the channel across the last samples;
* ``stale_roster``: the sensor runs an older roster than the store's current one;
* ``clock_skew``: the sensor's clock is off the bridge's by more than the allowed skew
  (``policy.max_clock_skew_s``, 2 min by default). Ahead, its events are refused as from the
  future; behind, they arrive stale. The offset is measured on each stats message (its ``ts``
  against the bridge's clock when it came) and kept in the stats as ``clock_offset_s``;
* ``dropping``: the outbox was full and events were dropped;
* ``hot`` / ``disk_low``: CPU temperature or free disk past their line;
* ``update_failed``: the box's last signed agent update failed (it runs the previous one).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Final

from cloud_bridge.clock import DEFAULT_MAX_SKEW_S, span_words

__all__ = [
    "ALERTS",
    "OFFLINE_ALERT_S",
    "SILENT_AFTER_S",
    "Alert",
    "SensorHealth",
    "sensor_health",
]

OFFLINE_ALERT_S: Final = 300.0
SILENT_AFTER_S: Final = 180.0  # three stats intervals of 60 s
OUTBOX_WINDOW_S: Final = 900.0  # look at this much history for trends
NO_FRAMES_AFTER_S: Final = 300.0
HOT_C: Final = 80.0
DISK_LOW_MB: Final = 200.0

ALERTS: Final[dict[str, tuple[str, str]]] = {
    "offline": (
        "the box has been offline for more than 5 minutes",
        "check power and the network cable or Wi-Fi uplink of the box; on the box run "
        "`systemctl status passby-agent` and `journalctl -u passby-agent -n 50`",
    ),
    "outbox_growing": (
        "events are piling up on the box: the broker does not acknowledge them",
        "check the box reaches the broker (DNS, firewall, TLS CA, broker password); "
        "`cloud-bridge cmd ping --store STORE --sensor SENSOR`",
    ),
    "no_frames": (
        "no Wi-Fi frames heard on the channel",
        "check the adapter is in monitor mode on the store AP's channel: "
        "`edge-agent doctor --iface wlan1 --channel N` on the box",
    ),
    "stale_roster": (
        "the box runs an older roster than the store's current one",
        "republish it: `cloud-bridge roster publish --store STORE` (the box must be online)",
    ),
    "dropping": (
        "the box's outbox was full and events were dropped",
        "restore the broker connection first; raise outbox_limit in edge.toml if outages are long",
    ),
    "clock_skew": (
        "the box's clock is off: its events are refused (ahead) or arrive stale (behind)",
        "on the box run `timedatectl status` (System clock synchronized: yes) and check it "
        "reaches an NTP server (`timedatectl timesync-status`); the bridge's own clock must "
        "be synchronised too",
    ),
    "hot": (
        "the CPU is hot (80 °C or more)",
        "give the box air or a heatsink case; keep it out of direct sun",
    ),
    "disk_low": (
        "less than 200 MB free on the box's data disk",
        "free space or use a larger SD card; check log rotation",
    ),
    "update_failed": (
        "the box's last software update failed; it keeps running the previous version",
        "the box will not retry that release; publish a fixed one, or see "
        "`python3 /opt/passby/lib/passby_update.py status` on the box",
    ),
}


@dataclass(frozen=True, slots=True)
class Alert:
    kind: str
    text: str
    fix: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class SensorHealth:
    store_id: str
    sensor_id: str
    state: str
    last_seen: float | None
    agent_version: str | None
    roster_version: int | None
    store_roster_version: int | None
    stats: dict[str, Any]
    alerts: tuple[Alert, ...] = field(default_factory=tuple)

    @property
    def online(self) -> bool:
        return self.state == "online"

    @property
    def clock_offset_s(self) -> float | None:
        """The sensor's clock minus the bridge's, from its latest stats (None: not known)."""
        value = self.stats.get("clock_offset_s")
        return float(value) if isinstance(value, int | float) else None

    def to_json(self) -> dict[str, Any]:
        s = self.stats
        return {
            "store_id": self.store_id,
            "sensor_id": self.sensor_id,
            "state": self.state,
            "online": self.online,
            "last_seen": self.last_seen,
            "agent_version": self.agent_version,
            "roster_version": self.roster_version,
            "store_roster_version": self.store_roster_version,
            "frames_per_s": s.get("frames_per_s"),
            "outbox_depth": s.get("outbox_depth"),
            "dropped": s.get("dropped"),
            "cpu_temp_c": s.get("cpu_temp_c"),
            "disk_free_mb": s.get("disk_free_mb"),
            "channel": s.get("channel"),
            "clock_offset_s": self.clock_offset_s,
            "alerts": [{"kind": a.kind, "text": a.text, "fix": a.fix, "detail": a.detail}
                       for a in self.alerts],
        }  # fmt: skip


def _alert(kind: str, detail: str = "", **names: str) -> Alert:
    text, fix = ALERTS[kind]
    for key, value in names.items():
        fix = fix.replace(key.upper(), value)
    return Alert(kind, text, fix, detail)


def _state(row: dict[str, Any], now: float) -> str:
    last = row.get("last_seen")
    state = row.get("state")
    if not last:
        return "never"
    if state in ("offline", "incompatible"):
        return str(state)
    if now - last > SILENT_AFTER_S:
        return "silent"
    return "online"


def sensor_health(
    row: dict[str, Any],
    history: list[dict[str, Any]],
    store_roster_version: int | None,
    now: float,
    max_skew_s: float = DEFAULT_MAX_SKEW_S,
) -> SensorHealth:
    """Health of one sensor. ``row`` is its ``sensors`` row; ``history`` its stats samples of
    the last ``OUTBOX_WINDOW_S`` or so (``received``, ``outbox_depth``, ``frames_per_s``,
    ``client_frames``, ``dropped``), oldest first; ``max_skew_s`` the clock offset allowed."""
    try:
        stats = json.loads(row.get("last_stats") or "{}")
    except ValueError:
        stats = {}
    state = _state(row, now)
    names = {"store": str(row["store_id"]), "sensor": str(row["sensor_id"])}
    alerts: list[Alert] = []
    last = row.get("last_seen") or 0.0
    if state in ("offline", "silent", "incompatible") and now - last > OFFLINE_ALERT_S:
        alerts.append(_alert("offline", f"{state} for {(now - last) / 60:.0f} min", **names))
    recent = [h for h in history if h.get("received", 0) >= now - OUTBOX_WINDOW_S]
    depths = [h["outbox_depth"] for h in recent if h.get("outbox_depth") is not None]
    if (
        len(depths) >= 3
        and depths[-1] > depths[0]
        and all(b >= a for a, b in zip(depths, depths[1:], strict=False))
    ):
        alerts.append(_alert("outbox_growing", f"{depths[0]} -> {depths[-1]} waiting", **names))
    if state == "online":
        window = [
            h
            for h in history
            if h.get("received", 0) >= now - NO_FRAMES_AFTER_S and h.get("frames_per_s") is not None
        ]
        span = window[-1]["received"] - window[0]["received"] if len(window) >= 2 else 0.0
        if (
            window
            and span >= NO_FRAMES_AFTER_S * 0.5
            and all(not h.get("frames_per_s") for h in window)
        ) or stats.get("iface_state") == "down":
            alerts.append(_alert("no_frames", f"channel {stats.get('channel', '?')}", **names))
    rv = row.get("roster_version")
    if store_roster_version and (rv or 0) < store_roster_version and state != "never":
        alerts.append(_alert("stale_roster", f"v{rv or 0} of v{store_roster_version}", **names))
    drops = [h["dropped"] for h in recent if h.get("dropped") is not None]
    if len(drops) >= 2 and drops[-1] > drops[0]:
        alerts.append(_alert("dropping", f"{drops[-1] - drops[0]} dropped lately", **names))
    temp = stats.get("cpu_temp_c")
    if temp is not None and temp >= HOT_C:
        alerts.append(_alert("hot", f"{temp:.0f} °C", **names))
    if stats.get("update_failed"):
        alerts.append(_alert("update_failed", str(stats["update_failed"])[:160], **names))
    disk = stats.get("disk_free_mb")
    if disk is not None and disk < DISK_LOW_MB:
        alerts.append(_alert("disk_low", f"{disk:.0f} MB free", **names))
    offset = stats.get("clock_offset_s")
    if isinstance(offset, int | float) and abs(offset) > max_skew_s:
        side = "ahead of" if offset > 0 else "behind"
        alerts.append(_alert("clock_skew", f"{span_words(offset)} {side} the bridge's clock"))
    return SensorHealth(
        store_id=row["store_id"],
        sensor_id=row["sensor_id"],
        state=state,
        last_seen=row.get("last_seen"),
        agent_version=row.get("agent_version"),
        roster_version=rv,
        store_roster_version=store_roster_version,
        stats=stats,
        alerts=tuple(alerts),
    )
