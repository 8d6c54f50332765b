"""Retention: history older than its period (settings `[retention]`) is deleted once a day.
Voicemail messages, when given a period, go through voicemail's own deletion (file, row,
event), one by one: they are few and each is a person's recording. Call recordings go first
(their files, then the path on the call), so no call record is deleted with its file left.

Events, queue log, presence history and ended calls' records grow by about 3.7 KB per call
and were never deleted. The job deletes in batches of BATCH_ROWS, one short transaction each,
so SQLite's write lock is never held long enough to delay a call's records or an API write.
The newest row of every table is always kept: the write-behind journal hands out ids from
max(id) + 1 at start, and an event stream client resumes with ?since=<id>, so an id must
never be handed out twice.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import ColumnElement, delete, func, select

from acd.models import PresenceHistoryRow, QueueLogRow
from core.context import ServiceContext
from core.db import utcnow
from core.errors import NotFound
from core.events import EventRow
from core.settings import RetentionSettings
from ivr import voicemail
from ivr.cdr import CallRecord
from ivr.voicemail import VoicemailMessageRow

log = structlog.get_logger(__name__)

BATCH_ROWS = 5000
FIRST_RUN_AFTER_S = 60.0
INTERVAL_S = 86400.0
RETENTION_APPLIED = "retention_applied"
VOICEMAIL = "voicemail_messages"
RECORDINGS = "call_recordings"


@dataclass(frozen=True)
class Expiry:
    table: str
    before: datetime  # rows older than this go


def expiries(settings: RetentionSettings, now: datetime) -> list[Expiry]:
    """What to delete now; a period of 0 keeps that table for ever."""
    periods = {
        "events": settings.events_days,
        "queue_log": settings.queue_log_days,
        "presence_history": settings.presence_history_days,
        "calls": settings.calls_days,
    }
    return [Expiry(table, now - timedelta(days=days)) for table, days in periods.items() if days]


def _expired(expiry: Expiry) -> tuple[Any, ColumnElement[bool]]:
    """The table's model and which of its rows are expired."""
    match expiry.table:
        case "events":
            return EventRow, EventRow.occurred_at < expiry.before
        case "queue_log":
            return QueueLogRow, QueueLogRow.at < expiry.before
        case "presence_history":
            return PresenceHistoryRow, PresenceHistoryRow.at < expiry.before
        case "calls":
            # An open call is never history, however old (it is closed at the next start).
            return CallRecord, CallRecord.ended_at < expiry.before
    raise ValueError(f"no retention rule for {expiry.table}")


class RetentionJob:
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="retention")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def apply(self, now: datetime | None = None) -> dict[str, int]:
        """One pass over every table; returns the rows deleted per table."""
        deleted: dict[str, int] = {}
        now = now or utcnow()
        retention = self._ctx.settings.retention
        kept_days = [d for d in (retention.recordings_days, retention.calls_days) if d]
        if kept_days:
            count = await self._delete_recordings(now - timedelta(days=min(kept_days)))
            if count:
                deleted[RECORDINGS] = count
                self._ctx.metrics.retention_deleted.labels(table=RECORDINGS).inc(count)
        for expiry in expiries(self._ctx.settings.retention, now):
            count = await self._delete(expiry)
            if count:
                deleted[expiry.table] = count
                self._ctx.metrics.retention_deleted.labels(table=expiry.table).inc(count)
        days = self._ctx.settings.retention.voicemail_days
        if days:
            count = await self._delete_voicemail(now - timedelta(days=days))
            if count:
                deleted[VOICEMAIL] = count
                self._ctx.metrics.retention_deleted.labels(table=VOICEMAIL).inc(count)
        if deleted:
            async with self._ctx.sessions.begin() as session:
                event = await self._ctx.events.stage(
                    session, RETENTION_APPLIED, {"deleted": deleted}
                )
            await self._ctx.events.publish(event)
        log.info(RETENTION_APPLIED, deleted=deleted)
        return deleted

    async def _run(self) -> None:
        await asyncio.sleep(FIRST_RUN_AFTER_S)
        while True:
            try:
                await self.apply()
            except Exception:  # a failed pass is tried again the next day, not the end of it
                log.exception("retention_failed")
            await asyncio.sleep(INTERVAL_S)

    async def _delete_recordings(self, before: datetime) -> int:
        """Delete the recording files of calls started before `before`, a batch at a time."""
        data_dir = self._ctx.settings.data_dir
        total = 0
        while True:
            async with self._ctx.sessions.begin() as session:
                rows = list(await session.scalars(
                    select(CallRecord)
                    .where(CallRecord.recording_path.is_not(None), CallRecord.started_at < before)
                    .order_by(CallRecord.id)
                    .limit(BATCH_ROWS)
                ))  # fmt: skip
                for row in rows:
                    assert row.recording_path is not None
                    path = data_dir / row.recording_path
                    await asyncio.to_thread(path.unlink, missing_ok=True)
                    row.recording_path = None
            total += len(rows)
            if len(rows) < BATCH_ROWS:
                return total

    async def _delete_voicemail(self, before: datetime) -> int:
        async with self._ctx.sessions() as session:
            expired = list(await session.scalars(
                select(VoicemailMessageRow.id).where(VoicemailMessageRow.created_at < before)
            ))  # fmt: skip
        for message_id in expired:
            with contextlib.suppress(NotFound):  # its owner deleted it meanwhile
                await voicemail.delete_message(self._ctx, message_id)
        return len(expired)

    async def _delete(self, expiry: Expiry) -> int:
        model, expired = _expired(expiry)
        total = 0
        while True:
            async with self._ctx.sessions.begin() as session:
                newest = await session.scalar(select(func.max(model.id)))
                batch = (
                    select(model.id)
                    .where(expired, model.id < (newest or 0))
                    .order_by(model.id)
                    .limit(BATCH_ROWS)
                )
                result = await session.execute(
                    delete(model)
                    .where(model.id.in_(batch))
                    .execution_options(synchronize_session=False)
                )
            count = int(getattr(result, "rowcount", 0) or 0)
            total += count
            if count < BATCH_ROWS:
                return total
