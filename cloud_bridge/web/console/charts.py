"""Tiny server-side SVG charts (no JavaScript, no CDN): line charts over time, stacked bars,
horizontal bars. Each function returns SVG markup that scales to its container's width."""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from markupsafe import Markup

__all__ = ["COLORS", "Series", "line_chart", "stacked_bars", "hbars"]

COLORS = ("#1f5fbf", "#e07b00", "#0a7a2f", "#b42318", "#6941c6", "#667085")
_FONT = 'font-family="system-ui, sans-serif" font-size="11" fill="#475467"'


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    points: Sequence[tuple[float, float | None]]  # (x, y); y None = gap
    color: str = COLORS[0]


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    exp: float = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * exp:
            return m * exp
    return 10 * exp


def _fmt(v: float) -> str:
    return f"{v:.0f}" if v >= 10 or v == int(v) else f"{v:.1f}"


def _clock(ts: float, tz: str | None) -> str:
    zone = ZoneInfo(tz) if tz else UTC
    return datetime.fromtimestamp(ts, zone).strftime("%H:%M")


def _frame(w: int, h: int, title: str) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" role="img" '
        f'aria-label="{html.escape(title)}" preserveAspectRatio="xMinYMin meet">',
        f"<title>{html.escape(title)}</title>",
    ]


def _y_axis(parts: list[str], top: float, left: int, w: int, ph: float, ymax: float) -> None:
    for i in range(5):
        v = ymax * i / 4
        y = top + ph - ph * i / 4
        parts.append(
            f'<line x1="{left}" x2="{w - 6}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e4e7ec"/>'
            f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" {_FONT}>{_fmt(v)}</text>'
        )


def line_chart(
    series: Sequence[Series],
    x_from: float,
    x_to: float,
    title: str,
    width: int = 640,
    height: int = 180,
    tz: str | None = None,
    x_label: Callable[[float], str] | None = None,
    unit: str = "",
) -> Markup:
    """Lines over a time axis from ``x_from`` to ``x_to`` (epoch seconds)."""
    left, top, bottom = 44, 10, 22
    pw, ph = width - left - 8, height - top - bottom
    values = [y for s in series for _, y in s.points if y is not None]
    ymax = _nice_max(max(values, default=0.0))
    span = max(x_to - x_from, 1.0)
    parts = _frame(width, height, title)
    _y_axis(parts, top, left, width, ph, ymax)
    label = x_label or (lambda t: _clock(t, tz))
    for i in range(7):
        t = x_from + span * i / 6
        x = left + pw * i / 6
        parts.append(
            f'<text x="{x:.1f}" y="{height - 6}" text-anchor="middle" {_FONT}>{label(t)}</text>'
        )
    for s in series:
        path: list[str] = []
        for t, y in s.points:
            if y is None or not x_from <= t <= x_to:
                path.append("")
                continue
            x = left + pw * (t - x_from) / span
            yy = top + ph - ph * min(y, ymax) / ymax
            path.append(f"{x:.1f},{yy:.1f}")
        for segment in " ".join(path).split("  "):
            pts = segment.split()
            if len(pts) == 1:
                cx, cy = pts[0].split(",")
                parts.append(f'<circle cx="{cx}" cy="{cy}" r="2" fill="{s.color}"/>')
            elif pts:
                parts.append(
                    f'<polyline fill="none" stroke="{s.color}" stroke-width="1.8" '
                    f'points="{" ".join(pts)}"/>'
                )
    if not values:
        parts.append(
            f'<text x="{left + pw / 2}" y="{top + ph / 2}" text-anchor="middle" {_FONT}>'
            "no data in this period</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def stacked_bars(
    labels: Sequence[str],
    stacks: Sequence[tuple[str, str, Sequence[float]]],
    title: str,
    width: int = 640,
    height: int = 180,
    every: int = 1,
) -> Markup:
    """Stacked bars: ``stacks`` is (name, colour, one value per label); ``every`` n-th label shown."""
    left, top, bottom = 44, 10, 22
    pw, ph = width - left - 8, height - top - bottom
    n = max(len(labels), 1)
    totals = [sum(s[2][i] for s in stacks) for i in range(len(labels))]
    ymax = _nice_max(max(totals, default=0.0))
    parts = _frame(width, height, title)
    _y_axis(parts, top, left, width, ph, ymax)
    slot = pw / n
    bar = max(slot * 0.7, 1.0)
    for i, name in enumerate(labels):
        x = left + slot * i + (slot - bar) / 2
        base: float = top + ph
        tips = []
        for sname, color, values in stacks:
            v = values[i]
            if v <= 0:
                continue
            hgt = ph * v / ymax
            base -= hgt
            tips.append(f"{sname} {_fmt(v)}")
            parts.append(
                f'<rect x="{x:.1f}" y="{base:.1f}" width="{bar:.1f}" height="{hgt:.1f}" '
                f'fill="{color}"><title>{html.escape(name)}: {html.escape(sname)} {_fmt(v)}'
                "</title></rect>"
            )
        if i % every == 0:
            parts.append(
                f'<text x="{x + bar / 2:.1f}" y="{height - 6}" text-anchor="middle" {_FONT}>'
                f"{html.escape(name)}</text>"
            )
    parts.append("</svg>")
    return Markup("".join(parts))


def hbars(
    rows: Sequence[tuple[str, float, str]],
    title: str,
    width: int = 640,
    line: float | None = None,
    line_label: str = "",
    fmt: Callable[[float], str] = _fmt,
) -> Markup:
    """Horizontal bars (label, value, colour), e.g. a funnel; ``line`` draws a reference line."""
    left, row_h = 150, 24
    height = row_h * max(len(rows), 1) + 24
    vmax = _nice_max(max([v for _, v, _ in rows] + [line or 0.0], default=0.0))
    pw = width - left - 70
    parts = _frame(width, height, title)
    for i, (name, value, color) in enumerate(rows):
        y = 6 + i * row_h
        wbar = pw * value / vmax if vmax else 0
        parts.append(
            f'<text x="{left - 6}" y="{y + 15}" text-anchor="end" {_FONT}>{html.escape(name)}</text>'
            f'<rect x="{left}" y="{y + 3}" width="{max(wbar, 0.5):.1f}" height="{row_h - 8}" '
            f'fill="{color}" rx="2"/><text x="{left + wbar + 4:.1f}" y="{y + 15}" {_FONT}>'
            f"{html.escape(fmt(value))}</text>"
        )
    if line is not None:
        x = left + pw * line / vmax
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="2" y2="{height - 16}" stroke="#b42318" '
            f'stroke-dasharray="4 3"/><text x="{x:.1f}" y="{height - 4}" text-anchor="middle" '
            f"{_FONT}>{html.escape(line_label)}</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))
