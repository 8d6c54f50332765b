"""Business hours as pure logic: a weekly schedule in one time zone with dated holidays, its
validation, and the open/closed decision at a given instant (the caller passes the clock)."""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from core.errors import InvalidInput

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # datetime.weekday() order
MINUTES_PER_DAY = 24 * 60
CLOCK_PATTERN = r"^([01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$"
_CLOCK = re.compile(CLOCK_PATTERN)


class InvalidHours(InvalidInput):
    code = "invalid_hours"


class OverlappingHours(InvalidInput):
    code = "overlapping_hours"


class UnknownTimeZone(InvalidInput):
    code = "unknown_time_zone"


@dataclass(frozen=True)
class Span:
    """Open from `start` up to (not including) `end`, in minutes after local midnight."""

    start: int
    end: int


@dataclass(frozen=True)
class Schedule:
    time_zone: str
    weekly: Mapping[str, tuple[Span, ...]]
    holidays: frozenset[date]


def minutes_of(clock: str) -> int:
    """ "09:30" -> 570; "24:00" (only sensible as an end) -> 1440."""
    if not _CLOCK.fullmatch(clock):
        raise InvalidHours(f"{clock!r} is not a time of day HH:MM (00:00 to 24:00)")
    hours, minutes = clock.split(":")
    return int(hours) * 60 + int(minutes)


def clock_of(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def build_schedule(
    time_zone: str,
    weekly: Mapping[str, Sequence[tuple[str, str]]],
    holidays: Sequence[date],
) -> Schedule:
    """Validate and build: a known IANA zone, spans that start before they end, no span
    overlapping another of its day, weekday names only, each holiday once (422 otherwise)."""
    zone(time_zone)
    days: dict[str, tuple[Span, ...]] = {}
    for day, spans in weekly.items():
        if day not in WEEKDAYS:
            raise InvalidHours(f"{day!r} is not a weekday ({', '.join(WEEKDAYS)})",
                               field=f"weekly.{day}")  # fmt: skip
        built: list[tuple[int, Span]] = []
        for index, (start, end) in enumerate(spans):
            field = f"weekly.{day}.{index}"
            try:
                span = Span(minutes_of(start), minutes_of(end))
            except InvalidHours as exc:
                raise InvalidHours(exc.message, field=field) from None
            if span.start >= span.end:
                raise InvalidHours(
                    f"{day} {start}-{end}: a span ends after it starts (split spans that "
                    "cross midnight over two days)",
                    field=field,
                )
            built.append((index, span))
        built.sort(key=lambda item: item[1].start)
        for (_, before), (index, after) in itertools.pairwise(built):
            if after.start < before.end:
                raise OverlappingHours(
                    f"{day}: {clock_of(after.start)}-{clock_of(after.end)} overlaps "
                    f"{clock_of(before.start)}-{clock_of(before.end)}",
                    field=f"weekly.{day}.{index}",
                )
        days[day] = tuple(span for _, span in built)
    seen: set[date] = set()
    for index, holiday in enumerate(holidays):
        if holiday in seen:
            raise OverlappingHours(f"holiday {holiday.isoformat()} is listed twice",
                                   field=f"holidays.{index}.date")  # fmt: skip
        seen.add(holiday)
    return Schedule(time_zone=time_zone, weekly=days, holidays=frozenset(seen))


def zone(time_zone: str) -> ZoneInfo:
    try:
        if not time_zone or time_zone != time_zone.strip() or ".." in time_zone:
            raise ValueError(time_zone)
        return ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise UnknownTimeZone(
            f"{time_zone!r} is not an IANA time zone such as Europe/Berlin", field="time_zone"
        ) from None


def is_open(schedule: Schedule, now: datetime) -> bool:
    """Whether callers are inside business hours at `now` (aware), in the schedule's zone."""
    if now.tzinfo is None:
        raise ValueError("is_open needs an aware datetime")
    local = now.astimezone(zone(schedule.time_zone))
    if local.date() in schedule.holidays:
        return False
    minute = local.hour * 60 + local.minute
    spans = schedule.weekly.get(WEEKDAYS[local.weekday()], ())
    return any(span.start <= minute < span.end for span in spans)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    """A UTC instant (tests and examples)."""
    return datetime(year, month, day, hour, minute, tzinfo=UTC)
