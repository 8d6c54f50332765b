"""The ACD dispatcher: the one owner of "which caller rings which agent".

Callers join as entries; a round (after any presence or queue change, a caller joining or an
offer ending, and at least every second while callers wait) matches the waiting entries with
free agents (acd.matching, pure) and claims each agent atomically in Redis
(acd.presence.offer under WATCH) before the entry's call flow is told to ring. An agent
another writer took meanwhile is simply not claimed, so an agent never holds two offers.
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

from acd.agents import change_presence, expire_wrap_ups, store
from acd.matching import QueueRule, WaitingCaller, match_callers
from acd.models import QueueMemberRow, QueueRow
from acd.presence import NotOfferable, offer, offer_withdrawn
from acd.strategies import AgentHistory, Strategy
from core.background import PassLoop
from core.context import ServiceContext
from core.read_cache import ReadCache
from extensions.models import Extension, User
from extensions.numbering import OwnerType

log = structlog.get_logger(__name__)

# Even with no event the dispatcher looks again this often (wrap-ups end, lost wake-ups).
ROUND_INTERVAL_S = 1.0
# Changes to a queue's strategy or members, or to whether and where a member can be rung.
QUEUE_RULE_EVENTS = ("queue_created", "queue_updated", "queue_deleted", "user_", "extension_")
# With no caller waiting: a safety net only.
IDLE_INTERVAL_S = 10.0
LAST_OFFERED_KEY = "pbx:acd:last_offered"
ANSWERED_KEY_PREFIX = "pbx:acd:answered:"
# Events after which a waiting caller may have an agent.
_WAKING_EVENTS = ("presence_changed", "queue_", "user_")
# How long stop() lets a running round finish before cancelling it.
STOP_TIMEOUT_S = 5.0
# Answered waits remembered per queue for the expected-wait announcement.
RECENT_WAITS = 20


@dataclass(frozen=True)
class AgentTarget:
    user_id: int
    extension: str
    wrap_up_time: int | None  # the agent's own, instead of the queue's; None: the queue's


# Each waiting queue's rule, and every member with an extension (user id -> how to ring them).
QueueRules = tuple[dict[int, QueueRule], dict[int, AgentTarget]]


@dataclass(frozen=True)
class Offer:
    agents: tuple[AgentTarget, ...]


@dataclass(eq=False)
class Entry:
    id: int
    queue_id: int
    call_id: int
    entered_at: float
    tried: set[int] = field(default_factory=set)
    offer_out: bool = False
    offers: asyncio.Queue[Offer] = field(default_factory=asyncio.Queue)

    def waited(self) -> float:
        return time.time() - self.entered_at


class Dispatcher:
    def __init__(
        self,
        ctx: ServiceContext,
        blocked_for_calls: Callable[[frozenset[int]], Awaitable[frozenset[int]]],
    ) -> None:
        self._ctx = ctx
        # Of the agents given, those whose open chat dialogs keep calls from them
        # (chat.block_calls_at). Injected by the app, so acd/ never imports chat/.
        self._blocked_for_calls = blocked_for_calls
        self._entries: dict[int, Entry] = {}
        self._ids = itertools.count(1)
        self._recent_waits: dict[int, deque[float]] = {}
        # A round needs the queues' strategies and members: read from memory after the first,
        # so an agent who turns free is offered a caller without a trip to SQL.
        self._rules: ReadCache[frozenset[int], QueueRules] = ReadCache(
            self._queue_rules, emptied_by=QUEUE_RULE_EVENTS, wakeups=ctx.wakeups
        )
        self._loop = PassLoop(
            "acd-dispatcher", self._pass, wakes_on=lambda kind: kind.startswith(_WAKING_EVENTS),
            retry_s=ROUND_INTERVAL_S, stop_timeout_s=STOP_TIMEOUT_S,
        )  # fmt: skip

    # -- life -------------------------------------------------------------------------------

    def start(self) -> None:
        self._loop.start(self._ctx.wakeups)

    async def stop(self) -> None:
        await self._loop.stop()

    def wake(self) -> None:
        self._loop.wake()

    # -- entries (used by the queue call flow) ----------------------------------------------

    def join(self, queue_id: int, call_id: int) -> Entry:
        entry = Entry(next(self._ids), queue_id, call_id, time.time())
        self._entries[entry.id] = entry
        self.wake()
        return entry

    async def leave(self, entry: Entry) -> None:
        """The caller is out of the queue; an offer made meanwhile is handed back."""
        self._entries.pop(entry.id, None)
        while not entry.offers.empty():
            for agent in entry.offers.get_nowait().agents:
                await self.withdraw(agent.user_id, entry)
        self.wake()

    def offer_over(self, entry: Entry, missed: Iterable[int]) -> None:
        entry.tried.update(missed)
        entry.offer_out = False
        self.wake()

    async def withdraw(self, user_id: int, entry: Entry) -> None:
        await change_presence(self._ctx, user_id, offer_withdrawn, f"withdrawn:{entry.call_id}")
        self._ctx.metrics.acd_offers.labels(result="withdrawn").inc()

    async def answered(self, entry: Entry, user_id: int) -> None:
        waits = self._recent_waits.setdefault(entry.queue_id, deque(maxlen=RECENT_WAITS))
        waits.append(entry.waited())
        day = datetime.now(UTC).strftime("%Y%m%d")
        key = ANSWERED_KEY_PREFIX + day
        await self._ctx.redis.hincrby(key, str(user_id), 1)
        await self._ctx.redis.expire(key, 2 * 86400)

    def waiting(self, queue_id: int) -> list[Entry]:
        entries = [e for e in self._entries.values() if e.queue_id == queue_id]
        return sorted(entries, key=lambda e: (e.entered_at, e.id))

    def position(self, entry: Entry) -> int:
        return 1 + sum(
            1
            for e in self.waiting(entry.queue_id)
            if (e.entered_at, e.id) < (entry.entered_at, entry.id)
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

    # -- rounds -----------------------------------------------------------------------------

    async def _pass(self) -> float:
        """Wrap-ups that ran out, then offers; sleeps until the next wrap-up ends, at most
        a round interval."""
        deadline = await expire_wrap_ups(self._ctx)
        await self._round()
        # Nobody waiting and no wrap-up running: only an event (a caller joining, a presence
        # change) can give this loop work, and events wake it.
        interval = ROUND_INTERVAL_S if self._entries else IDLE_INTERVAL_S
        if deadline is None:
            return interval
        return max(0.05, min(interval, deadline - time.time()))

    async def _round(self) -> None:
        waiting = [e for e in self._entries.values() if not e.offer_out]
        if not waiting:
            return
        rules, reachable = await self._rules.get(frozenset(e.queue_id for e in waiting))
        members = {m for rule in rules.values() for m in rule.members}
        presences = await store(self._ctx).get_many(members)
        free = frozenset(m for m, p in presences.items() if p.takes_acd_work and m in reachable)
        # One capacity model: enough open chat dialogs (chat.block_calls_at) keep calls away.
        free -= await self._blocked_for_calls(free)
        if not free:
            return
        answered_today = await self._answered_today()
        history = {
            m: AgentHistory(idle_since=p.idle_since, calls_answered=answered_today.get(m, 0))
            for m, p in presences.items()
        }
        last_offered = {
            int(q): int(u) for q, u in (await self._ctx.redis.hgetall(LAST_OFFERED_KEY)).items()
        }
        callers = [
            WaitingCaller(e.id, e.queue_id, e.entered_at, frozenset(e.tried)) for e in waiting
        ]
        for match in match_callers(callers, rules, free, history, last_offered):
            entry = self._entries.get(match.entry_id)
            if entry is None:
                continue
            claimed = [
                reachable[agent] for agent in match.agents if await self._claim(agent, entry)
            ]
            if not claimed:
                continue
            if match.new_round:
                entry.tried.clear()
            entry.offer_out = True
            await self._ctx.redis.hset(
                LAST_OFFERED_KEY, str(entry.queue_id), str(claimed[-1].user_id)
            )
            entry.offers.put_nowait(Offer(tuple(claimed)))

    async def _claim(self, agent: int, entry: Entry) -> bool:
        try:
            await change_presence(self._ctx, agent, offer, f"offer:{entry.call_id}")
        except NotOfferable:
            return False  # someone else got there first (a direct call, another offer)
        return True

    async def _queue_rules(self, queue_ids: frozenset[int]) -> QueueRules:
        """Each queue's strategy and members in order; every member with an extension."""
        async with self._ctx.sessions() as session:
            queues = await session.execute(
                select(QueueRow.id, QueueRow.strategy).where(QueueRow.id.in_(queue_ids))
            )
            members = await session.execute(
                select(QueueMemberRow.queue_id, QueueMemberRow.user_id, Extension.number,
                       User.wrap_up_time)
                .join(User, User.id == QueueMemberRow.user_id)
                .outerjoin(Extension, (Extension.owner_type == OwnerType.USER.value)
                           & (Extension.owner_id == QueueMemberRow.user_id))
                .where(QueueMemberRow.queue_id.in_(queue_ids))
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
        return rules, reachable

    async def _answered_today(self) -> dict[int, int]:
        key = ANSWERED_KEY_PREFIX + datetime.now(UTC).strftime("%Y%m%d")
        return {int(u): int(n) for u, n in (await self._ctx.redis.hgetall(key)).items()}
