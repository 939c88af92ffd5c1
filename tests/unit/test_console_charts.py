"""The SVG charts parse as XML, draw one bar or point per value with the data's labels and values in
their tooltips, escape every text, and carry a title, a description and a table alternative."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from adapter.console.charts import PALETTE, Chart, Series, bar_chart, hbar_chart, line_chart, nice_scale

NS = {"svg": "http://www.w3.org/2000/svg"}


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # our own output, parsed to check it is well-formed


def marks(root: ET.Element) -> list[ET.Element]:
    return [element for element in root.iter() if "data-value" in element.attrib]


def tips(root: ET.Element) -> list[str]:
    return [element.findtext("svg:title", namespaces=NS) or "" for element in marks(root)]


DAYS = Chart("volumes", "Messages sent per day", ("03-01", "03-02", "03-03"),
             (Series("sent", (4.0, 0.0, 12.0)), Series("delivered", (3.0, 0.0, 9.0))),
             category_label="day (UTC)", value_label="messages")


def test_grouped_bars_one_per_value_with_their_labels() -> None:
    root = parse(bar_chart(DAYS))
    assert root.attrib["role"] == "img"
    assert root.findtext("svg:title", namespaces=NS) == "Messages sent per day"
    assert "3 categories, 2 series" in (root.findtext("svg:desc", namespaces=NS) or "")
    bars = marks(root)
    assert [(b.attrib["data-category"], b.attrib["data-series"], b.attrib["data-value"]) for b in bars] == [
        ("03-01", "sent", "4"), ("03-01", "delivered", "3"), ("03-02", "sent", "0"), ("03-02", "delivered", "0"),
        ("03-03", "sent", "12"), ("03-03", "delivered", "9")]
    assert tips(root)[0] == "03-01 · sent: 4"
    assert {b.attrib["fill"] for b in bars} == set(PALETTE[:2])
    assert [t.text for t in root.iter("{http://www.w3.org/2000/svg}text") if t.get("class") == "category"] == [
        "03-01", "03-02", "03-03"]
    values = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text") if t.get("class") == "value"]
    assert values == ["4", "3", "12", "9"]  # each bar's number above it; none over an empty bar
    heights = [float(b.attrib["height"]) for b in bars]
    assert heights[4] == max(heights) and heights[2] == 0 and heights[0] == pytest.approx(heights[4] / 3, abs=0.2)


def test_stacked_bars_stack_and_label_the_totals() -> None:
    chart = Chart("links", "Link requests", ("d1", "d2"), (Series("opened", (2.0, 0.0)), Series("preview", (3.0, 1.0))))
    root = parse(bar_chart(chart, stacked=True))
    bars = marks(root)
    assert len(bars) == 4
    opened, preview = bars[0], bars[1]
    # The second series sits on top of the first: its bottom edge is the first's top edge.
    assert float(preview.attrib["y"]) + float(preview.attrib["height"]) == pytest.approx(float(opened.attrib["y"]),
                                                                                         abs=0.2)
    values = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text") if t.get("class") == "value"]
    assert values == ["5", "1"]


def test_horizontal_bars_show_each_stage_and_value() -> None:
    stages = ("queued", "sent", "delivered", "read", "confirmed")
    chart = Chart("funnel-0", "appointment_confirmation (en_US)", stages, (Series("messages", (5, 4, 3, 1, 1)),),
                  extra=(Series("% of queued", (100, 80, 60, 20, 20)),))
    root = parse(hbar_chart(chart))
    bars = marks(root)
    assert [b.attrib["data-category"] for b in bars] == list(stages)
    assert [b.attrib["data-value"] for b in bars] == ["5", "4", "3", "1", "1"]
    assert tips(root)[1] == "sent: 4 · % of queued: 80"
    widths = [float(b.attrib["width"]) for b in bars]
    assert widths == sorted(widths, reverse=True) and widths[0] > 0
    assert chart.table() == (["", "messages", "% of queued"],
                             [["queued", "5", "100"], ["sent", "4", "80"], ["delivered", "3", "60"],
                              ["read", "1", "20"], ["confirmed", "1", "20"]])


def test_lines_have_a_marker_per_point_and_differ_by_shape_and_dash() -> None:
    root = parse(line_chart(DAYS))
    lines = list(root.iter("{http://www.w3.org/2000/svg}polyline"))
    assert [line.attrib["data-series"] for line in lines] == ["sent", "delivered"]
    assert len(lines[0].attrib["points"].split()) == 3
    assert "stroke-dasharray" not in lines[0].attrib and lines[1].attrib["stroke-dasharray"]
    points = marks(root)
    assert [p.attrib["data-value"] for p in points] == ["4", "0", "12", "3", "0", "9"]
    assert {p.tag.split("}")[1] for p in points} == {"circle", "rect"}


def test_all_text_is_escaped() -> None:
    hostile = '<script>alert("x")</script> & \'q\''
    chart = Chart('id"x', hostile, (hostile,), (Series(hostile, (1.0,)),), category_label=hostile, value_label=hostile)
    for svg in (bar_chart(chart), hbar_chart(chart), line_chart(chart)):
        assert "<script>" not in svg
        root = parse(svg)
        assert root.findtext("svg:title", namespaces=NS) == hostile
        assert marks(root)[0].attrib["data-category"] == hostile


def test_a_stacked_chart_names_even_a_single_series() -> None:
    root = parse(bar_chart(Chart("errors", "Errors", ("d1",), (Series("131026 undeliverable", (1.0,)),)), stacked=True))
    legend = [t.text for g in root.iter("{http://www.w3.org/2000/svg}g") if g.get("class") == "legend"
              for t in g.iter("{http://www.w3.org/2000/svg}text")]
    assert legend == ["131026 undeliverable"]


def test_a_long_legend_wraps_inside_the_chart_and_the_plot_starts_below_it() -> None:
    names = [f"{131000 + n} undeliverable" for n in range(7)]
    root = parse(bar_chart(Chart("errors", "Errors", ("d1",), tuple(Series(name, (1.0,)) for name in names)),
                           stacked=True))
    swatches = [r for g in root.iter("{http://www.w3.org/2000/svg}g") if g.get("class") == "legend"
                for r in g.iter("{http://www.w3.org/2000/svg}rect")]
    assert len(swatches) == 7 and max(float(r.attrib["x"]) for r in swatches) < 640 - 100
    rows = sorted({float(r.attrib["y"]) for r in swatches})
    assert len(rows) > 1
    top_of_bars = min(float(b.attrib["y"]) for b in marks(root))
    assert top_of_bars > rows[-1] + 12


def test_an_empty_chart_says_so_and_still_parses() -> None:
    chart = Chart("errors", "Errors", ("d1", "d2"), (Series("131026", (0, 0)),))
    root = parse(bar_chart(chart))
    assert any(t.text == "No data in this range" for t in root.iter("{http://www.w3.org/2000/svg}text"))
    assert parse(bar_chart(Chart("none", "Nothing", (), ())))


def test_rates_carry_their_unit_and_the_counts_go_to_the_table() -> None:
    chart = Chart("reminders", "Reminder effect", ("2 d before",), (Series("confirmed", (50.0,)),), unit="%",
                  extra=(Series("reminders sent", (2,)),))
    assert tips(parse(bar_chart(chart))) == ["2 d before · confirmed: 50%"]
    assert chart.table() == (["", "confirmed", "reminders sent"], [["2 d before", "50%", "2"]])


def test_scales_are_round_and_cover_the_data() -> None:
    assert nice_scale(0) == (5.0, 1.0)
    assert nice_scale(3) == (3.0, 1.0)
    assert nice_scale(12) == (15.0, 5.0)
    assert nice_scale(100) == (100.0, 20.0)
    assert nice_scale(0.4) == pytest.approx((0.4, 0.1))
    with pytest.raises(ValueError, match="values for"):
        Chart("bad", "Bad", ("a", "b"), (Series("s", (1.0,)),))


def test_the_page_keeps_the_six_most_frequent_error_codes_and_sums_the_rest() -> None:
    from datetime import date

    from adapter.console.chart_pages import errors_panel
    from adapter.console.figures import ErrorCount, Window

    window = Window(date(2026, 3, 1), date(2026, 3, 2))
    counts = [ErrorCount(date(2026, 3, 1), 131000 + n, 10 - n) for n in range(8)]
    counts.append(ErrorCount(date(2026, 3, 2), 131007, 1))
    [figure] = errors_panel(window, counts).figures
    names = [s.name for s in figure.chart.series]
    assert names[0] == "131000 transient" and names[-1] == "other" and len(names) == 7
    assert figure.chart.series[-1].values == (4.0 + 3.0, 1.0)  # 131006 (4) and 131007 (3, then 1)


def test_the_page_reads_its_range_or_says_why_not() -> None:
    from datetime import date

    from adapter.console.chart_pages import window_of

    today = date(2026, 3, 31)
    assert window_of({}, today)[0].first == date(2026, 3, 18)
    assert window_of({"days": "7"}, today)[0].first == date(2026, 3, 25)
    window, error = window_of({"from": "2026-03-02", "to": "2026-03-04"}, today)
    assert (window.first, window.last, error) == (date(2026, 3, 2), date(2026, 3, 4), None)
    assert "YYYY-MM-DD" in (window_of({"from": "yesterday"}, today)[1] or "")
    assert "longer than 92 days" in (window_of({"days": "400"}, today)[1] or "")
