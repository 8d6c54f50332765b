"""The chat assigner: the one owner of "which agent takes which waiting dialog", and the one
writer of customers' messages.

Decisions are made from memory (chat.board: open dialogs, channels, presence; kept current by
the events of every change, built from SQL and Redis at start) by the pure rule in
chat.assignment, and the writes follow them (chat.writes, one transaction per pass). A pass
runs when
- customers' messages are handed over (`receive`, from the connector's POST): the pass
  writes all that arrived since the last one and places the dialogs they open in that same
  transaction, so message -> assigned is one commit, and a burst is one commit too;
- an event may let a waiting dialog find an agent (presence, a dialog closed, forwarded,
  requeued or answered, a channel changed), and a dialog waits;
- a deadline falls due: an unanswered dialog's idle time, a closed channel's opening. That is
  the one timer; nothing polls.

Memory may be behind SQL by the events still on their way; chat.writes checks the plan
against SQL inside its transaction and hands back SQL's view where they differ, so limits
hold when assignments race, and the next pass plans with the corrected memory.

The clock is injected: `assign_round(now)` is one pass at any time a test chooses.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import NamedTuple

import structlog
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from acd.agents import store, watch_presence
from acd.presence import Presence
from chat.assignment import Placement, WaitingDialog, plan_placements
from chat.blocklist import Action, action_in, all_actions
from chat.board import Board
from chat.channels import all_channel_specs
from chat.dialogs import BadChannelSecret, Blocked
from chat.models import ChannelRow, DialogOfferRow, DialogRow
from chat.writes import CustomerMessage, Inbound, PassOutcome, PassPlan, open_dialog, write_pass
from core.background import PassLoop
from core.context import ServiceContext
from core.errors import NotFound
from core.events import EventRow
from core.read_cache import ReadCache
from core.wakeups import Published

log = structlog.get_logger(__name__)

LAST_ASSIGNED_KEY = "pbx:chat:last_assigned"
# After a failed pass (SQL unavailable), the next try.
RETRY_S = 1.0
# With no deadline ahead, a pass anyway this often: a safety net, not a poll.
IDLE_S = 3600.0


class RoundResult(NamedTuple):
    looked_at: int
    # Dialogs given to an agent (offers to several agents are not counted).
    assigned: int


@dataclass
class _Handed:
    """A customer's message handed to the next pass, and its answer."""

    message: CustomerMessage
    answer: asyncio.Future[Inbound]


class ChatAssigner:
    def __init__(self, ctx: ServiceContext, clock: Callable[[], float] = time.time) -> None:
        self._ctx = ctx
        self._clock = clock
        self._board: Board | None = None
        # Events published while the board is being built, applied once it is.
        self._early: list[Published] | None = None
        # Presences stored while there is no board, set on it once built (the last one wins).
        self._early_presences: dict[int, Presence] = {}
        self._unwatch_presence: Callable[[], None] | None = None
        self._handed: list[_Handed] = []
        # One pass at a time (the loop's and a test's assign_round).
        self._turn = asyncio.Lock()
        # Set while this assigner publishes: its own events give it no new work.
        self._publishing = False
        self._retry_at: float | None = None
        self._loop = PassLoop("chat-assigner", self._pass, wakes_on=_never, retry_s=RETRY_S)
        # The connector's checks, from memory after the first message of a channel.
        self._secrets: ReadCache[int, str | None] = ReadCache(
            self._secret_of, emptied_by=("channel_",), wakeups=ctx.wakeups
        )
        self._blocklist: ReadCache[None, dict[str, Action]] = ReadCache(
            lambda _all: all_actions(ctx), emptied_by=("blocklist_",), wakeups=ctx.wakeups
        )

    # -- life -------------------------------------------------------------------------------

    async def start(self) -> None:
        # Watched first, so no change is missed while the board is read.
        self._unwatch_presence = watch_presence(self._ctx, self._presence_changed)
        self._ctx.wakeups.add_event_listener(self._on_event)
        await self._rebuild()
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()
        self._ctx.wakeups.remove_event_listener(self._on_event)
        if self._unwatch_presence is not None:
            self._unwatch_presence()
            self._unwatch_presence = None
        if self._handed:  # handed over after the last pass: accepted, so written
            async with self._turn:
                await self._run(self._clock())

    # -- the connector's side ---------------------------------------------------------------

    async def receive(
        self, channel_id: int, secret: str, customer_id: str, customer_name: str | None,
        text: str,
    ) -> Inbound:  # fmt: skip
        """A customer's message: checked here, written (and its dialog placed) by the next
        pass; answers once that has committed."""
        expected = await self._secrets.get(channel_id)
        if expected is None:
            raise NotFound(f"channel {channel_id} does not exist")
        if not hmac.compare_digest(expected.encode(), secret.encode()):
            raise BadChannelSecret("X-Channel-Secret does not match this channel's secret")
        action = action_in(await self._blocklist.get(None), customer_id)
        if action is Action.REFUSE:
            raise Blocked(f"{customer_id} is on the blocklist", field="customer.id")
        message = CustomerMessage(channel_id, customer_id, customer_name, text,
                                  spam=action is Action.SPAM)  # fmt: skip
        answer: asyncio.Future[Inbound] = asyncio.get_running_loop().create_future()
        self._handed.append(_Handed(message, answer))
        self._loop.wake()
        return await answer

    # -- capacity shared with calls ---------------------------------------------------------

    async def blocked_for_calls(self, agents: frozenset[int]) -> frozenset[int]:
        """Agents whose counted open dialogs (each channel's exclusions applied) reach
        chat.block_calls_at; none when it is 0. From memory: the dispatcher asks every round."""
        limit = self._ctx.settings.chat.block_calls_at
        board = self._board
        if limit == 0 or board is None:
            return frozenset()
        return frozenset(a for a in agents if board.counted(a) >= limit)

    # -- passes -----------------------------------------------------------------------------

    async def assign_round(self, now: float) -> RoundResult:
        """One pass at time `now` (epoch seconds)."""
        async with self._turn:
            outcome, looked_at = await self._run(now)
        return RoundResult(looked_at, len(outcome.assigned))

    async def _pass(self) -> float:
        async with self._turn:
            now = self._clock()
            await self._run(now)
            deadline = self._board_now().next_deadline(now)
        if self._retry_at is not None:
            deadline = self._retry_at if deadline is None else min(deadline, self._retry_at)
        if deadline is None:
            return IDLE_S
        return max(0.0, min(IDLE_S, deadline - self._clock()))

    async def _run(self, now: float) -> tuple[PassOutcome, int]:
        if self._board is None:
            await self._rebuild()  # an event could not be applied: memory is rebuilt
        handed, self._handed = self._handed, []
        self._retry_at = None
        plan = self._plan([h.message for h in handed], now)
        if not (plan.messages or plan.placements or plan.withdraw or plan.stay):
            return PassOutcome(), len(plan.waiting)  # nothing to write: no transaction
        try:
            outcome = await self._ctx.sessions.run_whole(partial(write_pass, plan=plan))
        except Exception:
            if not handed:
                raise  # the loop logs it and tries again after RETRY_S
            # The messages must not wait for whatever broke the placing: written alone.
            log.exception("chat_pass_failed", messages=len(handed))
            self._retry_at = now + RETRY_S
            outcome = await self._write_one_by_one(handed, now)
        else:
            _answer(handed, outcome.answers)
        await self._take_in(outcome)
        return outcome, len(plan.waiting)

    async def _write_one_by_one(self, handed: list[_Handed], now: float) -> PassOutcome:
        board = self._board_now()
        done = PassOutcome()
        for item in handed:
            alone = PassPlan(now, messages=[item.message], specs=dict(board.specs))
            try:
                try:
                    one = await self._ctx.sessions.run_whole(partial(write_pass, plan=alone))
                except IntegrityError:
                    # PostgreSQL: the customer's dialog opened (a forward) between the look-up
                    # and the insert; the second look finds it.
                    one = await self._ctx.sessions.run_whole(partial(write_pass, plan=alone))
            except IntegrityError:
                # Its channel was deleted between the check and the write.
                item.answer.set_exception(
                    NotFound(f"channel {item.message.channel_id} does not exist")
                )
                continue
            except Exception as exc:  # answered as the API answers any error (busy: 503)
                item.answer.set_exception(exc)
                continue
            _answer([item], one.answers)
            done.events += one.events
            done.dialogs_created += one.dialogs_created
            done.spam_dialogs += one.spam_dialogs
        done.again = True  # what they opened waits for the next pass
        return done

    def _plan(self, messages: list[CustomerMessage], now: float) -> PassPlan:
        """What to write, decided from memory alone."""
        board = self._board_now()
        idle = board.due_idle(now)
        channels = {d.channel_id for d in board.queued()} | {d.channel_id for d in idle}
        channels |= {m.channel_id for m in messages}
        open_now = board.open_channels(now, channels)
        waiting = {d.id: d.waiting() for d in [*board.queued(), *idle] if d.channel_id in open_now}
        # Messages that open a dialog get a stand-in id (negative) until the write gives one.
        opening: dict[int, int] = {}
        new_customers: set[tuple[int, str]] = set()
        for index, m in enumerate(messages):
            key = (m.channel_id, m.customer_id)
            if m.spam or key in new_customers or board.open_dialog_of(*key) is not None:
                continue
            new_customers.add(key)
            opening[index] = stand_in = -1 - len(opening)
            if m.channel_id in open_now:
                waiting[stand_in] = WaitingDialog(stand_in, m.channel_id, now)
        placements: list[Placement] = []
        if waiting:
            rules = board.rules({w.channel_id for w in waiting.values()})
            members = {m for rule in rules.values() for m in rule.members}
            placements = plan_placements(
                list(waiting.values()), rules, board.presences, board.loads(members),
                board.last_assigned, while_on_call=self._ctx.settings.chat.chats_while_on_call,
                now=now,
            )  # fmt: skip
        placed = {p.dialog_id for p in placements}
        # An offer to the agents it is shown to already changes nothing.
        placements = [p for p in placements if not (p.offer and _offered(board, p))]
        return PassPlan(
            now=now, messages=messages, opening=opening, placements=placements,
            waiting=waiting, rules=board.rules(open_now), specs=dict(board.specs),
            held={a: board.held_by(a) for p in placements if not p.offer for a in p.agents},
            # Shown to agents but nobody can take it now: shown to nobody until someone can.
            withdraw=[d.id for d in board.queued() if d.offered_to and d.id not in placed],
            # Nobody else can take it: it stays, and is looked at again after another wait.
            stay=[d for d in idle if d.id not in placed],
        )  # fmt: skip

    async def _take_in(self, outcome: PassOutcome) -> None:
        """Memory follows what was written and what SQL said; then the events go out."""
        board = self._board_now()
        for dialog_id, facts in outcome.corrected.items():
            board.refresh(facts, dialog_id)
        for dialog_id, deadline in outcome.pushed.items():
            known = board.dialog(dialog_id)
            if known is not None:
                board.put(replace(known, idle_deadline=deadline), dialog_id, None)
        self._publishing = True
        try:
            await self._ctx.events.publish(*outcome.events)
        finally:
            self._publishing = False
        metrics = self._ctx.metrics
        if outcome.answers:
            metrics.chat_messages.labels(direction="in").inc(len(outcome.answers))
        if outcome.dialogs_created:
            metrics.chat_dialogs.labels(event="created").inc(outcome.dialogs_created)
        if outcome.spam_dialogs:
            metrics.chat_dialogs.labels(event="spam").inc(outcome.spam_dialogs)
        for waited in outcome.first_waits:
            metrics.chat_assignment.observe(waited)
        if outcome.first_waits:
            metrics.chat_dialogs.labels(event="assigned").inc(len(outcome.first_waits))
        if outcome.reassigned:
            metrics.chat_dialogs.labels(event="reassigned").inc(outcome.reassigned)
        if outcome.assigned:
            for agent, at in outcome.assigned.items():
                board.note_assigned(agent, at)
            await self._ctx.redis.hset(
                LAST_ASSIGNED_KEY, mapping={str(a): at for a, at in outcome.assigned.items()}
            )
        if outcome.again:
            self._loop.wake()

    # -- memory -----------------------------------------------------------------------------

    async def _rebuild(self) -> None:
        """Builds the board from SQL and Redis; events published meanwhile (heard, since the
        listener is in place) are applied after, in id order."""
        self._early = []
        try:
            board = await self._build_board()
        except BaseException:
            self._early = None
            raise
        early, self._early = self._early, None
        for event in sorted(early, key=lambda e: e.id):
            board.apply(event.id, event.type, event.data)
        early_presences, self._early_presences = self._early_presences, {}
        for user_id, presence in early_presences.items():
            board.set_presence(user_id, presence)
        self._board = board

    async def _build_board(self) -> Board:
        async with self._ctx.sessions() as session:
            # First: every change after this id is in an event still to come.
            high_water = await session.scalar(select(func.max(EventRow.id))) or 0
            rows = list(await session.scalars(select(DialogRow).where(DialogRow.state != "closed")))
            offers: dict[int, list[int]] = {}
            for dialog_id, user_id in await session.execute(
                select(DialogOfferRow.dialog_id, DialogOfferRow.user_id)
                .order_by(DialogOfferRow.dialog_id, DialogOfferRow.user_id)
            ):  # fmt: skip
                offers.setdefault(dialog_id, []).append(user_id)
            specs = await all_channel_specs(session)
        # Everyone with a presence, members or not: whoever joins a channel later is known.
        agents = store(self._ctx)
        presences = await agents.get_many(await agents.known_agents())
        last = {int(k): float(v) for k, v in
                (await self._ctx.redis.hgetall(LAST_ASSIGNED_KEY)).items()}  # fmt: skip
        dialogs = [d for row in rows if (d := open_dialog(row, tuple(offers.get(row.id, ()))))]
        log.info("chat_board_built", open_dialogs=len(dialogs), channels=len(specs))
        return Board(specs, presences, last, dialogs, high_water=high_water)

    def _presence_changed(self, user_id: int, presence: Presence) -> None:
        board = self._board
        if board is None or self._early is not None:
            self._early_presences[user_id] = presence
            return
        board.set_presence(user_id, presence)
        if board.has_queued:
            self._loop.wake()

    def _on_event(self, event: Published) -> None:
        if self._early is not None:
            self._early.append(event)
            return
        board = self._board
        if board is None:
            return
        try:
            concerns_chat = board.apply(event.id, event.type, event.data)
        except Exception:
            # Inside EventBus.publish: never raise into the publisher. Memory may now be
            # wrong, so the next pass builds it again from SQL.
            log.exception("chat_board_event_failed", event_id=event.id, type=event.type)
            self._board = None
            self._loop.wake()
            return
        # Our own events give no new work (they are the work done).
        if concerns_chat and board.has_queued and not self._publishing:
            self._loop.wake()

    async def _secret_of(self, channel_id: int) -> str | None:
        async with self._ctx.sessions() as session:
            found = select(ChannelRow.secret).where(ChannelRow.id == channel_id)
            return await session.scalar(found)

    def _board_now(self) -> Board:
        assert self._board is not None, "the chat assigner has not started"
        return self._board


def _offered(board: Board, placement: Placement) -> bool:
    known = board.dialog(placement.dialog_id)
    return (
        known is not None
        and known.state == "new"
        and known.offered_to == tuple(sorted(placement.agents))
    )


def _answer(handed: Sequence[_Handed], answers: Sequence[Inbound]) -> None:
    for item, inbound in zip(handed, answers, strict=True):
        if not item.answer.done():
            item.answer.set_result(inbound)


def _never(_event_type: str) -> bool:
    return False
