"""The wallboard's day: midnight in the viewer's zone, and the queues' hours since then."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from acd.day_figures import HourFigures, LogFacts, day_start, hourly

BERLIN = ZoneInfo("Europe/Berlin")


@pytest.mark.parametrize(
    ("now", "zone", "midnight"),
    [
        # 23:30 UTC is already the next day in Berlin (UTC+1 in winter).
        (datetime(2026, 12, 3, 23, 30, tzinfo=UTC), BERLIN, datetime(2026, 12, 4, tzinfo=BERLIN)),
        (datetime(2026, 12, 3, 22, 59, tzinfo=UTC), BERLIN, datetime(2026, 12, 3, tzinfo=BERLIN)),
        (datetime(2026, 12, 4, 3, 0, tzinfo=UTC), ZoneInfo("America/New_York"),
         datetime(2026, 12, 3, tzinfo=ZoneInfo("America/New_York"))),
        (datetime(2026, 12, 4, 0, 0, tzinfo=UTC), ZoneInfo("UTC"),
         datetime(2026, 12, 4, tzinfo=ZoneInfo("UTC"))),
    ],
)  # fmt: skip
def test_the_day_starts_at_midnight_where_the_viewer_is(
    now: datetime, zone: ZoneInfo, midnight: datetime
) -> None:
    assert day_start(zone, now) == midnight


START = datetime(2026, 12, 4, tzinfo=BERLIN)


def at(hours: float) -> datetime:
    return START + timedelta(hours=hours)


def test_calls_fall_in_the_hour_their_wait_ended_and_the_service_level_counts_ended_waits() -> None:
    rows = [
        LogFacts(at(0.1), "enter", None),
        LogFacts(at(0.2), "connect", 5.0),  # in time (20 s)
        LogFacts(at(0.5), "connect", 45.0),  # late
        LogFacts(at(0.7), "abandon", 12.0),
        LogFacts(at(2.5), "timeout", 300.0),
        LogFacts(at(2.6), "offer", 3.0),  # not an end of a wait
        LogFacts(at(-0.5), "connect", 1.0),  # yesterday
        LogFacts(at(9.0), "connect", 1.0),  # after now
    ]
    figures = hourly(rows, START, at(2.9), service_level_seconds=20)
    assert figures == [
        HourFigures(at(0), answered=2, abandoned=1, service_level=round(1 / 3, 4)),
        HourFigures(at(1), answered=0, abandoned=0, service_level=None),
        HourFigures(at(2), answered=0, abandoned=0, service_level=0.0),
    ]


def test_the_first_minutes_of_a_day_are_one_hour() -> None:
    assert hourly([], START, START, 20) == [HourFigures(START, 0, 0, None)]


def test_a_day_with_a_clock_change_has_its_real_hours() -> None:
    # 2026-10-25: Berlin's clocks go back at 03:00 CEST, so the day has 25 hours.
    start = datetime(2026, 10, 25, tzinfo=BERLIN)
    end = datetime(2026, 10, 25, 23, 30, tzinfo=BERLIN)
    figures = hourly([], start, end, 20)
    assert len(figures) == 25
    assert [f.hour.hour for f in figures[:5]] == [0, 1, 2, 2, 3]
