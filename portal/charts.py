"""Server-side SVG bar charts for the dashboard (no JavaScript: the Content-Security-Policy forbids inline scripts).

    series = daily_series(counts_by_day, start, end)          # every day from start to end, missing days as 0
    {{ chart }}  where  chart = bar_chart_svg(series, title="Devices registered per day")

`bar_chart_svg` draws one bar per day. It fills gaps itself between the first and the last day it is given, so a
chart never hides a quiet day; pass `daily_series(...)` to show a fixed period including empty days at either end.

The SVG has a `viewBox` and no fixed size, so it scales with its container: give it `width: 100%; height: auto` in
the stylesheet. Colours come from `currentColor`; the stylesheet can override them through the classes `chart`,
`chart-bar`, `chart-grid`, `chart-label` and `chart-empty`. Every text put into it is escaped, and the result is a
`SafeString` for templates.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

EMPTY_TEXT = "No devices registered in this period"

# Room for the axis labels around the plot, in viewBox units (11px text).
_TOP = 10
_RIGHT = 24  # half a date label, so the label under the last bar is not cut off
_BOTTOM = 24
_CHAR_WIDTH = 7  # rough width of a digit at font-size 11, to size the y-axis label column
_LABEL_WIDTH = 48  # room one x-axis date label needs
_MAX_BAR_WIDTH = 40  # a week of data should not look like a few slabs
# Gridline steps: 1, 2, 5, 10, 20, 25, 50, 100, ... Steps like 2.5 only from 25 up, since counts are whole.
_STEP_FACTORS = (1, 2, 2.5, 5)
# x-axis labels every Nth day, counting back from the last day: daily, weekly, then multiples of weeks.
_LABEL_EVERY = (1, 7, 14, 28, 56, 91, 182, 364)


def daily_series(
    counts: Mapping[datetime.date, int], start: datetime.date, end: datetime.date
) -> list[tuple[datetime.date, int]]:
    """One (day, count) pair for every day from `start` to `end` inclusive, 0 where `counts` has none."""
    days = (end - start).days + 1
    return [(day, counts.get(day, 0)) for day in (start + datetime.timedelta(days=n) for n in range(days))]


def bar_chart_svg(
    points: Sequence[tuple[datetime.date, int]],
    *,
    title: str,
    width: int = 720,
    height: int = 220,
    unit: tuple[str, str] = ("device", "devices"),
    empty_text: str = EMPTY_TEXT,
) -> SafeString:
    """A bar chart of daily counts as an inline SVG element.

    `points` need not be sorted or complete (one count per day; counts are not negative). `unit` is the singular
    and plural noun used in each bar's tooltip ("2026-11-03: 1,234 devices"). With no points, or only zeros, the
    chart is a box saying `empty_text`.
    """
    by_day = dict(points)
    series = daily_series(by_day, min(by_day), max(by_day)) if by_day else []
    if any(count < 0 for _, count in series):
        raise ValueError("bar_chart_svg draws counts, which are never negative")
    total = sum(count for _, count in series)
    period = f"{series[0][0].isoformat()} to {series[-1][0].isoformat()}" if series else ""
    if len(series) == 1:
        period = series[0][0].isoformat()

    if total == 0:
        label = f"{title}, {period}: {empty_text}" if period else f"{title}: {empty_text}"
        body = [
            f'<text class="chart-label chart-empty" x="{width / 2:g}" y="{height / 2:g}" text-anchor="middle" '
            f'dominant-baseline="middle" fill="currentColor" font-size="14">{escape(empty_text)}</text>'
        ]
        return _svg(width, height, label, body)

    ticks = _ticks(max(count for _, count in series))
    left = max(len(f"{tick:,}") for tick in ticks) * _CHAR_WIDTH + 10
    plot_width = width - left - _RIGHT
    plot_height = height - _TOP - _BOTTOM
    bottom = _TOP + plot_height

    def y(value: int) -> float:
        return bottom - value / ticks[-1] * plot_height

    body = []
    for tick in ticks:
        body.append(
            f'<line class="chart-grid" x1="{left}" x2="{width - _RIGHT}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" '
            'stroke="currentColor" stroke-opacity="0.2"/>'
        )
        body.append(
            f'<text class="chart-label" x="{left - 6}" y="{y(tick):.1f}" text-anchor="end" '
            f'dominant-baseline="middle" fill="currentColor" font-size="11">{tick:,}</text>'
        )

    slot = plot_width / len(series)
    bar_width = min(slot * 0.8, _MAX_BAR_WIDTH)
    every = next((n for n in _LABEL_EVERY if len(series) / n * _LABEL_WIDTH <= plot_width), _LABEL_EVERY[-1])
    for index, (day, count) in enumerate(series):
        centre = left + slot * (index + 0.5)
        noun = unit[0] if count == 1 else unit[1]
        # Zero days get a bar of height 0 too, so every day in the period has its element and tooltip text.
        body.append(
            f'<rect class="chart-bar" x="{centre - bar_width / 2:.2f}" y="{y(count):.1f}" width="{bar_width:.2f}" '
            f'height="{bottom - y(count):.1f}" fill="currentColor">'
            f"<title>{escape(day.isoformat())}: {count:,} {escape(noun)}</title></rect>"
        )
        # Counted back from the last day, so the latest day always has its label.
        if (len(series) - 1 - index) % every == 0:
            body.append(
                f'<text class="chart-label" x="{centre:.1f}" y="{bottom + 16}" text-anchor="middle" '
                f'fill="currentColor" font-size="11">{escape(f"{day.day} {day:%b}")}</text>'
            )

    label = f"{title}, {period}: {total:,} in total"
    return _svg(width, height, label, body)


def _svg(width: int, height: int, label: str, body: list[str]) -> SafeString:
    return mark_safe(  # noqa: S308 -- every text in `label` and `body` was escaped above
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(label)}">' + "".join(body) + "</svg>"
    )


def _ticks(highest: int) -> list[int]:
    """3 to 5 round gridline values from 0 up to at least `highest` (which is more than 0)."""
    magnitude = 1
    while True:
        for factor in _STEP_FACTORS:
            step = factor * magnitude
            if step != int(step):
                continue
            # At least two steps, so a chart of ones still shows 0, 1 and 2 instead of a lone line at the top.
            steps = max(2, -(-highest // int(step)))
            if steps <= 4:
                return [int(step) * n for n in range(steps + 1)]
        magnitude *= 10
