"""The ACD dispatcher's shell: feeds the pure decision core (acd.decisions) with what happens
and carries out what it decides.

Callers join and leave as entries (the queue call flow holds them); every agent's presence
reaches the core in-process right after its change is stored (acd.agents.watch_presence);
queue rules and chat load are read off the hot path when the events that change them are
published. A decision to ring is carried out by claiming each agent atomically in Redis (the
`offer` transition under WATCH): an agent another writer took meanwhile is not claimed and the
core hears `ClaimFailed`, so an agent never holds two offers. Nothing polls: the only timer is
the core's next wrap-up end.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog
from sqlalchemy import select

from acd.agents import change_presence, store, watch_presence
from acd.decisions import (
    AcdCore,
    AgentTarget,
    CallerJoined,
    CallerLeft,
    CallsBlocked,
    ClaimFailed,
    EndWrapUp,
    Event,
    OfferAnswered,
    OfferEnded,
    PresenceChanged,
    RememberLastOffered,
    Ring,
    RulesChanged,
    Started,
    TimerFired,
)
from acd.matching import QueueRule, serving_order
from acd.models import QueueMemberRow, QueueRow
from acd.presence import NotOfferable, Presence, offer, offer_withdrawn, tick
from acd.strategies import Strategy
from core.context import ServiceContext
from extensions.models import Extension, User
from extensions.numbering import OwnerType

log = structlog.get_logger(__name__)

# Changes to a queue's strategy or members, or to whether and where a member can be rung.
QUEUE_RULE_EVENTS = ("queue_created", "queue_updated", "queue_deleted", "user_", "extension_")
# Changes to agents' open chat dialogs, which may keep calls away (chat.block_calls_at).
CHAT_LOAD_EVENTS = ("dialog_", "channel_")
LAST_OFFERED_KEY = "pbx:acd:last_offered"
ANSWERED_KEY_PREFIX = "pbx:acd:answered:"
TIMER_SLACK_S = 0.002
# Answered waits remembered per queue for the expected-wait announcement.
RECENT_WAITS = 20

# The agents (of those given) whose open chat dialogs keep calls away.
BlockedForCalls = Callable[[frozenset[int]], Awaitable[frozenset[int]]]


@dataclass(frozen=True)
class Offer:
    agents: tuple[AgentTarget, ...]


@dataclass(eq=False)
class Entry:
    id: int
    queue_id: int
    call_id: int
    entered_at: float
    priority: int = 0
    # The callback this entry waits for (flows.callback): nobody is on the line.
    callback_id: int | None = None
    offers: asyncio.Queue[Offer] = field(default_factory=asyncio.Queue)

    def serving_order(self) -> tuple[int, float, int]:
        return serving_order(self.priority, self.entered_at, self.id)

    def waited(self) -> float:
        return time.time() - self.entered_at


class Dispatcher:
    def __init__(self, ctx: ServiceContext, blocked_for_calls: BlockedForCalls) -> None:
        self._ctx = ctx
        self._blocked_for_calls = blocked_for_calls
        self._core = AcdCore()
        self._entries: dict[int, Entry] = {}
        self._ids = itertools.count(1)
        self._recent_waits: dict[int, deque[float]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline: float | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._reloads: dict[str, asyncio.Task[None]] = {}
        self._stale: set[str] = set()
        self._unwatch: Callable[[], None] | None = None
        self._running = False

    # -- life -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Watches presence first (so no change is missed), then reads what the core needs."""
        self._unwatch = watch_presence(self._ctx, self._presence_changed)
        self._ctx.wakeups.add_listener(self._on_event)
        self._running = True
        presence_store = store(self._ctx)
        rules = await self._load_rules()
        known = set(await presence_store.known_agents()) | set(rules.reachable)
        presences = await presence_store.get_many(sorted(known))
        last_offered = {
            int(q): int(u) for q, u in (await self._ctx.redis.hgetall(LAST_OFFERED_KEY)).items()
        }
        answered_today = await self._answered_today()
        blocked = await self._blocked_for_calls(frozenset(rules.reachable))
        now = time.time()
        self._feed(
            Started(now=now, presences=presences, answered_today=answered_today,
                    last_offered=last_offered),
            rules,
            CallsBlocked(now=now, user_ids=blocked),
        )  # fmt: skip

    async def stop(self) -> None:
        self._running = False
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
            self._ctx.wakeups.remove_listener(self._on_event)
        if self._timer is not None:
            self._timer.cancel()
        await self.settled()

    async def settled(self) -> None:
        """Until every claim, wrap-up end and reload under way has finished (tests, benches)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- entries (used by the queue call flow) ----------------------------------------------

    def join(
        self, queue_id: int, call_id: int, priority: int = 0, *,
        entered_at: float | None = None, callback_id: int | None = None,
    ) -> Entry:  # fmt: skip
        """`entered_at`: when the caller first entered (epoch), if earlier than now: a
        callback keeps the place its caller had."""
        now = time.time()
        entry = Entry(next(self._ids), queue_id, call_id, entered_at or now, priority, callback_id)
        self._entries[entry.id] = entry
        self._feed(CallerJoined(now=now, entry_id=entry.id, queue_id=queue_id, priority=priority,
                                entered_at=entry.entered_at))  # fmt: skip
        return entry

    async def leave(self, entry: Entry) -> None:
        """The caller is out of the queue; an offer made meanwhile is handed back."""
        self._entries.pop(entry.id, None)
        self._feed(CallerLeft(now=time.time(), entry_id=entry.id))
        while not entry.offers.empty():
            for agent in entry.offers.get_nowait().agents:
                await self.withdraw(agent.user_id, entry)

    def offer_over(self, entry: Entry, missed: Iterable[int]) -> None:
        self._feed(OfferEnded(now=time.time(), entry_id=entry.id, missed=frozenset(missed)))

    async def withdraw(self, user_id: int, entry: Entry) -> None:
        await change_presence(self._ctx, user_id, offer_withdrawn, f"withdrawn:{entry.call_id}")
        self._ctx.metrics.acd_offers.labels(result="withdrawn").inc()

    async def answered(self, entry: Entry, user_id: int) -> None:
        self._feed(OfferAnswered(now=time.time(), entry_id=entry.id, user_id=user_id))
        if entry.callback_id is None:  # a callback's wait says nothing of the line's
            waits = self._recent_waits.setdefault(entry.queue_id, deque(maxlen=RECENT_WAITS))
            waits.append(entry.waited())
        key = ANSWERED_KEY_PREFIX + datetime.now(UTC).strftime("%Y%m%d")
        await self._ctx.redis.hincrby(key, str(user_id), 1)
        await self._ctx.redis.expire(key, 2 * 86400)

    def waiting(self, queue_id: int) -> list[Entry]:
        """The queue's callers in the order they are served."""
        entries = [e for e in self._entries.values() if e.queue_id == queue_id]
        return sorted(entries, key=Entry.serving_order)

    def presence_of(self, user_id: int) -> Presence:
        """An agent's presence as last stored, from memory (the call flows' hot path)."""
        return self._core.presence(user_id)

    def ringing(self, entry: Entry) -> bool:
        """Agents ring for the caller, or one has answered."""
        return not self._core.awaits_offer(entry.id)

    def position(self, entry: Entry) -> int:
        return 1 + sum(
            1 for e in self.waiting(entry.queue_id) if e.serving_order() < entry.serving_order()
        )

    def expected_wait(self, entry: Entry) -> float | None:
        """The average wait of the queue's recently answered callers; None before any."""
        waits = self._recent_waits.get(entry.queue_id)
        if not waits:
            return None
        return sum(waits) / len(waits)

    def queue_figures(self) -> dict[int, tuple[int, float]]:
        """Per queue: callers waiting and the longest wait, for the metrics."""
        figures: dict[int, tuple[int, float]] = {}
        for entry in self._entries.values():
            count, longest = figures.get(entry.queue_id, (0, 0.0))
            figures[entry.queue_id] = (count + 1, max(longest, entry.waited()))
        return figures

    # -- feeding the core and carrying out its actions --------------------------------------

    def _feed(self, *events: Event) -> None:
        if not self._running:
            return  # an API-only app: callers may join, nobody decides
        for action in self._core.handle(*events):
            match action:
                case Ring():
                    self._own(self._ring(action))
                case EndWrapUp():
                    self._own(self._end_wrap_up(action.user_id))
                case RememberLastOffered():
                    self._own(self._remember_last_offered(action))
        self._arm_timer()

    def _arm_timer(self) -> None:
        deadline = self._core.next_deadline()
        if deadline == self._timer_deadline:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_deadline = deadline
        if deadline is not None:
            loop = asyncio.get_running_loop()
            # The loop's clock is monotonic, deadlines are epoch: a hair late rather than early,
            # so that the core, judging by time.time(), sees the deadline passed.
            delay = deadline - time.time() + TIMER_SLACK_S
            self._timer = loop.call_at(loop.time() + max(0.0, delay), self._timer_fired)

    def _timer_fired(self) -> None:
        self._timer, self._timer_deadline = None, None
        self._feed(TimerFired(now=time.time()))

    def _presence_changed(self, user_id: int, presence: Presence) -> None:
        self._feed(PresenceChanged(now=time.time(), user_id=user_id, presence=presence))

    async def _ring(self, ring: Ring) -> None:
        entry = self._entries.get(ring.entry_id)
        claimed: list[AgentTarget] = []
        for agent in ring.agents:
            if entry is not None and await self._claim(agent.user_id, entry):
                claimed.append(agent)
            else:
                await self._refused(ring.entry_id, agent.user_id)
        if entry is None or entry.id not in self._entries:
            for agent in claimed:  # the caller left while the claims ran
                if entry is not None:
                    await self.withdraw(agent.user_id, entry)
            return
        if not claimed:
            self.offer_over(entry, [])
            return
        entry.offers.put_nowait(Offer(tuple(claimed)))

    async def _claim(self, user_id: int, entry: Entry) -> bool:
        try:
            await change_presence(self._ctx, user_id, offer, f"offer:{entry.call_id}")
        except NotOfferable:
            return False  # someone else got there first (a direct call, another offer)
        return True

    async def _refused(self, entry_id: int, user_id: int) -> None:
        """The core's view of this agent was behind the store's: it hears the store's."""
        presence = await store(self._ctx).get(user_id)
        self._feed(
            ClaimFailed(now=time.time(), entry_id=entry_id, user_id=user_id),
            PresenceChanged(now=time.time(), user_id=user_id, presence=presence),
        )

    async def _end_wrap_up(self, user_id: int) -> None:
        now = time.time()
        await change_presence(self._ctx, user_id, lambda p: tick(p, now), "wrap_up_over")

    async def _remember_last_offered(self, action: RememberLastOffered) -> None:
        await self._ctx.redis.hset(LAST_OFFERED_KEY, str(action.queue_id), str(action.user_id))

    def _own(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("acd_action_failed", error=repr(task.exception()))

    # -- what changes off the hot path ------------------------------------------------------

    def _on_event(self, event_type: str) -> None:
        if event_type.startswith(QUEUE_RULE_EVENTS):
            self._reload("rules", self._reload_rules)
        if event_type.startswith(CHAT_LOAD_EVENTS) and self._ctx.settings.chat.block_calls_at:
            self._reload("chat_load", self._reload_blocked)

    def _reload(self, name: str, reload: Callable[[], Awaitable[None]]) -> None:
        """One reload of a kind at a time; changes during it mean one more after it."""
        if name in self._reloads:
            self._stale.add(name)
            return

        async def run() -> None:
            try:
                await reload()
                while name in self._stale:
                    self._stale.discard(name)
                    await reload()
            finally:
                del self._reloads[name]

        task = asyncio.ensure_future(run())
        self._reloads[name] = task
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    async def _reload_rules(self) -> None:
        rules = await self._load_rules()
        if not self._ctx.settings.chat.block_calls_at:
            self._feed(rules)
            return
        # New members' chat load is known before they can be offered anything.
        blocked = await self._blocked_for_calls(frozenset(rules.reachable))
        self._feed(rules, CallsBlocked(now=time.time(), user_ids=blocked))

    async def _reload_blocked(self) -> None:
        blocked = await self._blocked_for_calls(self._core.reachable_agents())
        self._feed(CallsBlocked(now=time.time(), user_ids=blocked))

    async def _load_rules(self) -> RulesChanged:
        """Every queue's strategy and members in order; every member with an extension."""
        async with self._ctx.sessions() as session:
            queues = await session.execute(select(QueueRow.id, QueueRow.strategy))
            members = await session.execute(
                select(QueueMemberRow.queue_id, QueueMemberRow.user_id, Extension.number,
                       User.wrap_up_time)
                .join(User, User.id == QueueMemberRow.user_id)
                .outerjoin(Extension, (Extension.owner_type == OwnerType.USER.value)
                           & (Extension.owner_id == QueueMemberRow.user_id))
                .order_by(QueueMemberRow.queue_id, QueueMemberRow.position)
            )  # fmt: skip
            ordered: dict[int, list[int]] = {}
            reachable: dict[int, AgentTarget] = {}
            for queue_id, user_id, number, wrap_up_time in members:
                ordered.setdefault(queue_id, []).append(user_id)
                if number is not None:
                    reachable[user_id] = AgentTarget(user_id, number, wrap_up_time)
            rules = {
                queue_id: QueueRule(Strategy(strategy), tuple(ordered.get(queue_id, ())))
                for queue_id, strategy in queues
            }
        return RulesChanged(now=time.time(), rules=rules, reachable=reachable)

    async def _answered_today(self) -> dict[int, int]:
        key = ANSWERED_KEY_PREFIX + datetime.now(UTC).strftime("%Y%m%d")
        return {int(u): int(n) for u, n in (await self._ctx.redis.hgetall(key)).items()}
