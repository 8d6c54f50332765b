"""The chat assigner: the one owner of "which agent takes which waiting dialog".

A round (after a dialog arrives or frees capacity, a presence or channel change, and at least
every second) loads the waiting dialogs and the ones sitting unanswered past their idle time,
plans with chat.assignment (pure) and applies the plan in the same SQL transaction with
conditional UPDATEs, so a dialog claimed meanwhile is simply not assigned again. The clock is
injected: `assign_round(now)` is one round at any time a test chooses.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import structlog
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from acd.agents import store
from chat.assignment import (
    Distribution,
    Loads,
    Placement,
    WaitingDialog,
    counted_open,
    plan_placements,
)
from chat.channels import ChannelSpec, channel_specs
from chat.dialogs import dialog_data, offered_to, open_dialog_loads
from chat.models import DialogOfferRow, DialogRow
from chat.working_hours import is_open
from core.background import PassLoop
from core.context import ServiceContext
from core.events import Event

log = structlog.get_logger(__name__)

TICK_S = 1.0
# Dialogs looked at per round; a full round is followed by another at once.
ROUND_LIMIT = 500
LAST_ASSIGNED_KEY = "pbx:chat:last_assigned"
# Events that bring a dialog to place (our own assignments are not among them).
_NEW_WORK_EVENTS = ("channel_", "dialog_created", "dialog_forwarded", "dialog_requeued")
# Events after which a dialog still waiting may find an agent. Calls change presence several
# times each: while no dialog waits they must not cost a round.
_CAPACITY_EVENTS = ("presence_changed", "user_", "dialog_closed", "message_sent")


class RoundResult(NamedTuple):
    looked_at: int
    # Dialogs given to an agent (offers to several agents are not counted).
    assigned: int


class ChatAssigner:
    def __init__(self, ctx: ServiceContext, clock: Callable[[], float] = time.time) -> None:
        self._ctx = ctx
        self._clock = clock
        # Whether the last round left dialogs unplaced (unknown at start).
        self._dialogs_waiting = True
        self._loop = PassLoop("chat-assigner", self._pass, wakes_on=self._wakes_on, retry_s=TICK_S)

    def start(self) -> None:
        self._loop.start(self._ctx.wakeups)

    async def stop(self) -> None:
        await self._loop.stop()

    def wake(self) -> None:
        self._loop.wake()

    async def assign_round(self, now: float) -> RoundResult:
        """One round at time `now` (epoch seconds)."""
        moment = datetime.fromtimestamp(now, UTC)
        if not await self._anything_to_place(moment):
            return RoundResult(0, 0)
        async with self._ctx.sessions.begin() as session:
            queued = list(await session.scalars(
                select(DialogRow).where(DialogRow.state == "new")
                .order_by(DialogRow.queued_at, DialogRow.id).limit(ROUND_LIMIT)
            ))  # fmt: skip
            idle = list(await session.scalars(
                select(DialogRow).where(DialogRow.state == "assigned",
                                        DialogRow.idle_deadline <= moment).limit(ROUND_LIMIT)
            ))  # fmt: skip
            if not queued and not idle:
                return RoundResult(0, 0)
            events, assigned = await self._place(session, queued, idle, now)
        await self._ctx.events.publish(*events)
        if assigned:
            await self._ctx.redis.hset(LAST_ASSIGNED_KEY, mapping=assigned)  # type: ignore[arg-type]
        return RoundResult(len(queued) + len(idle), len(assigned))

    async def _anything_to_place(self, moment: datetime) -> bool:
        """Whether a dialog waits or sat idle too long. Most rounds (woken by a presence
        change) find none: asked without SQLite's write lock, which call presence needs."""
        async with self._ctx.sessions() as session:
            found = await session.scalar(
                select(DialogRow.id)
                .where(
                    (DialogRow.state == "new")
                    | ((DialogRow.state == "assigned") & (DialogRow.idle_deadline <= moment))
                )
                .limit(1)
            )
        return found is not None

    async def _place(
        self, session: AsyncSession, queued: list[DialogRow], idle: list[DialogRow], now: float
    ) -> tuple[list[Event], dict[str, float]]:
        moment = datetime.fromtimestamp(now, UTC)
        specs = await channel_specs(session, {d.channel_id for d in [*queued, *idle]})
        open_now = {c: s for c, s in specs.items() if is_open(s.working_hours, moment)}
        members = sorted({m for s in open_now.values() for m in s.members})
        presences = await store(self._ctx).get_many(members)
        loads = Loads({}, {})
        for (agent, channel_id), states in (await open_dialog_loads(session, members)).items():
            if channel_id in specs:
                loads.per_channel[(agent, channel_id)] = counted_open(
                    states, specs[channel_id].limit_excludes
                )
            loads.total[agent] = loads.total.get(agent, 0) + sum(states.values())
        last = {int(k): float(v) for k, v in
                (await self._ctx.redis.hgetall(LAST_ASSIGNED_KEY)).items()}  # fmt: skip
        waiting = [
            WaitingDialog(d.id, d.channel_id, d.queued_at.timestamp(),
                          d.assignee_id if d.state == "assigned" else None, frozenset(d.tried))
            for d in [*queued, *idle] if d.channel_id in open_now
        ]  # fmt: skip
        plan = plan_placements(
            waiting, {c: s.rule() for c, s in open_now.items()}, presences, loads, last,
            while_on_call=self._ctx.settings.chat.chats_while_on_call, now=now,
        )  # fmt: skip
        dialogs = {d.id: d for d in [*queued, *idle]}
        to_all = [d.id for d in queued if specs[d.channel_id].distribution is Distribution.TO_ALL]
        current_offers = await offered_to(session, to_all)
        events: list[Event] = []
        assigned: dict[str, float] = {}
        for placement in plan:
            dialog = dialogs[placement.dialog_id]
            spec = specs[dialog.channel_id]
            if placement.offer:
                event = await self._offer(session, dialog, placement, current_offers, now)
            else:
                event = await self._assign(session, dialog, placement, spec, now)
                if event is not None:
                    assigned[str(placement.agents[0])] = now
            if event is not None:
                events.append(event)
        placed = {p.dialog_id for p in plan}
        for dialog_id in set(current_offers) - placed:
            # Nobody can take it now: it is shown to nobody until someone can.
            await session.execute(
                delete(DialogOfferRow).where(DialogOfferRow.dialog_id == dialog_id)
            )
            events.append(await self._ctx.events.stage(
                session, "dialog_offered", {**dialog_data(dialogs[dialog_id]), "offered_to": []}
            ))  # fmt: skip
        for dialog in idle:
            if dialog.id not in placed:
                # Nobody else can take it: it stays, and is looked at again after another wait.
                dialog.idle_deadline = _deadline(moment, specs[dialog.channel_id])
        return events, assigned

    async def _assign(
        self, session: AsyncSession, dialog: DialogRow, placement: Placement, spec: ChannelSpec,
        now: float,
    ) -> Event | None:  # fmt: skip
        moment = datetime.fromtimestamp(now, UTC)
        agent = placement.agents[0]
        previous = dialog.assignee_id if dialog.state == "assigned" else None
        tried = [] if placement.new_round else list(dialog.tried)
        if previous is not None:
            tried.append(previous)
        owner = (DialogRow.assignee_id.is_(None) if previous is None
                 else DialogRow.assignee_id == previous)  # fmt: skip
        result = await session.execute(
            update(DialogRow)
            .where(DialogRow.id == dialog.id, DialogRow.state == dialog.state, owner)
            .values(state="assigned", assignee_id=agent, assigned_at=moment, tried=tried,
                    first_assigned_at=func.coalesce(DialogRow.first_assigned_at, moment),
                    idle_deadline=_deadline(moment, spec))
            .execution_options(synchronize_session=False)
        )  # fmt: skip
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return None  # claimed, closed or forwarded meanwhile
        await session.refresh(dialog)
        metrics = self._ctx.metrics
        if previous is None:
            metrics.chat_assignment.observe(max(0.0, now - dialog.queued_at.timestamp()))
            metrics.chat_dialogs.labels(event="assigned").inc()
        else:
            metrics.chat_dialogs.labels(event="reassigned").inc()
        cause = "queue" if previous is None else "idle"
        return await self._ctx.events.stage(session, "dialog_assigned", {
            **dialog_data(dialog), "cause": cause, "previous_assignee_id": previous,
        })  # fmt: skip

    async def _offer(
        self, session: AsyncSession, dialog: DialogRow, placement: Placement,
        current: dict[int, list[int]], now: float,
    ) -> Event | None:  # fmt: skip
        if dialog.state == "assigned":
            # It idled with its taker: back to the queue, shown to the others.
            previous = dialog.assignee_id
            result = await session.execute(
                update(DialogRow)
                .where(DialogRow.id == dialog.id, DialogRow.state == "assigned",
                       DialogRow.assignee_id == previous)
                .values(state="new", assignee_id=None, idle_deadline=None,
                        tried=[*([] if placement.new_round else dialog.tried), previous])
                .execution_options(synchronize_session=False)
            )  # fmt: skip
            if result.rowcount != 1:  # type: ignore[attr-defined]
                return None
            await session.refresh(dialog)
            self._ctx.metrics.chat_dialogs.labels(event="reassigned").inc()
        elif sorted(placement.agents) == current.get(dialog.id, []):
            return None
        await session.execute(delete(DialogOfferRow).where(DialogOfferRow.dialog_id == dialog.id))
        session.add_all(DialogOfferRow(dialog_id=dialog.id, user_id=a) for a in placement.agents)
        return await self._ctx.events.stage(session, "dialog_offered", {
            **dialog_data(dialog), "offered_to": sorted(placement.agents),
        })  # fmt: skip

    def _wakes_on(self, kind: str) -> bool:
        return kind.startswith(_NEW_WORK_EVENTS) or (
            self._dialogs_waiting and kind.startswith(_CAPACITY_EVENTS)
        )

    async def _pass(self) -> float:
        result = await self.assign_round(self._clock())
        self._dialogs_waiting = result.assigned < result.looked_at
        if result.assigned and result.looked_at >= ROUND_LIMIT:
            return 0  # more may be waiting beyond this round's window
        return TICK_S


def _deadline(moment: datetime, spec: ChannelSpec) -> datetime | None:
    return moment + timedelta(seconds=spec.idle_seconds) if spec.idle_seconds > 0 else None
