"""Distribution strategies: which free members of a queue ring for the next caller.

Pure: the caller passes the members in queue order, who is free, per-agent history and
(for random) an rng; the answer is the agents to ring now, in order.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum


class Strategy(StrEnum):
    EVENLY = "evenly"  # longest idle first
    IN_ORDER = "in_order"  # first free member in list order
    RING_ALL = "ring_all"  # every free member at once; the first answer wins
    ROUND_ROBIN = "round_robin"  # the next member after the last one offered
    FEWEST_CALLS = "fewest_calls"  # fewest answered calls today, then longest idle
    RANDOM = "random"


@dataclass(frozen=True)
class AgentHistory:
    # When the agent last finished a call (or became ready); 0.0 if never.
    idle_since: float = 0.0
    calls_answered: int = 0


def agents_to_ring(
    strategy: Strategy,
    members: Sequence[int],
    free: frozenset[int],
    history: Mapping[int, AgentHistory],
    *,
    last_offered: int | None = None,
    exclude: frozenset[int] = frozenset(),
    rng: random.Random | None = None,
) -> list[int]:
    """The agents to ring for one caller; empty when nobody is free.

    `exclude` holds members who already let this caller's offer ring out, so a no-answer
    moves on to the next agent instead of ringing the same one again.
    """
    candidates = [m for m in members if m in free and m not in exclude]
    if not candidates:
        return []
    if strategy is Strategy.RING_ALL:
        return candidates
    if strategy is Strategy.IN_ORDER:
        return candidates[:1]
    if strategy is Strategy.EVENLY:
        return [min(candidates, key=lambda m: (_history(history, m).idle_since, members.index(m)))]
    if strategy is Strategy.FEWEST_CALLS:
        return [
            min(
                candidates,
                key=lambda m: (
                    _history(history, m).calls_answered,
                    _history(history, m).idle_since,
                    members.index(m),
                ),
            )
        ]
    if strategy is Strategy.ROUND_ROBIN:
        return [_next_after(members, candidates, last_offered)]
    chooser = rng or random.Random()
    return [chooser.choice(candidates)]


def _history(history: Mapping[int, AgentHistory], agent: int) -> AgentHistory:
    return history.get(agent, AgentHistory())


def _next_after(members: Sequence[int], candidates: list[int], last: int | None) -> int:
    if last is None or last not in members:
        return candidates[0]
    start = members.index(last) + 1
    rotated = [*members[start:], *members[:start]]
    return next(m for m in rotated if m in candidates)
