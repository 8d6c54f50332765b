"""The queue log: one row per thing that happens to a caller in a queue, an event for each,
and the queue metrics that follow from them."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from acd.models import QueueLogRow
from core.context import ServiceContext
from core.db import utcnow
from core.write_behind import Staged, WriteBehind, already_written

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
    # The agent passed the caller on (detail: to, kind, talk_seconds): the stay is over.
    TRANSFER = "transfer"
    # The caller's or the agent's worker died, or the service stopped while the caller waited
    # (then written at the next start).
    FAILED = "failed"
    # The caller asked to be called back and hung up (detail: callback_id, number); the stay
    # goes on without them: offer, callback_attempt (detail: result, attempt_call_id), then
    # connect and complete, or callback_failed, or callback_cancel.
    CALLBACK = "callback"
    CALLBACK_ATTEMPT = "callback_attempt"
    CALLBACK_FAILED = "callback_failed"
    CALLBACK_CANCEL = "callback_cancel"


# How a caller's wait ended, for the wait histogram and the outcome counter.
_OUTCOMES = {
    QueueEvent.CONNECT: "answered",
    QueueEvent.ABANDON: "abandoned",
    QueueEvent.TIMEOUT: "timeout",
    QueueEvent.EXIT_KEY: "exit_key",
    QueueEvent.FULL: "full",
    QueueEvent.NO_AGENTS: "no_agents",
    QueueEvent.CALLBACK_FAILED: "callback_failed",
    QueueEvent.CALLBACK_CANCEL: "callback_cancelled",
}


def record(
    ctx: ServiceContext,
    queue_id: int,
    call_id: int,
    event: QueueEvent,
    *,
    user_id: int | None = None,
    wait_seconds: float | None = None,
    at: datetime | None = None,
    **detail: Any,
) -> None:
    """Hands the row to the write-behind writer (its event follows the commit); no SQL here.
    `at`: when it happened, if not now."""
    wait = round(wait_seconds, 3) if wait_seconds is not None else None
    ctx.writes.submit(_ROW, {
        "id": ctx.writes.next_id(QUEUE_LOG_SEQUENCE), "at": (at or utcnow()).isoformat(),
        "queue_id": queue_id, "call_id": call_id, "event": event.value, "user_id": user_id,
        "wait_seconds": wait, "detail": detail,
    })  # fmt: skip
    _count(ctx, queue_id, event, wait)
    log.info("queue_" + event.value, queue_id=queue_id, call_id=call_id, user_id=user_id,
             wait_seconds=wait)  # fmt: skip


QUEUE_LOG_SEQUENCE = "queue_log"
_ROW = "queue_log"


def register_writes(writer: WriteBehind) -> None:
    writer.sequence(QUEUE_LOG_SEQUENCE, QueueLogRow.id)
    writer.register(_ROW, _apply_row)


async def _apply_row(session: AsyncSession, data: dict[str, Any]) -> Staged:
    # Ids come from memory, so a row replayed after a crash is known by its id.
    if await already_written(session, QueueLogRow, data["id"]):
        return []
    detail: dict[str, Any] = data["detail"]
    session.add(QueueLogRow(
        id=data["id"], at=datetime.fromisoformat(data["at"]), queue_id=data["queue_id"],
        call_id=data["call_id"], event=data["event"], user_id=data["user_id"],
        wait_seconds=data["wait_seconds"], detail=detail,
    ))  # fmt: skip
    return [(f"queue_{data['event']}", {
        "queue_id": data["queue_id"], "call_id": data["call_id"], "user_id": data["user_id"],
        "wait_seconds": data["wait_seconds"], **detail,
    })]  # fmt: skip


# -- after a crash ------------------------------------------------------------------------------

# A stay whose latest row is one of these is still waiting; after CONNECT it is a talk not
# yet COMPLETE; after anything else it is over.
_WAITING = frozenset({QueueEvent.ENTER, QueueEvent.OFFER, QueueEvent.NO_ANSWER})


@dataclass(frozen=True)
class UnfinishedStay:
    queue_id: int
    call_id: int
    closing: QueueEvent  # FAILED (was waiting) or COMPLETE (was talking)
    entered_at: datetime | None  # of the stay's latest ENTER, for the wait


def unfinished_stays(rows: Iterable[QueueLogRow]) -> list[UnfinishedStay]:
    """The stays in `rows` (oldest first) the log never closed, one per queue and call."""
    last: dict[tuple[int, int], QueueEvent] = {}
    entered: dict[tuple[int, int], datetime] = {}
    for row in rows:
        key = (row.queue_id, row.call_id)
        last[key] = QueueEvent(row.event)
        if row.event == QueueEvent.ENTER:
            entered[key] = row.at
    stays = []
    for (queue_id, call_id), event in last.items():
        if event in _WAITING:
            closing = QueueEvent.FAILED
        elif event is QueueEvent.CONNECT:
            closing = QueueEvent.COMPLETE
        else:
            continue
        stays.append(UnfinishedStay(queue_id, call_id, closing, entered.get((queue_id, call_id))))
    return stays


async def rows_of_calls(ctx: ServiceContext, call_ids: Collection[int]) -> list[QueueLogRow]:
    if not call_ids:
        return []
    query = select(QueueLogRow).where(QueueLogRow.call_id.in_(call_ids)).order_by(QueueLogRow.id)
    async with ctx.sessions() as session:
        return list(await session.scalars(query))


def _count(ctx: ServiceContext, queue_id: int, event: QueueEvent, wait: float | None) -> None:
    queue = str(queue_id)
    outcome = _OUTCOMES.get(event)
    if event is QueueEvent.FAILED and wait is not None:
        outcome = "failed"  # while waiting; a talk that failed was counted answered already
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
