"""The queue log: one row per thing that happens to a caller in a queue, an event for each,
and the queue metrics that follow from them."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

import structlog
from sqlalchemy import select

from acd.models import QueueLogRow
from core.context import ServiceContext

log = structlog.get_logger(__name__)


class QueueEvent(StrEnum):
    ENTER = "enter"
    OFFER = "offer"
    NO_ANSWER = "no_answer"
    CONNECT = "connect"
    ABANDON = "abandon"
    TIMEOUT = "timeout"
    EXIT_KEY = "exit_key"
    FULL = "full"  # max_length reached: straight to overflow
    NO_AGENTS = "no_agents"  # nobody logged in and when_no_agents = overflow
    COMPLETE = "complete"


# How a caller's wait ended, for the wait histogram and the outcome counter.
_OUTCOMES = {
    QueueEvent.CONNECT: "answered",
    QueueEvent.ABANDON: "abandoned",
    QueueEvent.TIMEOUT: "timeout",
    QueueEvent.EXIT_KEY: "exit_key",
    QueueEvent.FULL: "full",
    QueueEvent.NO_AGENTS: "no_agents",
}


async def record(
    ctx: ServiceContext,
    queue_id: int,
    call_id: int,
    event: QueueEvent,
    *,
    user_id: int | None = None,
    wait_seconds: float | None = None,
    **detail: Any,
) -> None:
    wait = round(wait_seconds, 3) if wait_seconds is not None else None
    async with ctx.sessions.begin() as session:
        session.add(QueueLogRow(
            queue_id=queue_id, call_id=call_id, event=event.value, user_id=user_id,
            wait_seconds=wait, detail=detail,
        ))  # fmt: skip
        staged = await ctx.events.stage(session, f"queue_{event.value}", {
            "queue_id": queue_id, "call_id": call_id, "user_id": user_id, "wait_seconds": wait,
            **detail,
        })  # fmt: skip
    await ctx.events.publish(staged)
    _count(ctx, queue_id, event, wait)
    log.info("queue_" + event.value, queue_id=queue_id, call_id=call_id, user_id=user_id,
             wait_seconds=wait)  # fmt: skip


def _count(ctx: ServiceContext, queue_id: int, event: QueueEvent, wait: float | None) -> None:
    queue = str(queue_id)
    outcome = _OUTCOMES.get(event)
    if outcome is None:
        return
    ctx.metrics.queue_calls.labels(queue=queue, outcome=outcome).inc()
    if wait is not None:
        ctx.metrics.queue_wait.labels(queue=queue, outcome=outcome).observe(wait)
    if (
        event is QueueEvent.CONNECT
        and wait is not None
        and wait <= ctx.settings.acd.service_level_seconds
    ):
        ctx.metrics.queue_answered_in_service_level.labels(queue=queue).inc()


async def entries(
    ctx: ServiceContext,
    *,
    queue_id: int | None,
    call_id: int | None,
    since: datetime | None,
    limit: int,
    offset: int,
) -> list[QueueLogRow]:
    query = select(QueueLogRow).order_by(QueueLogRow.id)
    if queue_id is not None:
        query = query.where(QueueLogRow.queue_id == queue_id)
    if call_id is not None:
        query = query.where(QueueLogRow.call_id == call_id)
    if since is not None:
        query = query.where(QueueLogRow.at >= since)
    async with ctx.sessions() as session:
        return list(await session.scalars(query.limit(limit).offset(offset)))
