"""Agent presence as a service: every change goes through Redis atomically, then becomes a
history row, an event and a metric. The dispatcher hears about it through the event."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from weakref import WeakKeyDictionary

import structlog
from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from acd.models import PresenceHistoryRow
from acd.presence import (
    Presence,
    after_restart,
    choose_status,
    end_wrap_up,
    tick,
    wrap_up_length,
)
from acd.presence_store import PresenceStore, Transition
from core.context import ServiceContext
from core.db import utcnow
from core.write_behind import Staged, WriteBehind, already_written
from extensions.models import User
from extensions.phones import UserInactive
from extensions.users import load_user

log = structlog.get_logger(__name__)

PRESENCE_CHANGED = "presence_changed"
PRESENCE_TOPIC = "presence"


@dataclass(frozen=True)
class AgentPresence:
    user_id: int
    name: str
    presence: Presence


# What each process last saw of every agent's presence, per Redis client (acd.presence_store:
# a change is then one round trip).
_remembered: WeakKeyDictionary[Redis, dict[int, str | None]] = WeakKeyDictionary()


def store(ctx: ServiceContext) -> PresenceStore:
    remembered = _remembered.setdefault(ctx.redis, {})
    return PresenceStore(ctx.redis, remembered=remembered)


async def change_presence(
    ctx: ServiceContext, user_id: int, transition: Transition, cause: str
) -> Presence:
    """Apply one transition; a visible change is recorded, published and counted."""
    before, after = await store(ctx).update(user_id, transition)
    if after != before:
        ctx.wakeups.changed(PRESENCE_TOPIC, (user_id, after))
    if _visible(before) != _visible(after):
        _record(ctx, user_id, before, after, cause)
    return after


def watch_presence(
    ctx: ServiceContext, watcher: Callable[[int, Presence], None]
) -> Callable[[], None]:
    """Calls `watcher` with every agent's presence right after its change is stored, before
    its history row and event; returns the function that stops watching."""

    def on_change(value: tuple[int, Presence]) -> None:
        watcher(*value)

    ctx.wakeups.watch(PRESENCE_TOPIC, on_change)
    return lambda: ctx.wakeups.unwatch(PRESENCE_TOPIC, on_change)


async def choose(
    ctx: ServiceContext, user_id: int, status: str, *, reason: str | None, message: str | None,
    by: str,
) -> Presence:  # fmt: skip
    """An agent's or supervisor's choice. `ready` during wrap-up ends it early."""
    async with ctx.sessions() as session:
        user = await load_user(session, user_id)
        if not user.active:
            raise UserInactive(f"user {user_id} is dismissed", details={"user_id": user_id})
    acd = ctx.settings.acd
    wrap_up = wrap_up_length(user.wrap_up_time, acd.wrap_up_time)
    now = store(ctx).now()

    def transition(current: Presence) -> Presence:
        return choose_status(
            current, status, reason=reason, message=message,
            reasons=frozenset(acd.not_ready_reasons), now=now, wrap_up_seconds=wrap_up,
        )  # fmt: skip

    return await change_presence(ctx, user_id, transition, by)


async def end_wrap_up_of(ctx: ServiceContext, user_id: int, by: str) -> Presence:
    return await change_presence(ctx, user_id, end_wrap_up, by)


async def apply_feature_code(ctx: ServiceContext, user_id: int, feature: str) -> Presence:
    """ready | not_ready (with the first configured reason) | end_wrap_up | logged_out."""
    by = "feature_code"
    if feature == "end_wrap_up":
        return await end_wrap_up_of(ctx, user_id, by)
    reason = ctx.settings.acd.not_ready_reasons[0] if feature == "not_ready" else None
    return await choose(ctx, user_id, feature, reason=reason, message=None, by=by)


async def presence_of(ctx: ServiceContext, user_id: int) -> Presence:
    async with ctx.sessions() as session:
        await load_user(session, user_id)
    return await store(ctx).get(user_id)


async def wallboard(ctx: ServiceContext) -> list[AgentPresence]:
    """Every active user with their presence (logged_out when never set)."""
    async with ctx.sessions() as session:
        users = list(await session.execute(
            select(User.id, User.name).where(User.active.is_(True)).order_by(User.id)
        ))  # fmt: skip
    presences = await store(ctx).get_many(user_id for user_id, _ in users)
    return [AgentPresence(user_id, name, presences[user_id]) for user_id, name in users]


async def expire_wrap_ups(ctx: ServiceContext) -> float | None:
    """End every wrap-up whose time is up; returns the next deadline (epoch) still ahead."""
    presence_store = store(ctx)
    now = presence_store.now()
    upcoming: float | None = None
    for user_id, presence in (await presence_store.get_many(
        await presence_store.known_agents()
    )).items():  # fmt: skip
        deadline = presence.wrap_up_until
        if deadline is None:
            continue
        if deadline <= now:
            await change_presence(ctx, user_id, lambda p: tick(p, now), "wrap_up_over")
        else:
            upcoming = deadline if upcoming is None else min(upcoming, deadline)
    return upcoming


async def recover_after_restart(ctx: ServiceContext) -> int:
    """Calls died with the previous run; clear their traces, keep every agent's choices."""
    presence_store = store(ctx)
    agents = await presence_store.known_agents()
    for user_id in agents:
        await change_presence(ctx, user_id, after_restart, "restart")
    log.info("presence_recovered", agents=len(agents))
    return len(agents)


async def log_out_dismissed(ctx: ServiceContext, user_id: int) -> None:
    await change_presence(ctx, user_id, lambda _p: Presence(), "dismissed")


def presence_data(user_id: int, presence: Presence) -> dict[str, Any]:
    pending = presence.pending
    return {
        "user_id": user_id,
        "status": presence.status.value,
        "reason": presence.reason,
        "message": presence.message,
        "activity": presence.shown_activity.value,
        "since": _iso(presence.changed_at),
        "wrap_up_until": _iso(presence.wrap_up_until),
        "pending": (
            {"status": pending.status.value, "reason": pending.reason, "message": pending.message}
            if pending is not None
            else None
        ),
    }


def _visible(presence: Presence) -> tuple[Any, ...]:
    pending = presence.pending
    return (
        presence.status, presence.reason, presence.message, presence.shown_activity,
        presence.wrap_up_until,
        (pending.status, pending.reason, pending.message) if pending else None,
    )  # fmt: skip


def _record(
    ctx: ServiceContext, user_id: int, before: Presence, after: Presence, cause: str
) -> None:
    """The history row and its event follow the change (write-behind): the change itself is
    in Redis already and the controller saw it in-process, so no offer waits for SQL."""
    data = presence_data(user_id, after)
    data["cause"] = cause
    data["previous"] = {"status": before.status.value, "activity": before.shown_activity.value}
    ctx.writes.submit(_HISTORY_ROW, {
        "id": ctx.writes.next_id(_HISTORY_SEQUENCE), "at": utcnow().isoformat(),
        "user_id": user_id, "event": data,
    })  # fmt: skip
    ctx.metrics.presence_changes.labels(status=after.status.value).inc()
    log.info(PRESENCE_CHANGED, user_id=user_id, status=after.status.value,
             activity=after.shown_activity.value, cause=cause)  # fmt: skip


_HISTORY_ROW = "presence_history"
_HISTORY_SEQUENCE = "presence_history"


def register_writes(writer: WriteBehind) -> None:
    writer.sequence(_HISTORY_SEQUENCE, PresenceHistoryRow.id)
    writer.register(_HISTORY_ROW, _apply_history_row)


async def _apply_history_row(session: AsyncSession, row: dict[str, Any]) -> Staged:
    # Ids come from memory, so a row replayed after a crash is known by its id.
    if await already_written(session, PresenceHistoryRow, row["id"]):
        return []
    data: dict[str, Any] = row["event"]
    session.add(PresenceHistoryRow(
        id=row["id"], at=datetime.fromisoformat(row["at"]), user_id=row["user_id"],
        status=data["status"], reason=data["reason"], message=data["message"],
        activity=data["activity"], cause=str(data["cause"])[:32],
    ))  # fmt: skip
    return [(PRESENCE_CHANGED, data)]


def _iso(epoch: float | None) -> str | None:
    if not epoch:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat()
