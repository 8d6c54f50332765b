"""Call statistics per agent and per queue, from the call records, the queue log and the
presence history. The figures are a pure fold over plain rows; only the `*_rows` functions
read SQL. A call counts for the period in which it started."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, select

from acd.models import PresenceHistoryRow, QueueLogRow, QueueRow
from acd.presence import Status
from acd.queue_log import QueueEvent
from core.context import ServiceContext
from ivr.cdr import CallRecord, Direction

# The longest wrap-up there can be (a queue's or a user's wrap_up_time is at most an hour);
# the presence history is read this far past the last call's end, so a wrap-up still
# unfinished beyond it counts as open.
MAX_WRAP_UP = timedelta(seconds=3600 + 60)
_WRAP_UP_CAUSE = "call:"
# Outcomes that end a caller's wait in a queue (a failed row with an agent is a lost talk).
_WAIT_ENDS = frozenset({
    QueueEvent.CONNECT, QueueEvent.ABANDON, QueueEvent.TIMEOUT, QueueEvent.EXIT_KEY,
    QueueEvent.FAILED,
})  # fmt: skip


@dataclass(frozen=True)
class CallFacts:
    id: int
    direction: str
    # Whoever took it (inbound and internal calls), or placed it (outbound).
    user_id: int | None
    answered_at: datetime | None
    ended_at: datetime | None

    @property
    def talk_seconds(self) -> float | None:
        if self.answered_at is None or self.ended_at is None:
            return None
        return max(0.0, (self.ended_at - self.answered_at).total_seconds())


@dataclass(frozen=True)
class QueueLogFacts:
    queue_id: int
    call_id: int
    event: str
    user_id: int | None
    wait_seconds: float | None


@dataclass(frozen=True)
class PresenceFacts:
    user_id: int
    at: datetime
    status: str
    cause: str


@dataclass(frozen=True)
class Handling:
    """Talk and wrap-up over answered calls."""

    # Answered calls whose talk is over (a call still going has no talk time yet).
    talked: int
    talk_seconds: float
    mean_talk_seconds: float | None
    # Wrap-ups after those calls that have ended (direct calls have none).
    wrap_ups: int
    wrap_up_seconds: float
    mean_wrap_up_seconds: float | None
    # (talk + wrap-up) per answered call whose talk is over.
    handling_seconds: float | None


@dataclass(frozen=True)
class AgentFigures:
    # Queue calls rung at the agent's phone, and those that rang out or were refused.
    offered: int
    missed: int
    # Calls the agent took: from a queue, and directly (dialled extension, internal calls).
    answered: int
    queue_answered: int
    direct_answered: int
    handling: Handling


@dataclass(frozen=True)
class QueueFigures:
    # Callers sent to the queue; of them, those let in (the others found it full or nobody
    # logged in).
    offered: int
    entered: int
    answered: int
    abandoned: int
    timed_out: int
    left_by_key: int
    refused: int
    # Lost while waiting (a worker died, the service stopped).
    failed: int
    # Over every wait that ended (answered, abandoned, timed out, left by key, failed).
    mean_wait_seconds: float | None
    longest_wait_seconds: float | None
    answered_in_service_level: int
    # answered_in_service_level / waits that ended; None when no wait ended.
    service_level: float | None
    handling: Handling


def wrap_ups(history: Iterable[PresenceFacts]) -> dict[tuple[int, int], float]:
    """(user id, call id) -> seconds of the wrap-up that followed that queue call: from the
    change into wrap_up the call caused to the agent's next status that is not wrap_up.
    `history` oldest first; a wrap-up without an end in it is left out."""
    started: dict[int, tuple[int, datetime] | None] = {}
    previous: dict[int, str] = {}
    spans: dict[tuple[int, int], float] = {}
    for row in history:
        user = row.user_id
        was = previous.get(user)
        previous[user] = row.status
        if row.status == Status.WRAP_UP:
            # Rows during a wrap-up (a direct call coming and going) do not restart it.
            if was != Status.WRAP_UP:
                started[user] = _wrap_up_start(row)
            continue
        begun = started.pop(user, None)
        if begun is not None:
            call_id, at = begun
            spans[(user, call_id)] = max(0.0, (row.at - at).total_seconds())
    return spans


def _wrap_up_start(row: PresenceFacts) -> tuple[int, datetime] | None:
    """A wrap-up a call started (cause `call:<id>`); None for one chosen by hand."""
    if not row.cause.startswith(_WRAP_UP_CAUSE):
        return None
    number = row.cause.removeprefix(_WRAP_UP_CAUSE)
    return (int(number), row.at) if number.isdigit() else None


def queue_connections(log: Iterable[QueueLogFacts]) -> dict[int, tuple[int, int]]:
    """Call id -> (queue id, agent id) of the queue calls that reached an agent."""
    return {
        row.call_id: (row.queue_id, row.user_id)
        for row in log
        if row.event == QueueEvent.CONNECT and row.user_id is not None
    }


def taken_by(call: CallFacts) -> int | None:
    """The user who answered the call: outbound calls are placed by the user, not taken."""
    if call.answered_at is None or call.direction == Direction.OUTBOUND:
        return None
    return call.user_id


def handling(calls: Iterable[CallFacts], wrap_up: Iterable[float]) -> Handling:
    talks = [t for t in (c.talk_seconds for c in calls) if t is not None]
    wraps = list(wrap_up)
    talk, wrapped = sum(talks), sum(wraps)
    return Handling(
        talked=len(talks),
        talk_seconds=round(talk, 3),
        mean_talk_seconds=_mean(talks),
        wrap_ups=len(wraps),
        wrap_up_seconds=round(wrapped, 3),
        mean_wrap_up_seconds=_mean(wraps),
        handling_seconds=round((talk + wrapped) / len(talks), 3) if talks else None,
    )


def agent_figures(
    calls: Iterable[CallFacts],
    log: Iterable[QueueLogFacts],
    wrap_up: dict[tuple[int, int], float],
) -> dict[int, AgentFigures]:
    """Per agent who was offered or took a call."""
    log = list(log)
    connected = queue_connections(log)
    offered: dict[int, int] = {}
    missed: dict[int, int] = {}
    for row in log:
        if row.user_id is None:
            continue
        if row.event == QueueEvent.OFFER:
            offered[row.user_id] = offered.get(row.user_id, 0) + 1
        elif row.event == QueueEvent.NO_ANSWER:
            missed[row.user_id] = missed.get(row.user_id, 0) + 1
    taken: dict[int, list[CallFacts]] = {}
    for call in calls:
        user = connected[call.id][1] if call.id in connected else taken_by(call)
        if user is not None and call.answered_at is not None:
            taken.setdefault(user, []).append(call)
    figures = {}
    for user in sorted(offered.keys() | missed.keys() | taken.keys()):
        mine = taken.get(user, [])
        from_queue = sum(1 for c in mine if c.id in connected)
        ended = [c for c in mine if c.talk_seconds is not None]
        figures[user] = AgentFigures(
            offered=offered.get(user, 0),
            missed=missed.get(user, 0),
            answered=len(mine),
            queue_answered=from_queue,
            direct_answered=len(mine) - from_queue,
            handling=handling(
                ended, (wrap_up[(user, c.id)] for c in ended if (user, c.id) in wrap_up)
            ),
        )
    return figures


def queue_figures(
    calls: Iterable[CallFacts],
    log: Iterable[QueueLogFacts],
    wrap_up: dict[tuple[int, int], float],
    service_level_seconds: float,
) -> dict[int, QueueFigures]:
    """Per queue that appears in the log."""
    by_call = {call.id: call for call in calls}
    rows: dict[int, list[QueueLogFacts]] = {}
    for row in log:
        rows.setdefault(row.queue_id, []).append(row)
    return {
        queue_id: figures_of_queue(mine, by_call, wrap_up, service_level_seconds)
        for queue_id, mine in sorted(rows.items())
    }


def figures_of_queue(
    rows: list[QueueLogFacts],
    calls: dict[int, CallFacts],
    wrap_up: dict[tuple[int, int], float],
    service_level_seconds: float,
) -> QueueFigures:
    """One queue's log rows. A caller may pass a queue more than once (an overflow chain back
    into it): each pass counts."""
    count = Counter(r.event for r in rows)
    waits = [
        r.wait_seconds for r in rows
        if r.event in _WAIT_ENDS and r.wait_seconds is not None
        and not (r.event == QueueEvent.FAILED and r.user_id is not None)
    ]  # fmt: skip
    within = sum(
        1 for r in rows
        if r.event == QueueEvent.CONNECT and r.wait_seconds is not None
        and r.wait_seconds <= service_level_seconds
    )  # fmt: skip
    ended = [
        (r.user_id, calls[r.call_id]) for r in rows
        if r.event == QueueEvent.CONNECT and r.user_id is not None and r.call_id in calls
        and calls[r.call_id].talk_seconds is not None
    ]  # fmt: skip
    refused = count[QueueEvent.FULL] + count[QueueEvent.NO_AGENTS]
    return QueueFigures(
        offered=count[QueueEvent.ENTER] + refused,
        entered=count[QueueEvent.ENTER],
        answered=count[QueueEvent.CONNECT],
        abandoned=count[QueueEvent.ABANDON],
        timed_out=count[QueueEvent.TIMEOUT],
        left_by_key=count[QueueEvent.EXIT_KEY],
        refused=refused,
        failed=sum(1 for r in rows if r.event == QueueEvent.FAILED and r.user_id is None),
        mean_wait_seconds=_mean(waits),
        longest_wait_seconds=max(waits) if waits else None,
        answered_in_service_level=within,
        service_level=round(within / len(waits), 4) if waits else None,
        handling=handling(
            (call for _, call in ended),
            (wrap_up[(u, c.id)] for u, c in ended if (u, c.id) in wrap_up),
        ),
    )


def history_window(
    calls: Iterable[CallFacts], connected: Collection[int]
) -> tuple[datetime, datetime] | None:
    """The stretch of presence history that holds the wrap-ups after the queue calls
    `connected`: from the first answer to the longest wrap-up after the last end."""
    answered = [c for c in calls if c.id in connected and c.answered_at is not None]
    if not answered:
        return None
    first = min(c.answered_at for c in answered if c.answered_at is not None)
    last = max(c.ended_at or c.answered_at for c in answered if c.answered_at is not None)
    return first, last + MAX_WRAP_UP


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 3) if values else None


# -- the reads ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PeriodFacts:
    calls: list[CallFacts]
    log: list[QueueLogFacts]
    wrap_ups: dict[tuple[int, int], float]


async def period_facts(
    ctx: ServiceContext, since: datetime | None, until: datetime | None
) -> PeriodFacts:
    """The calls started in [since, until), their queue log and the wrap-ups after them."""
    calls = await call_rows(ctx, since, until)
    log = await queue_log_rows(ctx, since, until)
    connected = queue_connections(log)
    agents = {user_id for _, user_id in connected.values()}
    history = await presence_rows(ctx, agents, history_window(calls, connected))
    return PeriodFacts(calls, log, wrap_ups(history))


def _started_in(since: datetime | None, until: datetime | None) -> list[ColumnElement[bool]]:
    conditions = []
    if since is not None:
        conditions.append(CallRecord.started_at >= since)
    if until is not None:
        conditions.append(CallRecord.started_at < until)
    return conditions


async def call_rows(
    ctx: ServiceContext, since: datetime | None, until: datetime | None
) -> list[CallFacts]:
    """Calls started in [since, until)."""
    query = select(
        CallRecord.id, CallRecord.direction, CallRecord.user_id, CallRecord.answered_at,
        CallRecord.ended_at,
    ).where(*_started_in(since, until))  # fmt: skip
    async with ctx.sessions() as session:
        return [CallFacts(*row) for row in await session.execute(query)]


async def queue_log_rows(
    ctx: ServiceContext, since: datetime | None, until: datetime | None
) -> list[QueueLogFacts]:
    """The queue log of the calls started in [since, until), oldest first."""
    query = (
        select(QueueLogRow.queue_id, QueueLogRow.call_id, QueueLogRow.event)
        .add_columns(QueueLogRow.user_id, QueueLogRow.wait_seconds)
        .where(QueueLogRow.call_id.in_(select(CallRecord.id).where(*_started_in(since, until))))
        .order_by(QueueLogRow.id)
    )
    async with ctx.sessions() as session:
        return [QueueLogFacts(*row) for row in await session.execute(query)]


async def presence_rows(
    ctx: ServiceContext, user_ids: Collection[int], window: tuple[datetime, datetime] | None
) -> list[PresenceFacts]:
    """The presence history of `user_ids` within `window`, oldest first."""
    if window is None or not user_ids:
        return []
    query = (
        select(PresenceHistoryRow.user_id, PresenceHistoryRow.at)
        .add_columns(PresenceHistoryRow.status, PresenceHistoryRow.cause)
        .where(PresenceHistoryRow.user_id.in_(list(user_ids)))
        .where(PresenceHistoryRow.at >= window[0], PresenceHistoryRow.at < window[1])
        .order_by(PresenceHistoryRow.id)
    )
    async with ctx.sessions() as session:
        return [PresenceFacts(*row) for row in await session.execute(query)]


async def queue_names(ctx: ServiceContext) -> dict[int, str]:
    async with ctx.sessions() as session:
        return dict((i, n) for i, n in await session.execute(select(QueueRow.id, QueueRow.name)))
