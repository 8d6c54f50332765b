"""Callback requests in SQL: written before the caller hears that they will be called back,
so that no accepted request is lost whatever process dies; each change is committed with its
event (`callback_requested`, then `callback_updated`) and counted."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from acd.callback_rules import (
    OPEN_STATES,
    AttemptResult,
    CallbackState,
    after_attempt,
)
from acd.models import CallbackRow
from core.context import ServiceContext
from core.db import utcnow
from core.errors import Conflict, NotFound

log = structlog.get_logger(__name__)


class CallbackOver(Conflict):
    code = "callback_over"


class CallbackInProgress(Conflict):
    code = "callback_in_progress"


@dataclass(frozen=True)
class Callback:
    id: int
    queue_id: int
    call_id: int
    number: str
    shown_number: str
    number_records: bool
    priority: int
    entered_at: datetime
    requested_at: datetime
    state: CallbackState
    attempts: int
    next_attempt_at: datetime | None
    history: tuple[dict[str, Any], ...]
    user_id: int | None
    connected: bool
    updated_at: datetime

    @classmethod
    def of(cls, row: CallbackRow) -> Callback:
        return cls(
            id=row.id, queue_id=row.queue_id, call_id=row.call_id, number=row.number,
            shown_number=row.shown_number, number_records=row.number_records,
            priority=row.priority, entered_at=row.entered_at,
            requested_at=row.requested_at, state=CallbackState(row.state), attempts=row.attempts,
            next_attempt_at=row.next_attempt_at, history=tuple(row.history),
            user_id=row.user_id, connected=row.connected, updated_at=row.updated_at,
        )  # fmt: skip


def callback_data(callback: Callback) -> dict[str, Any]:
    def iso(at: datetime | None) -> str | None:
        return at.isoformat() if at is not None else None

    return {
        "id": callback.id, "queue_id": callback.queue_id, "call_id": callback.call_id,
        "number": callback.number, "shown_number": callback.shown_number,
        "number_records": callback.number_records,
        "priority": callback.priority, "entered_at": iso(callback.entered_at),
        "requested_at": iso(callback.requested_at), "state": callback.state.value,
        "attempts": callback.attempts, "next_attempt_at": iso(callback.next_attempt_at),
        "history": list(callback.history), "user_id": callback.user_id,
        "connected": callback.connected, "updated_at": iso(callback.updated_at),
    }  # fmt: skip


async def request_callback(
    ctx: ServiceContext, *, queue_id: int, call_id: int, number: str, shown_number: str,
    number_records: bool, priority: int, entered_at: datetime,
) -> Callback:  # fmt: skip
    now = utcnow()
    async with ctx.sessions.begin() as session:
        row = CallbackRow(
            queue_id=queue_id, call_id=call_id, number=number, shown_number=shown_number,
            number_records=number_records, priority=priority, entered_at=entered_at,
            requested_at=now, state=CallbackState.PENDING.value, attempts=0, history=[],
            connected=False, updated_at=now,
        )  # fmt: skip
        session.add(row)
        await session.flush()
        callback = Callback.of(row)
        event = await ctx.events.stage(session, "callback_requested", callback_data(callback))
    await ctx.events.publish(event)
    ctx.metrics.callbacks.labels(outcome="requested").inc()
    log.info("callback_requested", callback_id=callback.id, queue_id=queue_id, call_id=call_id)
    return callback


async def begin_attempt(ctx: ServiceContext, callback_id: int, user_id: int) -> Callback:
    """The agent `user_id` answered for a pending callback: the customer is dialled now.
    CallbackOver if it was cancelled meanwhile."""

    def begin(row: CallbackRow) -> None:
        if row.state != CallbackState.PENDING.value:
            raise CallbackOver(f"callback {callback_id} is {row.state}")
        row.state, row.user_id, row.connected = CallbackState.CALLING.value, user_id, False

    return await _change(ctx, callback_id, begin)


async def customer_answered(ctx: ServiceContext, callback_id: int) -> Callback:
    def answered(row: CallbackRow) -> None:
        row.connected = True

    return await _change(ctx, callback_id, answered)


async def end_attempt(
    ctx: ServiceContext, callback_id: int, result: AttemptResult, *, call_id: int | None,
    max_attempts: int, retry_interval: int,
) -> Callback:  # fmt: skip
    """The attempt under way is over with `result`: completed, failed, or pending again."""
    now = utcnow()

    def end(row: CallbackRow) -> None:
        after = after_attempt(result, row.attempts, max_attempts, retry_interval, now)
        row.history = [*row.history, {
            "at": now.isoformat(), "user_id": row.user_id, "call_id": call_id,
            "result": result.value,
        }]  # fmt: skip
        row.state, row.attempts, row.next_attempt_at = (
            after.state.value,
            after.attempts,
            after.next_attempt_at,
        )
        if after.state is not CallbackState.COMPLETED:
            row.user_id = None
        row.connected = False

    callback = await _change(ctx, callback_id, end)
    ctx.metrics.callback_attempts.labels(result=result.value).inc()
    if callback.state is not CallbackState.PENDING:
        ctx.metrics.callbacks.labels(outcome=callback.state.value).inc()
    return callback


async def cancel_callback(ctx: ServiceContext, callback_id: int) -> Callback:
    """A pending callback is taken back; one being called cannot be (409)."""

    def cancel(row: CallbackRow) -> None:
        if row.state == CallbackState.CALLING.value:
            raise CallbackInProgress(f"callback {callback_id} is being called now")
        if row.state != CallbackState.PENDING.value:
            raise CallbackOver(f"callback {callback_id} is {row.state}")
        row.state, row.next_attempt_at = CallbackState.CANCELLED.value, None

    callback = await _change(ctx, callback_id, cancel)
    ctx.metrics.callbacks.labels(outcome="cancelled").inc()
    return callback


async def get_callback(ctx: ServiceContext, callback_id: int) -> Callback:
    async with ctx.sessions() as session:
        return Callback.of(await _load(session, callback_id))


async def list_callbacks(
    ctx: ServiceContext, *, queue_id: int | None, states: Collection[CallbackState],
    limit: int, offset: int,
) -> list[Callback]:  # fmt: skip
    query = select(CallbackRow).order_by(CallbackRow.id)
    if queue_id is not None:
        query = query.where(CallbackRow.queue_id == queue_id)
    if states:
        query = query.where(CallbackRow.state.in_([s.value for s in states]))
    async with ctx.sessions() as session:
        rows = await session.scalars(query.limit(limit).offset(offset))
        return [Callback.of(row) for row in rows]


async def open_callbacks(ctx: ServiceContext) -> list[Callback]:
    """Every callback not done yet, oldest first (to take up again after a start)."""
    query = select(CallbackRow).where(CallbackRow.state.in_([s.value for s in OPEN_STATES]))
    async with ctx.sessions() as session:
        return [Callback.of(row) for row in await session.scalars(query.order_by(CallbackRow.id))]


async def _change(
    ctx: ServiceContext, callback_id: int, change: Callable[[CallbackRow], None]
) -> Callback:
    async with ctx.sessions.begin() as session:
        row = await _load(session, callback_id)
        change(row)
        row.updated_at = utcnow()
        await session.flush()
        callback = Callback.of(row)
        event = await ctx.events.stage(session, "callback_updated", callback_data(callback))
    await ctx.events.publish(event)
    log.info("callback_updated", callback_id=callback_id, state=callback.state,
             attempts=callback.attempts)  # fmt: skip
    return callback


async def _load(session: AsyncSession, callback_id: int) -> CallbackRow:
    row = await session.get(CallbackRow, callback_id)
    if row is None:
        raise NotFound(f"callback {callback_id} does not exist")
    return row
