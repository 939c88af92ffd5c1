"""The console's charts page (README, "Console", charts): the delivery funnel per template and language,
daily volumes, Meta error codes per day, reminder effect and link requests, for a range of UTC days.

Operators and admins only (:data:`adapter.security.roles.OPERATIONS`); the figures are counts, never an
identifier (:mod:`adapter.console.figures`). Each chart is SVG drawn on the server
(:mod:`adapter.console.charts`) with its table beside it, the text alternative of WCAG 2.1 1.1.1. The
range travels in the query string: dates are not PHI, and a GET form needs no CSRF token.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from markupsafe import Markup
from sqlalchemy.engine import Engine
from sqlmodel import Session

from adapter.console import figures
from adapter.console.charts import Chart, Series, bar_chart, hbar_chart, line_chart
from adapter.console.figures import FUNNEL_STAGES, LINK_SERIES, RangeError, Window
from adapter.console.web import Console
from adapter.security.roles import OPERATIONS, Principal, Role
from whatsapp.errors import ERROR_CLASSES

PATH = "/console/charts"
NAV: list[tuple[str, str, frozenset[Role]]] = [("Charts", PATH, frozenset(OPERATIONS))]
DEFAULT_DAYS = 14
PRESETS = (7, 14, 30, 90)
MAX_CODES = 6  # error codes drawn one by one; the rest are summed as "other"


@dataclass(frozen=True)
class Figure:
    """One chart: its SVG and its table (the same numbers)."""

    chart: Chart
    svg: Markup

    @property
    def table(self) -> tuple[list[str], list[list[str]]]:
        return self.chart.table()


@dataclass(frozen=True)
class Panel:
    panel_id: str
    heading: str
    about: str
    figures: list[Figure]


def _draw(chart: Chart, draw: Callable[[Chart], str]) -> Figure:
    return Figure(chart, Markup(draw(chart)))  # noqa: S704 - charts escape every text they draw


def _day(value: date) -> str:
    return f"{value:%m-%d}"


def funnel_panel(rows: Sequence[figures.FunnelRow]) -> Panel:
    """One horizontal bar chart per template and language, each stage's share of the queued in its tooltip."""
    charts = []
    for n, row in enumerate(rows):
        queued = row.counts[0]
        shares = tuple(round(100 * count / queued, 1) if queued else 0.0 for count in row.counts)
        charts.append(_draw(Chart(f"funnel-{n}", f"{row.template} ({row.language or '-'})", FUNNEL_STAGES,
                                  (Series("messages", tuple(float(c) for c in row.counts)),), category_label="stage",
                                  value_label="messages", extra=(Series("% of queued", shares),)), hbar_chart))
    if not charts:
        charts.append(_draw(Chart("funnel-0", "No template messages", FUNNEL_STAGES,
                                  (Series("messages", (0.0,) * len(FUNNEL_STAGES)),), category_label="stage"),
                            hbar_chart))
    return Panel("funnel", "Delivery funnel", "Template messages queued in the range, per template and language: "
                 "how many were sent (accepted by WhatsApp), delivered, read, and answered. An answer counts for "
                 "the last message about that appointment sent before it.", charts)


def volumes_panel(window: Window, days: Sequence[figures.DayVolume]) -> Panel:
    chart = Chart("volumes", "Messages sent per day", tuple(_day(d) for d in window.days()),
                  (Series("sent", tuple(float(d.sent) for d in days)),
                   Series("delivered", tuple(float(d.delivered) for d in days))),
                  category_label="day (UTC)", value_label="messages")
    return Panel("volumes", "Daily volumes", "Messages of every kind sent each day, and how many of them were "
                 "delivered (or read).", [_draw(chart, line_chart)])


# What the service does about each class of Meta error (whatsapp.errors), in a word for the legend.
_KINDS = {"RetryableError": "transient", "RecipientThrottledError": "pair rate",
          "WindowClosedError": "window closed", "UndeliverableError": "undeliverable",
          "ConfigurationError": "configuration", "AccountBlockedError": "account"}


def _code_name(code: int) -> str:
    kind = ERROR_CLASSES.get(code)
    return f"{code} {_KINDS.get(kind.__name__, 'other')}" if kind else str(code)


def errors_panel(window: Window, counts: Sequence[figures.ErrorCount]) -> Panel:
    """Stacked bars per day, one colour per error code (the most frequent ones; the rest as "other")."""
    totals: dict[int, int] = {}
    for item in counts:
        totals[item.code] = totals.get(item.code, 0) + item.count
    ranked = sorted(totals, key=lambda code: (-totals[code], code))
    shown, rest = ranked[:MAX_CODES], set(ranked[MAX_CODES:])
    index = {d: i for i, d in enumerate(window.days())}
    columns = {code: [0.0] * len(index) for code in shown}
    other = [0.0] * len(index)
    for item in counts:
        (other if item.code in rest else columns[item.code])[index[item.day]] += item.count
    series = [Series(_code_name(code), tuple(columns[code])) for code in shown]
    if rest:
        series.append(Series("other", tuple(other)))
    chart = Chart("errors", "Meta error codes per day", tuple(_day(d) for d in window.days()), tuple(series),
                  category_label="day (UTC)", value_label="errors")
    return Panel("errors", "Error codes over time", "Meta error codes of refused sends and of failed delivery "
                 "statuses, per day.", [_draw(chart, lambda c: bar_chart(c, stacked=True))])


def _offset_name(minutes: int) -> str:
    if minutes % 1440 == 0:
        return f"{minutes // 1440} d before"
    return f"{minutes // 60} h before" if minutes % 60 == 0 else f"{minutes} min before"


def reminders_panel(effects: Sequence[figures.ReminderEffect]) -> Panel:
    chart = Chart("reminders", "Answers after each reminder", tuple(_offset_name(e.offset_minutes) for e in effects),
                  (Series("confirmed", tuple(round(100 * e.rate(e.confirmed), 1) for e in effects)),
                   Series("cancelled", tuple(round(100 * e.rate(e.cancelled), 1) for e in effects))),
                  category_label="reminder", value_label="% of reminders sent", unit="%",
                  extra=(Series("reminders sent", tuple(float(e.sent) for e in effects)),
                         Series("confirmations", tuple(float(e.confirmed) for e in effects)),
                         Series("cancellations", tuple(float(e.cancelled) for e in effects))))
    return Panel("reminders", "Reminder effect", "Of the reminders sent in the range, per offset before the "
                 "appointment: the share the patient answered with Confirm or Cancel (before any later reminder).",
                 [_draw(chart, bar_chart)])


def links_panel(window: Window, days: Sequence[figures.LinkDay]) -> Panel:
    chart = Chart("links", "Portal link requests per day", tuple(_day(d) for d in window.days()),
                  tuple(Series(name, tuple(float(d.counts[k]) for d in days)) for k, name in enumerate(LINK_SERIES)),
                  category_label="day (UTC)", value_label="requests")
    return Panel("links", "Link opens", "Requests to the portal links each day: opened (the patient's tap), "
                 "preview (a link preview or the neutral page), refused (expired, revoked, used up) and blocked "
                 "(forged, malformed, rate-limited).", [_draw(chart, lambda c: bar_chart(c, stacked=True))])


def panels(engine: Engine, window: Window) -> list[Panel]:
    """Every figure of the range, read in one database session (call from a worker thread)."""
    with Session(engine) as session:
        return [funnel_panel(figures.funnel(session, window)),
                volumes_panel(window, figures.daily_volumes(session, window)),
                errors_panel(window, figures.error_codes(session, window)),
                reminders_panel(figures.reminder_effect(session, window)),
                links_panel(window, figures.link_opens(session, window))]


def window_of(query: dict[str, str], today: date) -> tuple[Window, str | None]:
    """The range asked for (``days``, or ``from`` and ``to``), or the last :data:`DEFAULT_DAYS` days
    and why the request was not usable."""
    default = Window.last_days(DEFAULT_DAYS, today)
    try:
        if query.get("from") or query.get("to"):
            first = date.fromisoformat(query.get("from") or default.first.isoformat())
            last = date.fromisoformat(query.get("to") or today.isoformat())
            return Window(first, last), None
        if days := query.get("days"):
            return Window.last_days(int(days), today), None
    except RangeError as error:
        return default, f"{error}; showing the last {DEFAULT_DAYS} days."
    except ValueError:
        return default, f"Dates are written YYYY-MM-DD; showing the last {DEFAULT_DAYS} days."
    return default, None


def router(console: Console) -> APIRouter:
    pages = APIRouter(prefix=PATH)
    operators = console.require(*OPERATIONS)

    @pages.get("", response_class=HTMLResponse)
    async def dashboard(request: Request, principal: Principal = Depends(operators)) -> HTMLResponse:
        today = figures.utc_today()
        window, error = window_of(dict(request.query_params), today)
        shown = await asyncio.to_thread(panels, console.engine, window)
        return console.render(request, principal, "charts/dashboard.html", window=window, error=error,
                              panels=shown, presets=PRESETS, today=today,
                              earliest=today - timedelta(days=3650))

    return pages
