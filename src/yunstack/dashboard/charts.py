"""Line charts over time, and rings for a quota's use, as SVG markup drawn here in Python: no chart
library, no script.

The page embeds the ``<svg>`` as is; the CSP allows no inline style, so every colour is a class
(``s0``..``s7``, one per series in order) that the stylesheet paints.  Every text (title, labels)
is escaped: a server's name may be anything.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape

from markupsafe import Markup

COLOURS = 8  # classes s0..s7 in dashboard.css; more series reuse them in turn
LEGEND_ROW = 14  # each further row of the legend makes the chart this much taller


@dataclass(frozen=True, kw_only=True)
class Series:
    """One line: ``points`` are (unix time, value), oldest first; ``limit`` draws it dashed (a
    capacity or a size, not a quantity that moves)."""

    label: str
    points: Sequence[tuple[float, float]]
    limit: bool = False


@dataclass(frozen=True, kw_only=True)
class Frame:
    """The chart's size in SVG units and the plot's margins inside it."""

    width: int = 480
    height: int = 200
    left: int = 60  # the value labels
    right: int = 10
    top: int = 24  # the title
    bottom: int = 44  # the time labels, then the legend


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is at least ``value`` (1 for nothing)."""
    if value <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        if value <= step * power * (1 + 1e-9):
            return step * power
    return 10.0 * power  # not reached: 10 x power covers every value in the decade


def _number(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 or value == int(value) else f"{value:,.1f}"


def _clock(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%H:%M:%S")


def path_data(points: Sequence[tuple[float, float]], t0: float, t1: float, top: float, frame: Frame) -> str:
    """SVG path data for ``points`` in a plot spanning times ``t0``..``t1`` and values 0..``top``.

    A single instant (``t0 == t1``) is drawn at the plot's middle; values above ``top`` are clipped.
    """
    x0, x1 = frame.left, frame.width - frame.right
    y0, y1 = frame.top, frame.height - frame.bottom
    parts = []
    for i, (t, v) in enumerate(points):
        x = (x0 + x1) / 2 if t1 <= t0 else x0 + (t - t0) / (t1 - t0) * (x1 - x0)
        y = y1 - min(max(v, 0.0), top) / top * (y1 - y0)
        parts.append(f"{'M' if i == 0 else 'L'}{x:.1f} {y:.1f}")
    return "".join(parts)


def legend_layout(labels: Sequence[str], x0: float, x1: float) -> list[tuple[float, int]]:
    """Where each legend entry starts (x, row), filling rows from ``x0`` to ``x1`` (text width
    estimated at 6.5 units a character, an 11-unit font's average)."""
    placed: list[tuple[float, int]] = []
    x, row = x0, 0
    for label in labels:
        width = 24 + 6.5 * len(label)
        if x > x0 and x + width > x1:
            x, row = x0, row + 1
        placed.append((x, row))
        x += width
    return placed


def line_chart(title: str, series: Sequence[Series], *, unit: str = "", frame: Frame = Frame()) -> Markup:
    """An ``<svg>`` with one line per series, the value axis from 0, the time axis from the first
    sample to the last (UTC), and a legend; "no samples yet" when no series has a point."""
    w, h = frame.width, frame.height
    x0, x1, y0, y1 = frame.left, w - frame.right, frame.top, h - frame.bottom
    legend = legend_layout([s.label for s in series], x0, x1)
    rows = 1 + max((row for _, row in legend), default=0)
    out = [f'<svg class="chart" viewBox="0 0 {w} {h + LEGEND_ROW * (rows - 1)}" role="img"'
           f' aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
           f"<title>{escape(title)}</title>",
           f'<text class="title" x="{x0}" y="15">{escape(title)}</text>']
    points = [p for s in series for p in s.points]
    if not points:
        out.append(f'<text x="{(x0 + x1) / 2:.0f}" y="{(y0 + y1) / 2:.0f}" text-anchor="middle">no samples yet</text>')
        out.append("</svg>")
        return Markup("".join(out))  # noqa: S704 - every text in it went through escape()
    t0, t1 = min(t for t, _ in points), max(t for t, _ in points)
    top = nice_ceiling(max(v for _, v in points))
    out += [f'<path class="axis" d="M{x0} {y0}V{y1}H{x1}"/>',
            f'<path class="axis" d="M{x0} {(y0 + y1) / 2:.1f}H{x1}"/>',
            f'<text x="{x1}" y="15" text-anchor="end">{escape(unit)}</text>',
            f'<text x="{x0 - 4}" y="{y0 + 4}" text-anchor="end">{_number(top)}</text>',
            f'<text x="{x0 - 4}" y="{(y0 + y1) / 2 + 4:.1f}" text-anchor="end">{_number(top / 2)}</text>',
            f'<text x="{x0 - 4}" y="{y1 + 4}" text-anchor="end">0</text>',
            f'<text x="{x0}" y="{y1 + 14}">{_clock(t0)}</text>',
            f'<text x="{x1}" y="{y1 + 14}" text-anchor="end">{_clock(t1)} UTC</text>']
    for i, (s, (legend_x, row)) in enumerate(zip(series, legend, strict=True)):
        colour = f"s{i % COLOURS}"
        if s.points:
            kind = "line limit" if s.limit else "line"
            out.append(f'<path class="{kind} {colour}" d="{path_data(s.points, t0, t1, top, frame)}"/>')
            if len(s.points) == 1:  # a path of one point draws nothing: mark it
                x, y = path_data(s.points, t0, t1, top, frame)[1:].split()
                out.append(f'<circle class="{colour}" cx="{x}" cy="{y}" r="2.5"/>')
        legend_y = h - 14 + LEGEND_ROW * row
        out.append(f'<rect class="{colour}" x="{legend_x:.0f}" y="{legend_y}" width="10" height="10"/>')
        out.append(f'<text x="{legend_x + 14:.0f}" y="{legend_y + 9}">{escape(s.label)}</text>')
    out.append("</svg>")
    return Markup("".join(out))  # noqa: S704 - every text in it went through escape()


RING = 34  # the usage ring's radius in SVG units; its box is 100 x 100


def usage_label(resource: str, used: int, limit: int) -> str:
    """What a quota's use is, in words: "3 of 10 instances", or "3 instances, no limit" (-1)."""
    return f"{used:,} {resource}, no limit" if limit < 0 else f"{used:,} of {limit:,} {resource}"


def usage_fraction(used: int, limit: int) -> float | None:
    """How full a quota is, 0..1 (None: no limit); a limit of 0 leaves no room, so it is full."""
    if limit < 0:
        return None
    return 1.0 if limit == 0 else min(max(used, 0) / limit, 1.0)


def usage_ring(resource: str, used: int, limit: int) -> Markup:
    """An ``<svg>`` ring filled as far as the quota is used, its percentage inside (the number used
    and a dashed empty ring when there is no limit); ``high`` from 80 % and ``full`` at 100 % are
    classes the stylesheet colours."""
    fraction = usage_fraction(used, limit)
    circumference = 2 * math.pi * RING
    label = escape(usage_label(resource, used, limit))
    out = [f'<svg class="ring" viewBox="0 0 100 100" role="img" aria-label="{label}"'
           f' xmlns="http://www.w3.org/2000/svg"><title>{label}</title>']
    if fraction is None:
        out.append(f'<circle class="track unlimited" cx="50" cy="50" r="{RING}"/>')
        out.append(f'<text x="50" y="55" text-anchor="middle">{used:,}</text>')
    else:
        level = " full" if fraction >= 1 else " high" if fraction >= 0.8 else ""
        out.append(f'<circle class="track" cx="50" cy="50" r="{RING}"/>')
        if fraction > 0:  # from twelve o'clock, clockwise
            out.append(f'<circle class="used{level}" cx="50" cy="50" r="{RING}" transform="rotate(-90 50 50)"'
                       f' stroke-dasharray="{fraction * circumference:.1f} {circumference:.1f}"/>')
        out.append(f'<text x="50" y="55" text-anchor="middle">{math.floor(fraction * 100)}%</text>')
    out.append("</svg>")
    return Markup("".join(out))  # noqa: S704 - its only text went through escape()
