"""The project's network topology as SVG markup, laid out here in Python (no script, as for charts.py).

Each network is a vertical bar, in the order given, its name on top (external ones marked); each
router and server is a box in a row of its own to the right of the bars, joined by a horizontal
line to every network it has a port on (a router's gateway line dashed, a little lower).  A line passes behind
the bars it does not join; a dot marks where it does.  Colours are classes the stylesheet paints
(the CSP allows no inline style); every name is escaped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

LEFT = 10  # the picture's margin
COLUMN = 120  # each network's column
HEAD = 44  # the networks' names above the bars
BAR = 12  # a bar's width
GAP = 30  # between the last bar and the boxes
BOX_W, BOX_H = 160, 30
ROW = 44  # each box's row
GATEWAY_DROP = 9  # a router's gateway line, below the middle of its box
FOOT = 10


@dataclass(frozen=True, kw_only=True)
class TopologyNetwork:
    id: str
    name: str
    external: bool = False
    cidrs: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class TopologyDevice:
    """A router or a server: the networks it has ports on; a router's external gateway apart."""

    id: str
    name: str
    kind: str  # "router" or "server"
    network_ids: tuple[str, ...] = ()
    gateway_network_id: str = ""


def _short(text: str, most: int) -> str:
    return text if len(text) <= most else text[: most - 1] + "…"


def bar_x(index: int) -> float:
    """The centre of network ``index``'s bar."""
    return LEFT + COLUMN * index + COLUMN / 2


def box_y(row: int) -> int:
    """The top of device ``row``'s box."""
    return HEAD + 20 + ROW * row


def topology_svg(networks: Sequence[TopologyNetwork], devices: Sequence[TopologyDevice]) -> Markup:
    """An ``<svg>`` of ``networks`` and the ``devices`` joined to them; a device's ids of networks
    not in ``networks`` are left out (no line to nowhere)."""
    if not networks and not devices:
        return Markup('<svg class="topology" viewBox="0 0 300 60" role="img" aria-label="No networks"'
                      ' xmlns="http://www.w3.org/2000/svg"><title>No networks</title>'
                      '<text x="150" y="34" text-anchor="middle">no networks yet</text></svg>')
    column = {n.id: i for i, n in enumerate(networks)}
    boxes_x = LEFT + COLUMN * len(networks) + GAP
    width = boxes_x + BOX_W + LEFT
    height = max(box_y(len(devices)), box_y(1) + 20) + FOOT
    bottom = height - FOOT
    links: list[str] = []
    dots: list[str] = []
    boxes: list[str] = []
    for row, d in enumerate(devices):
        y = box_y(row)
        middle = y + BOX_H / 2
        # The gateway's line runs lower in the row: on the interfaces' line it would be hidden
        # wherever an interface's network lies further left.
        joined = [(nid, "link", middle) for nid in d.network_ids] + (
            [(d.gateway_network_id, "link gateway", middle + GATEWAY_DROP)] if d.gateway_network_id else [])
        for nid, kind, line_y in joined:
            if nid not in column:
                continue
            x = bar_x(column[nid])
            links.append(f'<path class="{kind}" d="M{x:.0f} {line_y:.0f}H{boxes_x}"/>')
            dots.append(f'<circle class="{kind}" cx="{x:.0f}" cy="{line_y:.0f}" r="4"/>')
        name = d.name or d.id
        boxes.append(f'<g class="device {escape(d.kind)}"><title>{escape(d.kind)} {escape(name)}</title>'
                     f'<rect x="{boxes_x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="4"/>'
                     f'<text x="{boxes_x + 8}" y="{y + 13}">{escape(_short(name, 24))}</text>'
                     f'<text class="kind" x="{boxes_x + 8}" y="{y + 25}">{escape(d.kind)}</text></g>')
    bars: list[str] = []
    for i, n in enumerate(networks):
        x = bar_x(i)
        name = n.name or n.id
        about = ", ".join((*n.cidrs, "external")) if n.external else ", ".join(n.cidrs)
        kind = "network external" if n.external else "network"
        bars.append(f'<g class="{kind}"><title>{escape(name)}{": " + escape(about) if about else ""}</title>'
                    f'<rect x="{x - BAR / 2:.0f}" y="{HEAD}" width="{BAR}" height="{bottom - HEAD}" rx="3"/>'
                    f'<text x="{x:.0f}" y="16" text-anchor="middle">{escape(_short(name, 18))}</text>'
                    f'<text class="kind" x="{x:.0f}" y="32" text-anchor="middle">'
                    f'{escape(_short(about, 20))}</text></g>')
    out = [f'<svg class="topology" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img"'
           ' aria-label="Network topology" xmlns="http://www.w3.org/2000/svg"><title>Network topology</title>',
           *links, *bars, *dots, *boxes, "</svg>"]
    return Markup("".join(out))  # noqa: S704 - every name in it went through escape()
