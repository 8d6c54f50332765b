"""Distribution strategies, row by row."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from acd.strategies import AgentHistory, Strategy, agents_to_ring

MEMBERS = [11, 12, 13, 14]
ALL_FREE = frozenset(MEMBERS)
HISTORY = {
    11: AgentHistory(idle_since=50.0, calls_answered=3),
    12: AgentHistory(idle_since=10.0, calls_answered=5),
    13: AgentHistory(idle_since=30.0, calls_answered=1),
    14: AgentHistory(idle_since=20.0, calls_answered=1),
}


@pytest.mark.parametrize(
    ("strategy", "free", "last", "exclude", "expected"),
    [
        (Strategy.IN_ORDER, ALL_FREE, None, frozenset(), [11]),
        (Strategy.IN_ORDER, frozenset({13, 14}), None, frozenset(), [13]),
        (Strategy.IN_ORDER, ALL_FREE, None, frozenset({11}), [12]),  # 11 let it ring out
        (Strategy.EVENLY, ALL_FREE, None, frozenset(), [12]),  # idle longest
        (Strategy.EVENLY, frozenset({11, 13}), None, frozenset(), [13]),
        (Strategy.RING_ALL, ALL_FREE, None, frozenset(), [11, 12, 13, 14]),
        (Strategy.RING_ALL, frozenset({12, 14}), None, frozenset({14}), [12]),
        (Strategy.ROUND_ROBIN, ALL_FREE, None, frozenset(), [11]),
        (Strategy.ROUND_ROBIN, ALL_FREE, 12, frozenset(), [13]),
        (Strategy.ROUND_ROBIN, ALL_FREE, 14, frozenset(), [11]),  # wraps around
        (Strategy.ROUND_ROBIN, frozenset({11, 12}), 12, frozenset(), [11]),  # skips busy
        (Strategy.FEWEST_CALLS, ALL_FREE, None, frozenset(), [14]),  # 1 call, idle longer
        (Strategy.FEWEST_CALLS, frozenset({11, 12}), None, frozenset(), [11]),
        (Strategy.EVENLY, frozenset(), None, frozenset(), []),
        (Strategy.RING_ALL, ALL_FREE, None, ALL_FREE, []),
    ],
)
def test_strategy_picks(
    strategy: Strategy, free: frozenset[int], last: int | None, exclude: frozenset[int],
    expected: list[int],
) -> None:  # fmt: skip
    picked = agents_to_ring(strategy, MEMBERS, free, HISTORY, last_offered=last, exclude=exclude)
    assert picked == expected


def test_agents_without_history_count_as_idle_since_the_start() -> None:
    assert agents_to_ring(Strategy.EVENLY, [1, 2], frozenset({1, 2}), {1: AgentHistory(5.0)}) == [2]


def test_random_only_picks_free_members_and_spreads() -> None:
    rng = random.Random(7)
    picks = Counter(
        agents_to_ring(Strategy.RANDOM, MEMBERS, frozenset({11, 13, 14}), HISTORY, rng=rng)[0]
        for _ in range(3000)
    )
    assert set(picks) == {11, 13, 14}
    assert min(picks.values()) > 800


def test_evenly_spreads_calls_fairly_over_time() -> None:
    history = {m: AgentHistory() for m in MEMBERS}
    answered: Counter[int] = Counter()
    for now in range(1, 1001):
        agent = agents_to_ring(Strategy.EVENLY, MEMBERS, ALL_FREE, history)[0]
        answered[agent] += 1
        history[agent] = AgentHistory(idle_since=float(now), calls_answered=answered[agent])
    assert max(answered.values()) - min(answered.values()) <= 1
