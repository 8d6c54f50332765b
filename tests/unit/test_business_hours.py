"""Business hours at fixed instants: weekly spans in the number's zone, holidays, validation."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from ivr.business_hours import (
    InvalidHours,
    OverlappingHours,
    UnknownTimeZone,
    build_schedule,
    is_open,
    utc,
)

BERLIN = build_schedule(
    "Europe/Berlin",
    {
        "mon": [("09:00", "12:00"), ("13:00", "17:30")],
        "tue": [("09:00", "17:30")],
        "fri": [("09:00", "24:00")],
        "sat": [("00:00", "02:00")],
    },
    [date(2026, 12, 25)],
)


@pytest.mark.parametrize(
    ("now", "open_"),
    [
        # Monday 2026-11-30; Berlin is UTC+1 in winter.
        (utc(2026, 11, 30, 7, 59), False),  # 08:59 local
        (utc(2026, 11, 30, 8, 0), True),  # 09:00 local: the start is inside
        (utc(2026, 11, 30, 10, 59), True),  # 11:59
        (utc(2026, 11, 30, 11, 0), False),  # 12:00: the end is outside (lunch)
        (utc(2026, 11, 30, 12, 0), True),  # 13:00
        (utc(2026, 11, 30, 16, 29), True),  # 17:29
        (utc(2026, 11, 30, 16, 30), False),  # 17:30
        (utc(2026, 12, 2, 10, 0), False),  # Wednesday: no hours at all
        (utc(2026, 12, 4, 22, 59), True),  # Friday 23:59 local, "24:00" end
        (utc(2026, 12, 4, 23, 30), True),  # Saturday 00:30 local, though Friday in UTC
        (utc(2026, 12, 5, 1, 0), False),  # Saturday 02:00 local
        (utc(2026, 12, 25, 9, 0), False),  # Christmas is a Friday, but a holiday
        (utc(2026, 12, 24, 23, 30), False),  # 00:30 on the 25th local: already the holiday
        # Summer time: Monday 2026-06-29 09:00 local is 07:00 UTC.
        (utc(2026, 6, 29, 7, 0), True),
        (utc(2026, 6, 29, 6, 59), False),
        # Tuesday after the spring change (2026-03-29): 09:00 CEST = 07:00 UTC.
        (utc(2026, 3, 31, 7, 0), True),
    ],
)
def test_open_or_closed_at_fixed_instants(now: datetime, open_: bool) -> None:
    assert is_open(BERLIN, now) is open_


def test_the_same_instant_differs_by_zone() -> None:
    weekly = {"mon": [("09:00", "17:00")]}
    tokyo = build_schedule("Asia/Tokyo", weekly, [])
    new_york = build_schedule("America/New_York", weekly, [])
    instant = utc(2026, 11, 30, 1, 0)  # Monday 10:00 in Tokyo, Sunday 20:00 in New York
    assert is_open(tokyo, instant) and not is_open(new_york, instant)


def test_no_spans_means_always_closed() -> None:
    assert not is_open(build_schedule("UTC", {}, []), datetime(2026, 1, 5, 12, tzinfo=UTC))


@pytest.mark.parametrize(
    ("weekly", "holidays", "error", "field"),
    [
        ({"mon": [("09:00", "12:00"), ("11:00", "13:00")]}, [], OverlappingHours, "weekly.mon.1"),
        ({"mon": [("11:00", "13:00"), ("09:00", "11:30")]}, [], OverlappingHours, "weekly.mon.0"),
        ({"tue": [("09:00", "17:00"), ("09:00", "17:00")]}, [], OverlappingHours, "weekly.tue.1"),
        ({"mon": [("17:00", "09:00")]}, [], InvalidHours, "weekly.mon.0"),
        ({"mon": [("09:00", "09:00")]}, [], InvalidHours, "weekly.mon.0"),
        ({"mon": [("9:00", "17:00")]}, [], InvalidHours, "weekly.mon.0"),
        ({"mon": [("09:00", "24:01")]}, [], InvalidHours, "weekly.mon.0"),
        ({"mon": [("25:00", "26:00")]}, [], InvalidHours, "weekly.mon.0"),
        ({"monday": [("09:00", "17:00")]}, [], InvalidHours, "weekly.monday"),
        ({}, [date(2026, 1, 1), date(2026, 1, 1)], OverlappingHours, "holidays.1.date"),
    ],
)
def test_bad_schedules_are_refused_naming_the_field(
    weekly: dict[str, list[tuple[str, str]]], holidays: list[date], error: type[Exception],
    field: str,
) -> None:  # fmt: skip
    with pytest.raises(error) as refused:
        build_schedule("Europe/Berlin", weekly, holidays)
    assert refused.value.field == field  # type: ignore[attr-defined]


def test_touching_spans_do_not_overlap() -> None:
    schedule = build_schedule("UTC", {"mon": [("09:00", "12:00"), ("12:00", "13:00")]}, [])
    assert is_open(schedule, utc(2026, 11, 30, 12, 0))


@pytest.mark.parametrize("name", ["Mars/Olympus", "", "Europe/../etc/passwd", " UTC", "utc+1"])
def test_unknown_time_zones_are_refused(name: str) -> None:
    with pytest.raises(UnknownTimeZone):
        build_schedule(name, {}, [])


def test_a_naive_clock_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        is_open(BERLIN, datetime(2026, 11, 30, 9, 0))
