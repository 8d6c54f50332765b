"""Which waiting caller rings which agents now: the highest priority first, then the oldest
caller, across every queue; each free agent offered at most one caller per round. Pure; the
dispatcher claims the result."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from acd.strategies import AgentHistory, Strategy, agents_to_ring


@dataclass(frozen=True)
class WaitingCaller:
    entry_id: int
    queue_id: int
    entered_at: float
    # Agents who let this caller's offer ring out in the current round.
    tried: frozenset[int] = frozenset()
    priority: int = 0


def serving_order(priority: int, entered_at: float, entry_id: int) -> tuple[int, float, int]:
    """Sorts callers into the order they are served: higher priority, then longer wait (the
    entry id breaks a tie of the clock)."""
    return -priority, entered_at, entry_id


@dataclass(frozen=True)
class QueueRule:
    strategy: Strategy
    members: tuple[int, ...]


@dataclass(frozen=True)
class Match:
    entry_id: int
    agents: tuple[int, ...]
    # True when every free member had been tried: the caller's round starts again.
    new_round: bool = False


def match_callers(
    waiting: Sequence[WaitingCaller],
    queues: Mapping[int, QueueRule],
    free: frozenset[int],
    history: Mapping[int, AgentHistory],
    last_offered: Mapping[int, int],
    rng: random.Random | None = None,
) -> list[Match]:
    """`waiting`: callers without an offer out; `free`: agents who take ACD work now."""
    matches: list[Match] = []
    available = set(free)
    order = sorted(waiting, key=lambda c: serving_order(c.priority, c.entered_at, c.entry_id))
    for caller in order:
        rule = queues.get(caller.queue_id)
        if rule is None or not available:
            continue
        choose = frozenset(available)

        def pick(exclude: frozenset[int], rule: QueueRule = rule, choose: frozenset[int] = choose,
                 caller: WaitingCaller = caller) -> list[int]:  # fmt: skip
            return agents_to_ring(
                rule.strategy, rule.members, choose, history,
                last_offered=last_offered.get(caller.queue_id), exclude=exclude, rng=rng,
            )  # fmt: skip

        agents, new_round = pick(caller.tried), False
        if not agents and caller.tried:
            agents, new_round = pick(frozenset()), True
        if agents:
            available.difference_update(agents)
            matches.append(Match(caller.entry_id, tuple(agents), new_round))
    return matches
