"""The ACD's decisions as one pure state machine: events in, actions out.

Shaped like dask's `worker_state_machine`: `handle(*events) -> list[Action]`, no await, no I/O,
the time only from the events. The shell (acd.dispatcher) feeds it what happened (a caller
joined or left, an agent's presence changed, an offer was answered or rang out, a queue's rules
changed, the timer fired), carries out the actions (claim the agents in Redis and ring them,
end a wrap-up) and feeds their outcomes back as events. Nothing polls: `next_deadline()` is
the one timer the shell arms.

Who may be offered a caller: an agent whose presence takes ACD work (ready, idle, no direct
call), who has an extension, whom open chat dialogs do not keep from calls, and who holds no
offer of ours. Which caller first: the oldest waiting one across every queue (acd.matching).
The presence kept here is the store's, as reported after each change; the store stays the
judge between writers (an offer is a claim there that may fail: `ClaimFailed`).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field

from acd.matching import QueueRule, WaitingCaller, match_callers, serving_order
from acd.presence import Presence, Status
from acd.strategies import AgentHistory

SECONDS_PER_DAY = 86400


@dataclass(frozen=True)
class AgentTarget:
    user_id: int
    extension: str
    wrap_up_time: int | None  # the agent's own, instead of the queue's; None: the queue's


# -- events -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Event:
    now: float  # epoch seconds


@dataclass(frozen=True, kw_only=True)
class Started(Event):
    """What the store holds when the controller starts."""

    presences: Mapping[int, Presence]
    answered_today: Mapping[int, int]
    last_offered: Mapping[int, int]  # queue id -> the agent offered last (round_robin)


@dataclass(frozen=True, kw_only=True)
class RulesChanged(Event):
    """Every queue's strategy and members in order; every member with an extension."""

    rules: Mapping[int, QueueRule]
    reachable: Mapping[int, AgentTarget]


@dataclass(frozen=True, kw_only=True)
class CallsBlocked(Event):
    """The agents whose open chat dialogs keep calls away (chat.block_calls_at)."""

    user_ids: frozenset[int]


@dataclass(frozen=True, kw_only=True)
class PresenceChanged(Event):
    user_id: int
    presence: Presence


@dataclass(frozen=True, kw_only=True)
class CallerJoined(Event):
    entry_id: int
    queue_id: int
    priority: int = 0
    # When the caller first entered, if before `now` (a callback keeps its caller's place).
    entered_at: float | None = None


@dataclass(frozen=True, kw_only=True)
class CallerLeft(Event):
    """Hung up, timed out, pressed the exit key, or talked and finished."""

    entry_id: int


@dataclass(frozen=True, kw_only=True)
class ClaimFailed(Event):
    """The store refused to mark the agent ringing (another writer changed them first)."""

    entry_id: int
    user_id: int


@dataclass(frozen=True, kw_only=True)
class OfferEnded(Event):
    """Nobody answered (or the ring failed); the caller waits on. `missed`: the agents who let
    it ring out, skipped for this caller until every member has been tried."""

    entry_id: int
    missed: frozenset[int] = frozenset()


@dataclass(frozen=True, kw_only=True)
class OfferAnswered(Event):
    entry_id: int
    user_id: int


@dataclass(frozen=True, kw_only=True)
class TimerFired(Event):
    pass


# -- actions ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ring:
    """Claim these agents for the caller and ring them (several: ring_all)."""

    entry_id: int
    agents: tuple[AgentTarget, ...]


@dataclass(frozen=True)
class EndWrapUp:
    user_id: int


@dataclass(frozen=True)
class RememberLastOffered:
    """For round_robin across restarts."""

    queue_id: int
    user_id: int


Action = Ring | EndWrapUp | RememberLastOffered


# -- state ------------------------------------------------------------------------------------


@dataclass
class _Caller:
    entry_id: int
    queue_id: int
    entered_at: float
    priority: int
    # Agents who let this caller's offers ring out in the current round.
    tried: set[int] = field(default_factory=set)
    # The agents rung for this caller right now; empty: waiting for an offer.
    offered: set[int] = field(default_factory=set)


class InvariantBroken(AssertionError):
    pass


class AcdCore:
    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng
        self._presence: dict[int, Presence] = {}
        self._rules: Mapping[int, QueueRule] = {}
        self._reachable: Mapping[int, AgentTarget] = {}
        self._blocked: frozenset[int] = frozenset()
        self._callers: dict[int, _Caller] = {}
        self._offer_of: dict[int, int] = {}  # agent -> entry id
        self._last_offered: dict[int, int] = {}
        self._answered_day = -1
        self._answered: dict[int, int] = {}
        self._ending_wrap_up: set[int] = set()
        # The rings decided by the last handle(), for validate().
        self._last_rings: list[tuple[_Caller, tuple[int, ...]]] = []

    # -- the one entry point ----------------------------------------------------------------

    def handle(self, *events: Event) -> list[Action]:
        actions: list[Action] = []
        now = 0.0
        for event in events:
            now = event.now
            self._apply(event, actions)
        self._last_rings = []
        if events:
            self._decide(now, actions)
        return actions

    def next_deadline(self) -> float | None:
        """When a wrap-up still running ends (epoch); None: no timer needed."""
        deadlines = [
            p.wrap_up_until
            for user_id, p in self._presence.items()
            if p.status is Status.WRAP_UP
            and p.wrap_up_until is not None
            and user_id not in self._ending_wrap_up
        ]
        return min(deadlines, default=None)

    # -- what the shell may read ------------------------------------------------------------

    def offered_agents(self) -> dict[int, int]:
        return dict(self._offer_of)

    def awaits_offer(self, entry_id: int) -> bool:
        """The caller waits for an agent: no offer out, not answered."""
        caller = self._callers.get(entry_id)
        return caller is not None and not caller.offered

    def reachable_agents(self) -> frozenset[int]:
        return frozenset(self._reachable)

    def presence(self, user_id: int) -> Presence:
        return self._presence.get(user_id, Presence())

    # -- events -----------------------------------------------------------------------------

    def _apply(self, event: Event, actions: list[Action]) -> None:
        match event:
            case Started():
                self._presence.update(event.presences)
                self._last_offered.update(event.last_offered)
                self._answered_day = _day(event.now)
                self._answered = dict(event.answered_today)
            case RulesChanged():
                self._rules, self._reachable = event.rules, event.reachable
            case CallsBlocked():
                self._blocked = event.user_ids
            case PresenceChanged():
                self._presence[event.user_id] = event.presence
                self._ending_wrap_up.discard(event.user_id)
            case CallerJoined():
                entered = event.entered_at if event.entered_at is not None else event.now
                self._callers[event.entry_id] = _Caller(
                    event.entry_id, event.queue_id, entered, event.priority
                )
            case CallerLeft():
                caller = self._callers.pop(event.entry_id, None)
                if caller is not None:
                    self._release(caller, caller.offered)
            case ClaimFailed():
                caller = self._callers.get(event.entry_id)
                if caller is not None and event.user_id in caller.offered:
                    self._release(caller, {event.user_id})
            case OfferEnded():
                caller = self._callers.get(event.entry_id)
                if caller is not None:
                    caller.tried.update(event.missed)
                    self._release(caller, caller.offered)
            case OfferAnswered():
                caller = self._callers.pop(event.entry_id, None)
                if caller is not None:
                    self._release(caller, caller.offered)
                self._count_answered(event.user_id, event.now)
            case TimerFired():
                for user_id, p in self._presence.items():
                    if (
                        p.status is Status.WRAP_UP
                        and p.wrap_up_until is not None
                        and p.wrap_up_until <= event.now
                        and user_id not in self._ending_wrap_up
                    ):
                        self._ending_wrap_up.add(user_id)
                        actions.append(EndWrapUp(user_id))

    def _release(self, caller: _Caller, agents: set[int]) -> None:
        for user_id in list(agents):
            if self._offer_of.get(user_id) == caller.entry_id:
                del self._offer_of[user_id]
            caller.offered.discard(user_id)

    def _count_answered(self, user_id: int, now: float) -> None:
        if _day(now) != self._answered_day:
            self._answered_day, self._answered = _day(now), {}
        self._answered[user_id] = self._answered.get(user_id, 0) + 1

    # -- the decision -----------------------------------------------------------------------

    def _free_agents(self) -> frozenset[int]:
        return frozenset(
            user_id
            for user_id in self._reachable
            if self.presence(user_id).takes_acd_work
            and user_id not in self._offer_of
            and user_id not in self._blocked
        )

    def _decide(self, now: float, actions: list[Action]) -> None:
        waiting = [c for c in self._callers.values() if not c.offered]
        if not waiting:
            return
        free = self._free_agents()
        if not free:
            return
        answered = self._answered if _day(now) == self._answered_day else {}
        history = {
            user_id: AgentHistory(
                idle_since=self.presence(user_id).idle_since,
                calls_answered=answered.get(user_id, 0),
            )
            for user_id in free
        }
        callers = [
            WaitingCaller(c.entry_id, c.queue_id, c.entered_at, frozenset(c.tried), c.priority)
            for c in waiting
        ]
        for match in match_callers(
            callers, self._rules, free, history, self._last_offered, self._rng
        ):
            caller = self._callers[match.entry_id]
            if match.new_round:
                caller.tried.clear()
            caller.offered.update(match.agents)
            for user_id in match.agents:
                self._offer_of[user_id] = caller.entry_id
            self._last_offered[caller.queue_id] = match.agents[-1]
            self._last_rings.append((caller, match.agents))
            actions.append(Ring(caller.entry_id, tuple(self._reachable[a] for a in match.agents)))
            actions.append(RememberLastOffered(caller.queue_id, match.agents[-1]))

    # -- invariants (run after every unit test) ---------------------------------------------

    def validate(self) -> None:
        """One offer per agent; nobody in wrap-up or without ACD work offered by the last
        decision; nobody left waiting while a member who may take them is free; within a
        queue, no caller rung while one ahead of them (higher priority, or as high and older)
        who could have had those agents waits."""
        for user_id, entry_id in self._offer_of.items():
            caller = self._callers.get(entry_id)
            _check(caller is not None, f"agent {user_id} holds an offer for a gone caller")
            assert caller is not None
            _check(user_id in caller.offered, f"agent {user_id} offered twice over")
        for caller in self._callers.values():
            for user_id in caller.offered:
                _check(self._offer_of.get(user_id) == caller.entry_id, "offer maps disagree")
        for _rung, agents in self._last_rings:
            for user_id in agents:
                presence = self.presence(user_id)
                _check(presence.status is not Status.WRAP_UP, f"agent {user_id} offered in wrap-up")
        free = self._free_agents()
        for caller in self._callers.values():
            rule = self._rules.get(caller.queue_id)
            if caller.offered or rule is None:
                continue
            candidates = free & set(rule.members)
            _check(not candidates, f"caller {caller.entry_id} waits while {candidates} are free")
            for rung, agents in self._last_rings:
                ahead = _order(caller) < _order(rung)
                same_queue = rung.queue_id == caller.queue_id
                untried = set(agents) - caller.tried
                _check(
                    not (ahead and same_queue and untried),
                    f"caller {rung.entry_id} rung before caller {caller.entry_id}, who is ahead",
                )


def _order(caller: _Caller) -> tuple[int, float, int]:
    return serving_order(caller.priority, caller.entered_at, caller.entry_id)


def _day(now: float) -> int:
    return int(now // SECONDS_PER_DAY)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise InvariantBroken(message)
