from __future__ import annotations

import datetime
import xml.etree.ElementTree as ET

import pytest
from django.utils.safestring import SafeString

from portal.charts import EMPTY_TEXT, bar_chart_svg, daily_series

NS = "{http://www.w3.org/2000/svg}"
DAY = datetime.date(2026, 10, 22)


def day(n: int) -> datetime.date:
    return DAY + datetime.timedelta(days=n)


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)  # noqa: S314 -- our own output
    assert root.tag == f"{NS}svg"
    return root


def bars(root: ET.Element) -> list[ET.Element]:
    return [rect for rect in root.iter(f"{NS}rect") if rect.get("class") == "chart-bar"]


def texts(root: ET.Element, css_class: str = "chart-label") -> list[str]:
    return [text.text or "" for text in root.iter(f"{NS}text") if css_class in text.get("class", "").split()]


def month() -> list[tuple[datetime.date, int]]:
    return [(day(n), n * 40) for n in range(31)]


# --- daily_series -------------------------------------------------------------------------------------------


def test_daily_series_fills_missing_days_with_zero() -> None:
    series = daily_series({day(1): 5, day(3): 7, day(9): 1}, day(0), day(4))
    assert series == [(day(0), 0), (day(1), 5), (day(2), 0), (day(3), 7), (day(4), 0)]


def test_daily_series_of_one_day_and_of_none() -> None:
    assert daily_series({}, day(0), day(0)) == [(day(0), 0)]
    assert daily_series({day(0): 3}, day(1), day(0)) == []


# --- bar_chart_svg ------------------------------------------------------------------------------------------


def test_it_is_a_safe_well_formed_svg_that_scales() -> None:
    svg = bar_chart_svg(month(), title="Devices registered per day")
    assert isinstance(svg, SafeString)
    root = parse(svg)
    assert root.get("viewBox") == "0 0 720 220"
    assert root.get("width") is None  # sized by the stylesheet, so it scales with the page
    assert root.get("role") == "img"
    assert root.get("aria-label") == "Devices registered per day, 2026-10-22 to 2026-11-21: 18,600 in total"
    assert "<script" not in svg


def test_it_draws_one_bar_with_a_title_per_day() -> None:
    root = parse(bar_chart_svg(month(), title="Devices"))
    drawn = bars(root)
    assert len(drawn) == 31
    titles = [bar.findtext(f"{NS}title") for bar in drawn]
    assert titles[0] == "2026-10-22: 0 devices"
    assert titles[26] == "2026-11-17: 1,040 devices"
    assert all(bar.get("fill") == "currentColor" for bar in drawn)
    heights = [float(bar.get("height", "")) for bar in drawn]
    assert heights[0] == 0
    assert heights == sorted(heights)


def test_bar_titles_use_the_singular_for_one() -> None:
    root = parse(bar_chart_svg([(day(0), 1), (day(1), 2)], title="Devices"))
    assert [bar.findtext(f"{NS}title") for bar in bars(root)] == ["2026-10-22: 1 device", "2026-10-23: 2 devices"]


def test_it_fills_gaps_between_the_first_and_last_day() -> None:
    # Unsorted, with gaps: every day from the first to the last gets a bar.
    root = parse(bar_chart_svg([(day(6), 3), (day(0), 1), (day(2), 5)], title="Devices"))
    titles = [bar.findtext(f"{NS}title") for bar in bars(root)]
    assert len(titles) == 7
    assert titles[1] == "2026-10-23: 0 devices"
    assert root.get("aria-label") == "Devices, 2026-10-22 to 2026-10-28: 9 in total"


@pytest.mark.parametrize(
    ("highest", "expected"),
    [
        (1000, ["0", "250", "500", "750", "1,000"]),
        (1234, ["0", "500", "1,000", "1,500"]),
        (12_345, ["0", "5,000", "10,000", "15,000"]),
        (7, ["0", "2", "4", "6", "8"]),
        (1, ["0", "1", "2"]),
    ],
)
def test_gridlines_have_round_values_with_thousands_separators(highest: int, expected: list[str]) -> None:
    root = parse(bar_chart_svg([(day(0), highest // 2), (day(1), highest)], title="Devices"))
    gridlines = [line for line in root.iter(f"{NS}line") if line.get("class") == "chart-grid"]
    assert len(gridlines) == len(expected)
    assert 3 <= len(gridlines) <= 5
    labels = texts(root)
    assert labels[: len(expected)] == expected
    # The top gridline is at or above the tallest bar.
    top = min(float(line.get("y1", "")) for line in gridlines)
    assert min(float(bar.get("y", "")) for bar in bars(root)) >= top


def test_x_labels_are_thinned_out_and_the_last_day_is_labelled() -> None:
    root = parse(bar_chart_svg(month(), title="Devices"))
    dates = [label for label in texts(root) if not label.replace(",", "").isdigit()]
    assert dates == ["24 Oct", "31 Oct", "7 Nov", "14 Nov", "21 Nov"]


def test_a_short_series_labels_every_day() -> None:
    root = parse(bar_chart_svg([(day(n), n) for n in range(5)], title="Devices"))
    assert texts(root)[-5:] == ["22 Oct", "23 Oct", "24 Oct", "25 Oct", "26 Oct"]


def test_a_single_day_is_one_narrow_bar() -> None:
    root = parse(bar_chart_svg([(day(0), 1234)], title="Devices"))
    (bar,) = bars(root)
    assert float(bar.get("width", "")) <= 40
    assert bar.findtext(f"{NS}title") == "2026-10-22: 1,234 devices"
    assert root.get("aria-label") == "Devices, 2026-10-22: 1,234 in total"
    assert "22 Oct" in texts(root)


def test_a_year_stays_readable() -> None:
    root = parse(bar_chart_svg([(day(n), n % 50) for n in range(366)], title="Devices"))
    assert len(bars(root)) == 366
    assert len([label for label in texts(root) if " " in label]) <= 14


def test_an_empty_series_says_so() -> None:
    svg = bar_chart_svg([], title="Devices registered per day")
    root = parse(svg)
    assert root.get("role") == "img"
    assert root.get("aria-label") == f"Devices registered per day: {EMPTY_TEXT}"
    assert texts(root, "chart-empty") == ["No devices registered in this period"]
    assert bars(root) == []


def test_a_series_of_zeros_says_so() -> None:
    root = parse(bar_chart_svg(daily_series({}, day(0), day(30)), title="Devices registered per day"))
    assert root.get("aria-label") == f"Devices registered per day, 2026-10-22 to 2026-11-21: {EMPTY_TEXT}"
    assert texts(root, "chart-empty") == [EMPTY_TEXT]
    assert bars(root) == []


def test_every_text_is_escaped() -> None:
    hostile = '<script>alert("x")</script>&'
    svg = bar_chart_svg([(day(0), 3)], title=hostile, unit=(hostile, hostile))
    assert "<script" not in svg
    root = parse(svg)
    assert root.get("aria-label") == f"{hostile}, 2026-10-22: 3 in total"
    assert bars(root)[0].findtext(f"{NS}title") == f"2026-10-22: 3 {hostile}"

    svg = bar_chart_svg([], title=hostile, empty_text=hostile)
    assert "<script" not in svg
    assert texts(parse(svg), "chart-empty") == [hostile]


def test_negative_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        bar_chart_svg([(day(0), -1)], title="Devices")
