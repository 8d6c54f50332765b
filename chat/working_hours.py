"""A channel's working hours: weekly opening intervals in a time zone. Pure."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# "09:00-18:00"; "24:00" may end a day.
_HHMM = r"([01][0-9]|2[0-3]):[0-5][0-9]"
Interval = Annotated[str, Field(pattern=rf"^{_HHMM}-({_HHMM}|24:00)$")]


class WorkingHours(BaseModel):
    """`days` maps a weekday to its opening intervals; a day not listed is closed."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    timezone: str = "UTC"
    days: dict[Day, list[Interval]] = Field(
        default_factory=dict, examples=[{"mon": ["09:00-13:00", "14:00-18:00"]}]
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @model_validator(mode="after")
    def _intervals_run_forwards(self) -> WorkingHours:
        for day, intervals in self.days.items():
            for interval in intervals:
                start, end = _bounds(interval)
                if start >= end:
                    raise ValueError(f"{day} {interval}: the end must come after the start")
        return self


def is_open(hours: WorkingHours | None, now: datetime) -> bool:
    """No working hours: always open. `now` must be timezone-aware."""
    if hours is None:
        return True
    local = now.astimezone(ZoneInfo(hours.timezone))
    minute = local.hour * 60 + local.minute
    return any(
        start <= minute < end
        for start, end in map(_bounds, hours.days.get(DAYS[local.weekday()], []))
    )


def next_opening(hours: WorkingHours | None, now: datetime) -> datetime | None:
    """The first instant after `now` when the hours open (an interval starts); None when
    they never do (no intervals) or there are no hours (always open). Dialogs waiting in a
    closed channel are looked at again then, instead of every second."""
    if hours is None:
        return None
    zone = ZoneInfo(hours.timezone)
    today = now.astimezone(zone).date()
    # Eight days: today's later intervals, the next six days, and today's weekday next week.
    for offset in range(8):
        day = today + timedelta(days=offset)
        starts = sorted(_bounds(i)[0] for i in hours.days.get(DAYS[day.weekday()], []))
        for start in starts:
            at = datetime.combine(day, time(start // 60, start % 60), tzinfo=zone)
            if at > now:
                return at
    return None


def _bounds(interval: str) -> tuple[int, int]:
    start, end = interval.split("-")
    return _minutes(start), _minutes(end)


def _minutes(hhmm: str) -> int:
    if hhmm == "24:00":
        return 24 * 60
    parsed = time.fromisoformat(hhmm)
    return parsed.hour * 60 + parsed.minute
