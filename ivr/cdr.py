"""Call detail records: one row per call, written as the call starts, is answered and ends."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import structlog
from sqlalchemy import JSON, Integer, String, func, select
from sqlalchemy.orm import Mapped, mapped_column

from core.context import ServiceContext
from core.db import Base, UtcDateTime, utcnow
from core.errors import NotFound

log = structlog.get_logger(__name__)


class Direction(StrEnum):
    INBOUND = "inbound"  # from the provider to a company number
    INTERNAL = "internal"  # phone to phone
    OUTBOUND = "outbound"  # phone to an external number


class Disposition(StrEnum):
    ANSWERED = "answered"  # a person took the call
    ABANDONED = "abandoned"  # the caller hung up before anyone answered
    NO_ANSWER = "no_answer"  # rang until the ring timeout
    BUSY = "busy"
    UNAVAILABLE = "unavailable"  # no registered phone, dismissed user
    NOT_FOUND = "not_found"  # no such extension or number
    REJECTED = "rejected"  # not allowed (own extension, no outbound route)
    FAILED = "failed"  # a worker was lost or the far end failed
    VOICEMAIL = "voicemail"  # the caller reached a voicemail box (a message may be kept)
    ENDED_IN_IVR = "ended_in_ivr"  # the service answered and the call ended there (hang-up route)


class CallRecord(Base):
    __tablename__ = "calls"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    direction: Mapped[str] = mapped_column(String(16), index=True)
    caller: Mapped[str] = mapped_column(String(128))
    # What was dialled: the company number, an extension or an external number.
    called: Mapped[str] = mapped_column(String(128))
    # Who took it: an extension (or the external number for outbound calls).
    connected_to: Mapped[str | None] = mapped_column(String(128), default=None)
    user_id: Mapped[int | None] = mapped_column(Integer, default=None, index=True)
    worker_id: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
    # When the service itself answered (greeting); null for calls it only relayed.
    system_answered_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    answered_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    disposition: Mapped[str | None] = mapped_column(String(16), default=None, index=True)
    hangup_by: Mapped[str | None] = mapped_column(String(16), default=None)
    # Every SIP leg of the call: [{"leg", "role", "sip_call_id", "end_code"}].
    legs: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)


@dataclass(frozen=True)
class CallFilter:
    direction: Direction | None = None
    disposition: Disposition | None = None
    user_id: int | None = None
    party: str | None = None  # caller, called or connected_to
    started_after: datetime | None = None
    started_before: datetime | None = None


class CallLog:
    """The record of one live call; each step persists, publishes an event and counts."""

    def __init__(self, ctx: ServiceContext, record_id: int, direction: Direction) -> None:
        self._ctx = ctx
        self.id = record_id
        self.direction = direction
        self._closed = False

    @classmethod
    async def open(
        cls,
        ctx: ServiceContext,
        *,
        direction: Direction,
        caller: str,
        called: str,
        worker_id: int,
        user_id: int | None = None,
    ) -> CallLog:
        async with ctx.sessions.begin() as session:
            row = CallRecord(
                direction=direction.value, caller=caller, called=called, worker_id=worker_id,
                user_id=user_id, started_at=utcnow(), legs=[],
            )  # fmt: skip
            session.add(row)
            await session.flush()
            event = await ctx.events.stage(session, "call_started", _event_data(row))
        await ctx.events.publish(event)
        ctx.metrics.active_calls.labels(direction=direction.value).inc()
        log.info("call_started", call_id=row.id, direction=direction, caller=caller, called=called)
        return cls(ctx, row.id, direction)

    async def add_leg(self, leg_id: str, role: str, sip_call_id: str | None) -> None:
        def append(row: CallRecord) -> None:
            # A new list: SQLAlchemy does not see in-place changes of a JSON column.
            row.legs = [*row.legs, {"leg": leg_id, "role": role, "sip_call_id": sip_call_id}]

        await self._update(append)

    async def system_answered(self) -> None:
        def mark(row: CallRecord) -> None:
            row.system_answered_at = utcnow()

        await self._update(mark)

    async def answered(self, connected_to: str, user_id: int | None = None) -> None:
        def mark(row: CallRecord) -> None:
            row.answered_at = utcnow()
            row.connected_to = connected_to
            if user_id is not None:
                row.user_id = user_id

        await self._update(mark, event_type="call_answered")
        log.info("call_answered", call_id=self.id, connected_to=connected_to)

    async def ended(self, disposition: Disposition, hangup_by: str) -> None:
        """Idempotent: the first end wins (both legs may report it)."""
        if self._closed:
            return
        self._closed = True

        def close(row: CallRecord) -> None:
            row.ended_at = utcnow()
            row.disposition = disposition.value
            row.hangup_by = hangup_by

        await self._update(close, event_type="call_ended")
        metrics = self._ctx.metrics
        metrics.active_calls.labels(direction=self.direction.value).dec()
        metrics.calls.labels(direction=self.direction.value, disposition=disposition.value).inc()
        log.info("call_ended", call_id=self.id, disposition=disposition, hangup_by=hangup_by)

    async def _update(
        self, change: Callable[[CallRecord], None], event_type: str | None = None
    ) -> None:
        async with self._ctx.sessions.begin() as session:
            row = await session.get(CallRecord, self.id)
            assert row is not None
            change(row)
            event = (
                await self._ctx.events.stage(session, event_type, _event_data(row))
                if event_type
                else None
            )
        if event is not None:
            await self._ctx.events.publish(event)


def _event_data(row: CallRecord) -> dict[str, Any]:
    return {
        "call_id": row.id,
        "direction": row.direction,
        "caller": row.caller,
        "called": row.called,
        "connected_to": row.connected_to,
        "user_id": row.user_id,
        "disposition": row.disposition,
        "hangup_by": row.hangup_by,
        "started_at": row.started_at.isoformat(),
        "answered_at": row.answered_at.isoformat() if row.answered_at else None,
        "ended_at": row.ended_at.isoformat() if row.ended_at else None,
    }


async def list_calls(
    ctx: ServiceContext, where: CallFilter, *, limit: int, offset: int
) -> tuple[list[CallRecord], int]:
    query = select(CallRecord)
    if where.direction is not None:
        query = query.where(CallRecord.direction == where.direction.value)
    if where.disposition is not None:
        query = query.where(CallRecord.disposition == where.disposition.value)
    if where.user_id is not None:
        query = query.where(CallRecord.user_id == where.user_id)
    if where.party is not None:
        query = query.where(
            (CallRecord.caller == where.party)
            | (CallRecord.called == where.party)
            | (CallRecord.connected_to == where.party)
        )
    if where.started_after is not None:
        query = query.where(CallRecord.started_at >= where.started_after)
    if where.started_before is not None:
        query = query.where(CallRecord.started_at < where.started_before)
    async with ctx.sessions() as session:
        total = await session.scalar(select(func.count()).select_from(query.subquery()))
        rows = await session.scalars(
            query.order_by(CallRecord.id.desc()).limit(limit).offset(offset)
        )
        return list(rows), total or 0


async def get_call(ctx: ServiceContext, call_id: int) -> CallRecord:
    async with ctx.sessions() as session:
        row = await session.get(CallRecord, call_id)
    if row is None:
        raise NotFound(f"call {call_id} does not exist")
    return row
