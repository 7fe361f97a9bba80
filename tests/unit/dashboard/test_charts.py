"""The SVG line charts: path data for known inputs, an empty chart, a single point, escaping."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from markupsafe import Markup

from yunstack.dashboard.charts import (
    Frame,
    Series,
    legend_layout,
    line_chart,
    nice_ceiling,
    path_data,
    usage_fraction,
    usage_label,
    usage_ring,
)

# A 100 x 100 plot at (10, 10)..(110, 110): x = 10 + time, y = 110 - value (for a top of 100).
F = Frame(width=120, height=160, left=10, right=10, top=10, bottom=50)
NS = "{http://www.w3.org/2000/svg}"


def test_points_map_time_to_x_and_value_to_y_from_the_bottom() -> None:
    assert path_data([(0, 0), (50, 50), (100, 100)], 0, 100, 100, F) == "M10.0 110.0L60.0 60.0L110.0 10.0"


def test_values_outside_zero_to_the_top_are_clipped() -> None:
    assert path_data([(0, -5), (100, 250)], 0, 100, 100, F) == "M10.0 110.0L110.0 10.0"


def test_a_single_instant_is_drawn_in_the_middle() -> None:
    assert path_data([(7, 25)], 7, 7, 100, F) == "M60.0 85.0"


def test_the_value_axis_ends_at_a_round_number() -> None:
    assert [nice_ceiling(v) for v in (0, 0.3, 1, 3, 7, 2048, 3000, 4096)] == [1, 0.5, 1, 5, 10, 2500, 5000, 5000]


def test_a_chart_has_one_path_per_series_and_a_legend_entry_each() -> None:
    svg = line_chart("host a", [Series(label="resident", points=[(0, 10), (100, 40)]),
                                Series(label="physical", points=[(0, 80), (100, 80)], limit=True)],
                     unit="MiB", frame=F)
    assert isinstance(svg, Markup)
    root = ET.fromstring(str(svg))  # well-formed XML
    lines = [p for p in root.iter(f"{NS}path") if "line" in p.get("class", "")]
    # the axis's top is 100 (80 rounded up), so a value v is at y = 110 - v
    assert [(p.get("class"), p.get("d")) for p in lines] == [("line s0", "M10.0 100.0L110.0 70.0"),
                                                             ("line limit s1", "M10.0 30.0L110.0 30.0")]
    texts = [t.text for t in root.iter(f"{NS}text")]
    assert "100" in texts and "MiB" in texts and "00:00:00" in texts and "00:01:40 UTC" in texts
    assert [t for t in texts if t in ("resident", "physical")] == ["resident", "physical"]
    assert len([r for r in root.iter(f"{NS}rect")]) == 2


def test_an_empty_chart_says_so() -> None:
    svg = str(line_chart("nothing", [Series(label="resident", points=[])], frame=F))
    assert "no samples yet" in svg and "<path" not in svg
    ET.fromstring(svg)


def test_a_single_point_is_marked_with_a_dot() -> None:
    root = ET.fromstring(str(line_chart("one", [Series(label="resident", points=[(5, 50)])], frame=F)))
    [dot] = root.iter(f"{NS}circle")
    # in the middle of the time axis, at the value axis's top (50 is its own round ceiling)
    assert (dot.get("cx"), dot.get("cy"), dot.get("class")) == ("60.0", "10.0", "s0")


def test_titles_and_labels_are_escaped() -> None:
    evil = '<script>alert("x")</script>'
    svg = str(line_chart(evil, [Series(label=evil, points=[(0, 1)])], unit="<b>", frame=F))
    assert "<script>" not in svg and "<b>" not in svg
    assert svg.count("&lt;script&gt;") == 4  # the aria-label, <title>, the title text and the legend
    root = ET.fromstring(svg)
    assert root.get("aria-label") == evil


def test_a_legend_wider_than_the_chart_wraps_and_the_chart_grows_to_hold_it() -> None:
    labels = ["resident", "shared by KSM", "ballooned", "swapped"]
    placed = legend_layout(labels, 10, 200)
    assert [row for _, row in placed] == [0, 0, 1, 1]
    assert placed[0] == (10, 0) and placed[2] == (10, 1)
    svg = str(line_chart("t", [Series(label=label, points=[(0, 1)]) for label in labels],
                         frame=Frame(width=210, height=160, left=10, right=10, top=10, bottom=50)))
    assert 'viewBox="0 0 210 174"' in svg  # one more legend row
    root = ET.fromstring(svg)
    assert max(float(r.get("x", 0)) for r in root.iter(f"{NS}rect")) < 200


def test_a_quota_in_words() -> None:
    assert usage_label("instances", 3, 10) == "3 of 10 instances"
    assert usage_label("MiB of RAM", 2048, 51200) == "2,048 of 51,200 MiB of RAM"
    assert usage_label("instances", 3, -1) == "3 instances, no limit"


def test_how_full_a_quota_is() -> None:
    assert [usage_fraction(u, lim) for u, lim in ((0, 10), (3, 10), (12, 10), (0, 0), (4, -1))] == [
        0.0, 0.3, 1.0, 1.0, None]


def test_a_ring_is_filled_as_far_as_the_quota_is_used() -> None:
    root = ET.fromstring(str(usage_ring("instances", 3, 10)))
    assert root.get("aria-label") == "3 of 10 instances"
    track, used = root.iter(f"{NS}circle")
    assert track.get("class") == "track" and used.get("class") == "used"
    assert used.get("stroke-dasharray") == "64.1 213.6"  # 30 % of 2 pi 34
    assert [t.text for t in root.iter(f"{NS}text")] == ["30%"]
    assert "used high" in usage_ring("instances", 8, 10) and "used full" in usage_ring("instances", 10, 10)


def test_an_empty_quota_draws_no_arc_and_an_unlimited_one_a_dashed_ring() -> None:
    assert 'class="used' not in usage_ring("routers", 0, 10)
    root = ET.fromstring(str(usage_ring("instances", 4, -1)))
    assert [c.get("class") for c in root.iter(f"{NS}circle")] == ["track unlimited"]
    assert [t.text for t in root.iter(f"{NS}text")] == ["4"]
    assert root.get("aria-label") == "4 instances, no limit"


def test_a_rings_label_is_escaped() -> None:
    svg = str(usage_ring("<b>", 1, 2))
    assert "<b>" not in svg and "&lt;b&gt;" in svg
