"""Events: every change is persisted in the same transaction as the change, then published:
to this process's own background work at once (core.wakeups), and to Redis for the WebSocket
event stream and any other process."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import structlog
from prometheus_client import Counter
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import JSON, Integer, String, Table, insert, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, Session, mapped_column

from core.db import Base, UtcDateTime, utcnow
from core.wakeups import Wakeups

EVENTS_CHANNEL = "pbx:events"
# Bumped when an event's envelope changes incompatibly; data fields may only be added.
ENVELOPE_VERSION = 1

log = structlog.get_logger(__name__)


class EventRow(Base):
    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    type: Mapped[str] = mapped_column(String(64), index=True)
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)


# The table, for writes without the ORM's unit of work (stage_in).
EVENTS = cast(Table, EventRow.__table__)


@dataclass(frozen=True)
class Event:
    id: int
    type: str
    occurred_at: datetime
    data: dict[str, Any]

    def envelope(self) -> dict[str, Any]:
        return {
            "v": ENVELOPE_VERSION,
            "id": self.id,
            "type": self.type,
            "time": self.occurred_at.isoformat(),
            "data": self.data,
        }

    @classmethod
    def from_row(cls, row: EventRow) -> Event:
        return cls(id=row.id, type=row.type, occurred_at=row.occurred_at, data=row.data)


class EventBus:
    """Stage events inside a transaction; publish them once it has committed."""

    def __init__(self, redis: Redis, published: Counter, wakeups: Wakeups) -> None:
        self._redis = redis
        self._published = published
        self._wakeups = wakeups

    async def stage(self, session: AsyncSession, type_: str, data: dict[str, Any]) -> Event:
        row = EventRow(type=type_, occurred_at=utcnow(), data=data)
        session.add(row)
        await session.flush()
        return Event.from_row(row)

    async def stage_many(
        self, session: AsyncSession, staged: list[tuple[str, dict[str, Any]]]
    ) -> list[Event]:
        """Like stage() for many events, with one flush (a write-behind batch's events)."""
        rows = [EventRow(type=type_, occurred_at=utcnow(), data=data) for type_, data in staged]
        session.add_all(rows)
        await session.flush()
        return [Event.from_row(row) for row in rows]

    async def publish(self, *events: Event) -> None:
        for event in events:
            self._published.labels(type=event.type).inc()
            # In-process first: a Redis outage must not keep the service's own work asleep.
            self._wakeups.notify(event.type)
            self._wakeups.notify_event(event)
        if not events:
            return
        try:
            # One round trip for the lot: a chat message publishes three or more.
            async with self._redis.pipeline(transaction=False) as pipe:
                for event in events:
                    pipe.publish(EVENTS_CHANNEL, json.dumps(event.envelope()))
                await pipe.execute()
        except RedisError as exc:
            # The events are already persisted; live subscribers catch up with ?since=<id>.
            log.error(
                "event_publish_failed", event_ids=[e.id for e in events],
                types=sorted({e.type for e in events}), error=str(exc),
            )  # fmt: skip


def stage_in(session: Session, events: Sequence[tuple[str, dict[str, Any]]]) -> list[Event]:
    """Several events in a plain (blocking) session's transaction (SessionFactory.run_whole),
    in order, with one INSERT (Core: no unit of work); publish them once it has committed."""
    at = utcnow()
    rows = [{"type": type_, "occurred_at": at, "data": data} for type_, data in events]
    ids = session.scalars(
        insert(EVENTS).returning(EVENTS.c.id, sort_by_parameter_order=True), rows
    ).all()
    return [Event(i, type_, at, data) for i, (type_, data) in zip(ids, events, strict=True)]


async def events_after(session: AsyncSession, after_id: int, limit: int = 1000) -> list[Event]:
    rows = await session.scalars(
        select(EventRow).where(EventRow.id > after_id).order_by(EventRow.id).limit(limit)
    )
    return [Event.from_row(row) for row in rows]
