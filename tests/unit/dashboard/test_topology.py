"""The topology picture: positions for a known small input, escaping, an empty project."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from markupsafe import Markup

from yunstack.dashboard.topology import TopologyDevice, TopologyNetwork, bar_x, box_y, topology_svg

NS = "{http://www.w3.org/2000/svg}"
NETS = [TopologyNetwork(id="n1", name="inside", cidrs=("10.0.0.0/24",)),
        TopologyNetwork(id="pub", name="public", external=True)]
ROUTER = TopologyDevice(id="r1", name="edge", kind="router", network_ids=("n1",), gateway_network_id="pub")
SERVER = TopologyDevice(id="s1", name="web", kind="server", network_ids=("n1", "elsewhere"))


def test_bars_are_columns_and_devices_are_rows_to_their_right() -> None:
    assert [bar_x(0), bar_x(1)] == [70, 190] and [box_y(0), box_y(1)] == [64, 108]
    svg = topology_svg(NETS, [ROUTER, SERVER])
    assert isinstance(svg, Markup)
    root = ET.fromstring(str(svg))  # well-formed XML
    assert (root.get("viewBox"), root.get("width"), root.get("height")) == ("0 0 450 162", "450", "162")
    bars = [(g.get("class"), g.find(f"{NS}rect").attrib) for g in root.iter(f"{NS}g")  # type: ignore[union-attr]
            if "network" in g.get("class", "")]
    assert bars == [("network", {"x": "64", "y": "44", "width": "12", "height": "108", "rx": "3"}),
                    ("network external", {"x": "184", "y": "44", "width": "12", "height": "108", "rx": "3"})]
    # the router's row (box 64..94, middle 79): to inside and, dashed and 9 lower, to public; the server's (middle 123)
    # to inside only: a network not in the picture gets no line
    links = [(p.get("class"), p.get("d")) for p in root.iter(f"{NS}path")]
    assert links == [("link", "M70 79H280"), ("link gateway", "M190 88H280"), ("link", "M70 123H280")]
    assert [(c.get("cx"), c.get("cy")) for c in root.iter(f"{NS}circle")] == [("70", "79"), ("190", "88"),
                                                                              ("70", "123")]
    boxes = [(g.get("class"), g.find(f"{NS}rect").get("y")) for g in root.iter(f"{NS}g")  # type: ignore[union-attr]
             if "device" in g.get("class", "")]
    assert boxes == [("device router", "64"), ("device server", "108")]
    titles = [t.text for t in root.iter(f"{NS}title")]
    assert titles == ["Network topology", "inside: 10.0.0.0/24", "public: external", "router edge", "server web"]


def test_the_lines_are_drawn_before_the_bars_so_a_line_passes_behind_a_bar_it_does_not_join() -> None:
    text = str(topology_svg(NETS, [ROUTER]))
    assert text.index("<path") < text.index('<g class="network') < text.index("<circle")


def test_names_are_escaped_and_long_ones_shortened() -> None:
    evil = "<script>alert(1)</script>"
    svg = str(topology_svg([TopologyNetwork(id="n", name=evil)],
                           [TopologyDevice(id="s", name=evil + "&" * 30, kind="server", network_ids=("n",))]))
    assert "<script>" not in svg and "&lt;script&gt;alert(1)&lt;/script&gt;" in svg
    ET.fromstring(svg)
    assert re.search(r">&lt;script&gt;alert\(1\)&lt;…</text>", svg)  # 18 characters, the last an ellipsis


def test_an_empty_project_says_so() -> None:
    svg = topology_svg([], [])
    root = ET.fromstring(str(svg))
    assert [t.text for t in root.iter(f"{NS}text")] == ["no networks yet"]


def test_networks_without_devices_still_have_room_for_their_bars() -> None:
    root = ET.fromstring(str(topology_svg(NETS[:1], [])))
    assert root.get("height") == "138" and not list(root.iter(f"{NS}path"))
