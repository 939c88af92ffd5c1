"""Charts as SVG, rendered on the server: bars (single, grouped, stacked), horizontal bars and lines.

Pure functions from data to an SVG string — no JavaScript, no library, no CDN (hospitals run
air-gapped) — following the W3C's accessible SVG practice (SVG-AAM: ``role="img"`` named by its
``<title>`` and ``<desc>``): every bar and point carries a ``<title>`` tooltip with its category,
series and value, and :meth:`Chart.table` gives the same numbers as a table to show beside it
(WCAG 2.1 1.1.1, a text alternative). Colours are the Okabe-Ito palette, distinguishable with the
common colour-vision deficiencies, and line series also differ by marker shape and dash. Styling
uses presentation attributes only, which a strict Content-Security-Policy allows (no ``style``).
All text is escaped; the values are numbers.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

# Okabe & Ito, "Color Universal Design" (2008): the darker ones first, for contrast on white.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
DASHES = ("", "6 3", "2 3", "8 3 2 3")
INK, MUTED, GRID = "#1b1f24", "#4a5560", "#d0d7de"
WIDTH, HEIGHT = 640, 300
FONT = 'system-ui, -apple-system, "Segoe UI", Roboto, sans-serif'


@dataclass(frozen=True)
class Series:
    name: str
    values: tuple[float, ...]


@dataclass(frozen=True)
class Chart:
    """What a chart shows: ``categories`` along one axis, one value per category in each series.
    ``chart_id`` must be unique on the page (it names the SVG's title and description); ``extra``
    series appear in the table only (e.g. the counts behind a rate)."""

    chart_id: str
    title: str
    categories: tuple[str, ...]
    series: tuple[Series, ...]
    category_label: str = ""
    value_label: str = ""
    unit: str = ""
    extra: tuple[Series, ...] = field(default=())

    def __post_init__(self) -> None:
        for series in (*self.series, *self.extra):
            if len(series.values) != len(self.categories):
                raise ValueError(f"series {series.name!r} has {len(series.values)} values for "
                                 f"{len(self.categories)} categories")

    def fmt(self, value: float) -> str:
        return fmt(value) + self.unit

    def table(self) -> tuple[list[str], list[list[str]]]:
        """The text alternative: a header row and one row per category."""
        header = [self.category_label or "", *(s.name for s in (*self.series, *self.extra))]
        rows = [[category, *(self.fmt(s.values[i]) for s in self.series), *(fmt(s.values[i]) for s in self.extra)]
                for i, category in enumerate(self.categories)]
        return header, rows

    def empty(self) -> bool:
        return not self.categories or all(v == 0 for s in self.series for v in s.values)


def fmt(value: float) -> str:
    """``12`` for whole numbers, ``12.5`` otherwise."""
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def nice_scale(top: float, ticks: int = 5) -> tuple[float, float]:
    """The axis maximum (>= ``top``) and its step: 1, 2 or 5 times a power of ten."""
    if top <= 0:
        return float(ticks), 1.0
    raw = top / ticks
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    step = max(step, 1.0) if top >= 1 else step  # counts: no half-message ticks
    return float(math.ceil(top / step) * step), float(step)


def _el(tag: str, attrs: dict[str, object], body: str = "") -> str:
    # Python names to SVG's: class_ -> class, text_anchor -> text-anchor; an empty value is left out.
    rendered = "".join(f' {name.rstrip("_").replace("_", "-")}="{esc(value)}"'
                       for name, value in attrs.items() if value != "")
    return f"<{tag}{rendered}>{body}</{tag}>" if body else f"<{tag}{rendered}/>"


def _text(x: float, y: float, text: str, **attrs: object) -> str:
    return _el("text", {"x": round(x, 1), "y": round(y, 1), **attrs}, esc(text))


def _tip(text: str) -> str:
    return f"<title>{esc(text)}</title>"


def _svg(chart: Chart, kind: str, body: list[str], height: int = HEIGHT, width: int = WIDTH) -> str:
    ids = f"{chart.chart_id}-title {chart.chart_id}-desc"
    desc = (f"{kind} of {chart.value_label or 'values'} by {chart.category_label or 'category'}: "
            f"{len(chart.categories)} categories, {len(chart.series)} series. The table after it has the numbers.")
    head = (f'<title id="{esc(chart.chart_id)}-title">{esc(chart.title)}</title>'
            f'<desc id="{esc(chart.chart_id)}-desc">{esc(desc)}</desc>')
    if chart.empty():
        body = [*body, _text(width / 2, height / 2, "No data in this range", text_anchor="middle", fill=MUTED)]
    attrs = {"xmlns": "http://www.w3.org/2000/svg", "viewBox": f"0 0 {width} {height}", "width": "100%",
             "role": "img", "aria-labelledby": ids, "class": "chart", "data-chart": chart.chart_id,
             "font-family": FONT, "font-size": 12, "fill": INK}
    return _el("svg", attrs, head + "".join(body))


@dataclass(frozen=True)
class _Plot:
    """The plotting area inside the SVG, and the value scale along its height (or width)."""

    left: float
    top: float
    right: float
    bottom: float
    maximum: float
    step: float

    @property
    def width(self) -> float:
        return self.right - self.left

    @property
    def height(self) -> float:
        return self.bottom - self.top

    def y(self, value: float) -> float:
        return self.bottom - self.height * value / self.maximum

    def x(self, value: float) -> float:
        return self.left + self.width * value / self.maximum

    def ticks(self) -> list[float]:
        return [n * self.step for n in range(round(self.maximum / self.step) + 1)]


def _legend(chart: Chart, markers: bool = False, always: bool = False) -> tuple[list[str], float]:
    """Swatches and names along the top, wrapped onto more rows when they do not fit, and where the
    plot may start below them; a single series needs none unless its name is the point."""
    if len(chart.series) < 2 and not (always and chart.series):
        return [], 16.0
    out, x, y = [], 56.0, 0.0
    for n, series in enumerate(chart.series):
        room = 30 + 7 * len(series.name)  # about 7 px a character at 12 px
        if x + room > WIDTH and x > 56:
            x, y = 56.0, y + 18
        colour = PALETTE[n % len(PALETTE)]
        swatch = _marker(n, x + 6, y + 14, colour) if markers else _el(
            "rect", {"x": x, "y": y + 8, "width": 12, "height": 12, "fill": colour})
        out.append(_el("g", {"class": "legend"}, swatch + _text(x + 17, y + 18, series.name)))
        x += room
    return out, y + 34


def _value_axis(plot: _Plot, chart: Chart, horizontal: bool = False) -> list[str]:
    out = []
    for tick in plot.ticks():
        if horizontal:
            x = plot.x(tick)
            out.append(_el("line", {"x1": x, "y1": plot.top, "x2": x, "y2": plot.bottom, "stroke": GRID}))
            out.append(_text(x, plot.bottom + 16, chart.fmt(tick), text_anchor="middle", fill=MUTED))
        else:
            y = plot.y(tick)
            out.append(_el("line", {"x1": plot.left, "y1": y, "x2": plot.right, "y2": y, "stroke": GRID}))
            out.append(_text(plot.left - 6, y + 4, chart.fmt(tick), text_anchor="end", fill=MUTED))
    if chart.value_label and not horizontal:
        out.append(_text(14, plot.top + plot.height / 2, chart.value_label, text_anchor="middle",
                         transform=f"rotate(-90 14 {plot.top + plot.height / 2:.1f})"))
    return out



def _category_axis(plot: _Plot, chart: Chart) -> list[str]:
    """Category labels under the plot, thinned so they never overlap (every bar keeps its tooltip)."""
    count = len(chart.categories)
    every = max(1, math.ceil(count * 56 / plot.width))
    slot = plot.width / max(count, 1)
    out = [_el("line", {"x1": plot.left, "y1": plot.bottom, "x2": plot.right, "y2": plot.bottom, "stroke": INK})]
    for i, category in enumerate(chart.categories):
        if i % every == 0:
            out.append(_text(plot.left + slot * (i + 0.5), plot.bottom + 16, category, text_anchor="middle",
                             class_="category"))
    if chart.category_label:
        out.append(_text(plot.left + plot.width / 2, plot.bottom + 38, chart.category_label, text_anchor="middle"))
    return out


def _scale(values: Sequence[float]) -> tuple[float, float]:
    return nice_scale(max(values, default=0.0))


def bar_chart(chart: Chart, *, stacked: bool = False) -> str:
    """Vertical bars: one per category and series, side by side, or ``stacked`` with the total on top."""
    n = len(chart.series)
    totals = [sum(s.values[i] for s in chart.series) for i in range(len(chart.categories))]
    maximum, step = _scale(totals if stacked else [v for s in chart.series for v in s.values])
    legend, top = _legend(chart, always=stacked)
    plot = _Plot(56, top, WIDTH - 12, HEIGHT - 48, maximum, step)
    body = [*legend, *_value_axis(plot, chart)]
    slot = plot.width / max(len(chart.categories), 1)
    bar = slot * 0.8 / (1 if stacked else max(n, 1))
    label_each = not stacked and bar >= 16  # room for each bar's number above it
    for i, category in enumerate(chart.categories):
        x0, base = plot.left + slot * 0.1 + slot * i, 0.0
        for k, series in enumerate(chart.series):
            value = series.values[i]
            low, high = (base, base + value) if stacked else (0.0, value)
            x = x0 if stacked else x0 + bar * k
            body.append(_el("rect", {"x": round(x, 1), "y": round(plot.y(high), 1), "width": round(bar, 1),
                                     "height": round(plot.y(low) - plot.y(high), 1), "fill": PALETTE[k % 8],
                                     "data_series": series.name, "data_category": category,
                                     "data_value": fmt(value)},
                            _tip(f"{category} · {series.name}: {chart.fmt(value)}")))
            base = high
            if label_each and value:
                body.append(_text(x + bar / 2, plot.y(value) - 4, chart.fmt(value), text_anchor="middle",
                                  class_="value", font_size=11))
        if stacked and slot >= 18 and totals[i]:  # the stack's total above it
            body.append(_text(x0 + slot * 0.4, plot.y(totals[i]) - 4, chart.fmt(totals[i]), text_anchor="middle",
                              class_="value", font_size=11))
    return _svg(chart, "Stacked bar chart" if stacked else "Bar chart", [*body, *_category_axis(plot, chart)])


def hbar_chart(chart: Chart, width: int = 440) -> str:
    """Horizontal bars of the first series (a funnel's stages), the value at each bar's end; the
    ``extra`` series (e.g. each stage's share of the first) are added to the tooltips."""
    series = chart.series[0]
    rows = len(chart.categories)
    height = 24 + 26 * rows + 28
    maximum, step = _scale(series.values)
    plot = _Plot(92, 12, width - 40, 12 + 26 * rows, maximum, step)
    body = _value_axis(plot, chart, horizontal=True)
    for i, category in enumerate(chart.categories):
        value, y = series.values[i], plot.top + 26 * i + 4
        share = "".join(f" · {s.name}: {fmt(s.values[i])}" for s in chart.extra)
        body.append(_text(plot.left - 6, y + 13, category, text_anchor="end", class_="category"))
        body.append(_el("rect", {"x": plot.left, "y": y, "width": round(plot.x(value) - plot.left, 1),
                                 "height": 18, "fill": PALETTE[0], "data_series": series.name,
                                 "data_category": category, "data_value": fmt(value)},
                        _tip(f"{category}: {chart.fmt(value)}{share}")))
        body.append(_text(plot.x(value) + 4, y + 13, chart.fmt(value), class_="value"))
    return _svg(chart, "Horizontal bar chart", body, height, width)


def _marker(n: int, x: float, y: float, colour: str, tip: str = "", **data: object) -> str:
    """One of four shapes per series, so lines differ by more than colour."""
    shape = n % 4
    attrs: dict[str, object] = {"fill": colour, **data}
    if shape == 0:
        return _el("circle", {"cx": round(x, 1), "cy": round(y, 1), "r": 4, **attrs}, tip)
    if shape == 1:
        return _el("rect", {"x": round(x - 4, 1), "y": round(y - 4, 1), "width": 8, "height": 8, **attrs}, tip)
    points = ([(x, y - 5), (x + 5, y + 4), (x - 5, y + 4)] if shape == 2
              else [(x, y - 5), (x + 5, y), (x, y + 5), (x - 5, y)])
    return _el("polygon", {"points": " ".join(f"{px:.1f},{py:.1f}" for px, py in points), **attrs}, tip)


def line_chart(chart: Chart) -> str:
    """One line per series over the categories (days), a marker with a tooltip at every point."""
    maximum, step = _scale([v for s in chart.series for v in s.values])
    legend, top = _legend(chart, markers=True)
    plot = _Plot(56, top, WIDTH - 12, HEIGHT - 48, maximum, step)
    body = [*legend, *_value_axis(plot, chart)]
    slot = plot.width / max(len(chart.categories), 1)
    for k, series in enumerate(chart.series):
        colour = PALETTE[k % len(PALETTE)]
        points = [(plot.left + slot * (i + 0.5), plot.y(v)) for i, v in enumerate(series.values)]
        body.append(_el("polyline", {"points": " ".join(f"{x:.1f},{y:.1f}" for x, y in points), "fill": "none",
                                     "stroke": colour, "stroke_width": 2, "stroke_dasharray": DASHES[k % 4],
                                     "data_series": series.name}))
        for (x, y), category, value in zip(points, chart.categories, series.values, strict=True):
            body.append(_marker(k, x, y, colour, _tip(f"{category} · {series.name}: {chart.fmt(value)}"),
                                data_series=series.name, data_category=category, data_value=fmt(value)))
    return _svg(chart, "Line chart", [*body, *_category_axis(plot, chart)])
