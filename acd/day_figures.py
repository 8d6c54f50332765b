"""The wallboard's day: when "today" began in the viewer's time zone, and the queues' calls
hour by hour since then. Pure over plain rows; only `queue_log_since` reads SQL."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select

from acd.models import QueueLogRow
from acd.queue_log import QueueEvent
from core.context import ServiceContext

HOUR = timedelta(hours=1)
# Rows that end a caller's wait; the service level is answered-in-time over these.
_WAIT_ENDS = frozenset({
    QueueEvent.CONNECT, QueueEvent.ABANDON, QueueEvent.TIMEOUT, QueueEvent.EXIT_KEY,
})  # fmt: skip


@dataclass(frozen=True)
class LogFacts:
    at: datetime
    event: str
    wait_seconds: float | None


@dataclass(frozen=True)
class HourFigures:
    hour: datetime  # its start
    answered: int
    abandoned: int
    # Answered within the threshold over waits that ended; None without any.
    service_level: float | None


def day_start(zone: ZoneInfo, now: datetime) -> datetime:
    """Midnight of `now`'s day in `zone`, as an aware datetime."""
    local = now.astimezone(zone)
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


def hourly(
    rows: Iterable[LogFacts], start: datetime, now: datetime, service_level_seconds: float
) -> list[HourFigures]:
    """One entry per hour from `start` to the hour holding `now`; rows outside are ignored."""
    # In UTC: arithmetic between datetimes of one zone ignores its clock changes.
    first = start.astimezone(UTC)
    hours = max(1, int((now.astimezone(UTC) - first) / HOUR) + 1)
    answered, abandoned, ended, in_time = ([0] * hours for _ in range(4))
    for row in rows:
        since_start = row.at.astimezone(UTC) - first
        index = int(since_start / HOUR) if since_start >= timedelta(0) else -1
        if not 0 <= index < hours or row.event not in _WAIT_ENDS:
            continue
        ended[index] += 1
        if row.event == QueueEvent.CONNECT:
            answered[index] += 1
            if row.wait_seconds is not None and row.wait_seconds <= service_level_seconds:
                in_time[index] += 1
        elif row.event == QueueEvent.ABANDON:
            abandoned[index] += 1
    zone = start.tzinfo
    return [
        HourFigures(
            # Wall-clock hours of the viewer's zone (a DST change shows as a repeated hour).
            hour=(first + index * HOUR).astimezone(zone),
            answered=answered[index],
            abandoned=abandoned[index],
            service_level=round(in_time[index] / ended[index], 4) if ended[index] else None,
        )
        for index in range(hours)
    ]


async def queue_log_since(ctx: ServiceContext, since: datetime) -> list[LogFacts]:
    query = (
        select(QueueLogRow.at, QueueLogRow.event, QueueLogRow.wait_seconds)
        .where(QueueLogRow.at >= since)
        .order_by(QueueLogRow.id)
    )
    async with ctx.sessions() as session:
        return [LogFacts(*row) for row in await session.execute(query)]
