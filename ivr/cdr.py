"""Call detail records: one row per call, written behind it as it starts, is answered and ends."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import structlog
from sqlalchemy import JSON, Float, Integer, String, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from core.context import ServiceContext
from core.db import Base, UtcDateTime, utcnow
from core.errors import NotFound
from core.write_behind import Staged, WriteBehind, already_written

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
    CALLBACK = "callback"  # the caller asked a queue to call them back (flows.callback)


# Final answers of a callee that never answered, by what they mean for the caller.
BUSY_CODES = frozenset({486, 600})
UNAVAILABLE_CODES = frozenset({404, 410, 480, 484, 603})


def disposition_of(code: int) -> Disposition:
    """The disposition of a call whose callee ended it with `code` before answering."""
    if code in BUSY_CODES:
        return Disposition.BUSY
    if code in UNAVAILABLE_CODES:
        return Disposition.UNAVAILABLE
    if code >= 500:
        return Disposition.FAILED
    return Disposition.NO_ANSWER  # 408 ring timeout, 487 cancelled


class CallRecord(Base):
    __tablename__ = "calls"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    direction: Mapped[str] = mapped_column(String(16), index=True)
    # Indexed, as `called` and `connected_to` are: a customer's timeline looks calls up by number.
    caller: Mapped[str] = mapped_column(String(128), index=True)
    # What was dialled: the company number, an extension or an external number.
    called: Mapped[str] = mapped_column(String(128), index=True)
    # Who took it: an extension (or the external number for outbound calls).
    connected_to: Mapped[str | None] = mapped_column(String(128), default=None, index=True)
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
    # The call's recording (both voices), relative to the data folder, and its length.
    recording_path: Mapped[str | None] = mapped_column(String(500), default=None)
    recording_seconds: Mapped[float | None] = mapped_column(Float, default=None)
    # Each time a phone passed the call on: [{"at", "by", "by_user_id", "to", "kind"}].
    transfers: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)


@dataclass(frozen=True)
class CallFilter:
    direction: Direction | None = None
    disposition: Disposition | None = None
    user_id: int | None = None
    party: str | None = None  # caller, called or connected_to
    started_after: datetime | None = None
    started_before: datetime | None = None
    recorded: bool | None = None  # has a recording, or has none


class CallLog:
    """The record of one live call. Each step is handed to the write-behind writer (journaled,
    committed in a batch with its event a few milliseconds later) and counted; the call path
    never waits on SQL for it. The id is allocated in memory, so it exists at once."""

    def __init__(self, ctx: ServiceContext, record_id: int, direction: Direction) -> None:
        self._ctx = ctx
        self.id = record_id
        self.direction = direction
        self._closed = False
        # The company number called asks for its calls to be recorded (flows.recording).
        self.number_records = False
        # The user whose phone placed the call, if one did.
        self.caller_user_id: int | None = None

    @classmethod
    def open(
        cls,
        ctx: ServiceContext,
        *,
        direction: Direction,
        caller: str,
        called: str,
        worker_id: int,
        user_id: int | None = None,
    ) -> CallLog:
        call_id = ctx.writes.next_id(CALLS_SEQUENCE)
        ctx.writes.submit(_OPEN, {
            "id": call_id, "at": _now(), "direction": direction.value, "caller": caller,
            "called": called, "worker_id": worker_id, "user_id": user_id,
        })  # fmt: skip
        ctx.metrics.active_calls.labels(direction=direction.value).inc()
        log.info("call_started", call_id=call_id, direction=direction, caller=caller, called=called)
        call = cls(ctx, call_id, direction)
        call.caller_user_id = user_id
        return call

    @classmethod
    def taken_over(cls, ctx: ServiceContext, record_id: int, direction: Direction) -> CallLog:
        """The record of a call a lost controller opened, which this one carries on."""
        node = ctx.settings.cluster.node or "single"
        ctx.writes.submit(_TAKEN_OVER, {"id": record_id, "at": _now(), "node": node})
        ctx.metrics.active_calls.labels(direction=direction.value).inc()
        log.info("call_taken_over", call_id=record_id, node=node)
        return cls(ctx, record_id, direction)

    def add_leg(self, leg_id: str, role: str, sip_call_id: str | None) -> None:
        self._ctx.writes.submit(_LEG, {
            "id": self.id, "leg": leg_id, "role": role, "sip_call_id": sip_call_id,
        })  # fmt: skip

    def system_answered(self) -> None:
        self._ctx.writes.submit(_SYSTEM_ANSWERED, {"id": self.id, "at": _now()})

    def answered(self, connected_to: str, user_id: int | None = None) -> None:
        self._ctx.writes.submit(_ANSWERED, {
            "id": self.id, "at": _now(), "connected_to": connected_to, "user_id": user_id,
        })  # fmt: skip
        log.info("call_answered", call_id=self.id, connected_to=connected_to)

    def transferred(self, by: str, by_user_id: int | None, to: str, kind: str) -> None:
        """Extension `by` passed the call on to `to` (what it dialled), `kind` blind or
        attended; whoever answers there is the call's `connected_to` from then on."""
        self._ctx.writes.submit(_TRANSFERRED, {
            "id": self.id, "at": _now(), "by": by, "by_user_id": by_user_id, "to": to,
            "kind": kind,
        })  # fmt: skip
        log.info("call_transferred", call_id=self.id, by=by, to=to, kind=kind)

    def recorded(self, path: str, seconds: float) -> None:
        """The call's recording is complete: `path` relative to the data folder."""
        self._ctx.writes.submit(_RECORDED, {"id": self.id, "path": path, "seconds": seconds})

    def ended(self, disposition: Disposition, hangup_by: str) -> None:
        """Idempotent: the first end wins (both legs may report it)."""
        if self._closed:
            return
        self._closed = True
        submit_end(self._ctx, self.id, utcnow(), disposition, hangup_by)
        metrics = self._ctx.metrics
        metrics.active_calls.labels(direction=self.direction.value).dec()
        metrics.calls.labels(direction=self.direction.value, disposition=disposition.value).inc()
        log.info("call_ended", call_id=self.id, disposition=disposition, hangup_by=hangup_by)


def supervised(
    ctx: ServiceContext, call_id: int, supervisor_user_id: int, agent_user_id: int | None,
    mode: StrEnum,
) -> None:  # fmt: skip
    """A supervisor heard the call (from `mode` on): an event, behind the call like its steps."""
    ctx.writes.submit(_SUPERVISED, {
        "call_id": call_id, "at": _now(), "supervisor_user_id": supervisor_user_id,
        "user_id": agent_user_id, "mode": mode.value,
    })  # fmt: skip


def submit_end(
    ctx: ServiceContext, call_id: int, at: datetime, disposition: Disposition, hangup_by: str
) -> None:
    ctx.writes.submit(_ENDED, {
        "id": call_id, "at": at.isoformat(), "disposition": disposition.value,
        "hangup_by": hangup_by,
    })  # fmt: skip


# -- the rows, written behind the call (core.write_behind) ------------------------------------

CALLS_SEQUENCE = "calls"
_OPEN = "call_open"
_LEG = "call_leg"
_SYSTEM_ANSWERED = "call_system_answered"
_ANSWERED = "call_answered"
_ENDED = "call_ended"
_RECORDED = "call_recorded"
_TRANSFERRED = "call_transferred"
_SUPERVISED = "call_supervised"
_TAKEN_OVER = "call_taken_over"


def register_writes(writer: WriteBehind) -> None:
    """Each applier is idempotent: a journal replayed after a crash may hold committed steps."""
    writer.sequence(CALLS_SEQUENCE, CallRecord.id)
    writer.register(_OPEN, _apply_open)
    writer.register(_LEG, _apply_leg)
    writer.register(_SYSTEM_ANSWERED, _apply_system_answered)
    writer.register(_ANSWERED, _apply_answered)
    writer.register(_ENDED, _apply_ended)
    writer.register(_RECORDED, _apply_recorded)
    writer.register(_TRANSFERRED, _apply_transferred)
    writer.register(_SUPERVISED, _apply_supervised)
    writer.register(_TAKEN_OVER, _apply_taken_over)


async def _apply_open(session: AsyncSession, data: dict[str, Any]) -> Staged:
    if await already_written(session, CallRecord, data["id"]):
        return []
    row = CallRecord(
        id=data["id"], direction=data["direction"], caller=data["caller"], called=data["called"],
        worker_id=data["worker_id"], user_id=data["user_id"], started_at=_time(data["at"]),
        connected_to=None, system_answered_at=None, answered_at=None, ended_at=None,
        disposition=None, hangup_by=None, legs=[], transfers=[],
    )  # fmt: skip
    session.add(row)
    return [("call_started", _event_data(row))]


async def _apply_leg(session: AsyncSession, data: dict[str, Any]) -> Staged:
    row = await _row(session, data)
    if row is None or any(leg["leg"] == data["leg"] for leg in row.legs):
        return []
    leg = {"leg": data["leg"], "role": data["role"], "sip_call_id": data["sip_call_id"]}
    # A new list: SQLAlchemy does not see in-place changes of a JSON column.
    row.legs = [*row.legs, leg]
    return []


async def _apply_system_answered(session: AsyncSession, data: dict[str, Any]) -> Staged:
    row = await _row(session, data)
    if row is not None and row.system_answered_at is None:
        row.system_answered_at = _time(data["at"])
    return []


async def _apply_answered(session: AsyncSession, data: dict[str, Any]) -> Staged:
    row = await _row(session, data)
    at = _time(data["at"])
    if (
        row is None
        or row.answered_at == at
        or (row.connected_to == data["connected_to"] and row.answered_at is not None)
    ):
        return []
    # After a transfer the next party answers: the call was answered at the first answer
    # (waits and service levels count to it), and is connected to the latest.
    row.answered_at = row.answered_at or at
    row.connected_to = data["connected_to"]
    if data["user_id"] is not None:
        row.user_id = data["user_id"]
    return [("call_answered", _event_data(row))]


async def _apply_ended(session: AsyncSession, data: dict[str, Any]) -> Staged:
    row = await _row(session, data)
    if row is None or row.ended_at is not None:
        return []  # the first end wins
    row.ended_at = _time(data["at"])
    row.disposition = data["disposition"]
    row.hangup_by = data["hangup_by"]
    return [("call_ended", _event_data(row))]


async def _apply_recorded(session: AsyncSession, data: dict[str, Any]) -> Staged:
    row = await _row(session, data)
    if row is None or row.recording_path == data["path"]:
        return []
    row.recording_path = data["path"]
    row.recording_seconds = round(data["seconds"], 3)
    return [("call_recorded", {
        "call_id": row.id, "user_id": row.user_id, "seconds": row.recording_seconds,
    })]  # fmt: skip


async def _apply_transferred(session: AsyncSession, data: dict[str, Any]) -> Staged:
    row = await _row(session, data)
    step = {key: data[key] for key in ("at", "by", "by_user_id", "to", "kind")}
    if row is None or step in row.transfers:
        return []
    row.transfers = [*row.transfers, step]
    return [("call_transferred", {"call_id": row.id, **step})]


async def _apply_supervised(session: AsyncSession, data: dict[str, Any]) -> Staged:
    return [("call_supervised", dict(data))]


async def _apply_taken_over(session: AsyncSession, data: dict[str, Any]) -> Staged:
    return [("call_taken_over", {"call_id": data["id"], "at": data["at"], "node": data["node"]})]


async def _row(session: AsyncSession, data: dict[str, Any]) -> CallRecord | None:
    row = await session.get(CallRecord, data["id"])
    if row is None:
        # Its call_open is always submitted first; a missing row is a bug, not a reason to
        # block every later write behind it.
        log.error("call_record_missing", call_id=data["id"])
    return row


# -- after a crash ------------------------------------------------------------------------------


async def open_calls(ctx: ServiceContext) -> dict[int, tuple[datetime, bool]]:
    """Calls without an end (the service stopped under them): the last time the record knows
    of (the latest of started, system answered and answered), and whether a person had
    answered."""
    query = select(
        CallRecord.id, CallRecord.started_at, CallRecord.system_answered_at,
        CallRecord.answered_at,
    ).where(CallRecord.ended_at.is_(None))  # fmt: skip
    async with ctx.sessions() as session:
        rows = (await session.execute(query)).all()
    return {row[0]: (max(t for t in row[1:] if t is not None), row[3] is not None) for row in rows}


def _now() -> str:
    return utcnow().isoformat()


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value)


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
    if where.recorded is not None:
        has_file = CallRecord.recording_path.is_not(None)
        query = query.where(has_file if where.recorded else ~has_file)
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


async def calls_with_party(
    ctx: ServiceContext, numbers: list[str], older_than: tuple[datetime, int] | None, limit: int
) -> list[CallRecord]:
    """Calls where one of `numbers` called, was dialled or answered, newest first (by start,
    then id), older than `older_than` (start, id) when given."""
    query = select(CallRecord).where(
        CallRecord.caller.in_(numbers)
        | CallRecord.called.in_(numbers)
        | CallRecord.connected_to.in_(numbers)
    )
    if older_than is not None:
        at, below = older_than
        query = query.where(
            (CallRecord.started_at < at) | ((CallRecord.started_at == at) & (CallRecord.id < below))
        )
    query = query.order_by(CallRecord.started_at.desc(), CallRecord.id.desc()).limit(limit)
    async with ctx.sessions() as session:
        return list(await session.scalars(query))
