"""Matching waiting callers with free agents: highest priority, then oldest first across
queues, one offer per agent."""

from __future__ import annotations

import random

import pytest

from acd.matching import Match, QueueRule, WaitingCaller, match_callers
from acd.strategies import AgentHistory, Strategy

SALES = QueueRule(Strategy.IN_ORDER, (1, 2, 3))
SUPPORT = QueueRule(Strategy.IN_ORDER, (3, 4))
RING_ALL = QueueRule(Strategy.RING_ALL, (1, 2, 3, 4))


def match(waiting: list[WaitingCaller], queues: dict[int, QueueRule], free: set[int],
          history: dict[int, AgentHistory] | None = None,
          last: dict[int, int] | None = None) -> list[Match]:  # fmt: skip
    return match_callers(waiting, queues, frozenset(free), history or {}, last or {},
                         random.Random(7))  # fmt: skip


def test_oldest_caller_first_across_queues() -> None:
    young_sales = WaitingCaller(1, queue_id=1, entered_at=20.0)
    old_support = WaitingCaller(2, queue_id=2, entered_at=10.0)
    # Agent 3 serves both queues: the older support caller gets them.
    result = match([young_sales, old_support], {1: SALES, 2: SUPPORT}, free={3})
    assert result == [Match(2, (3,))]


@pytest.mark.parametrize(
    ("callers", "served"),
    [
        # (entry id, queue, entered at, priority) each; the entry served first.
        ([(1, 1, 10.0, 0), (2, 1, 20.0, 5)], 2),  # priority beats a longer wait
        ([(1, 1, 10.0, 5), (2, 1, 5.0, 5)], 2),  # as high: the longer wait
        ([(1, 1, 10.0, 1), (2, 1, 5.0, 0)], 1),
        ([(1, 1, 7.0, 3), (2, 1, 7.0, 3)], 1),  # the same instant: the earlier entry
        ([(1, 2, 30.0, 9), (2, 1, 1.0, 0)], 1),  # across queues too (agent 3 serves both)
    ],
)
def test_higher_priority_first_then_the_longest_wait(
    callers: list[tuple[int, int, float, int]], served: int
) -> None:
    waiting = [WaitingCaller(e, q, at, priority=p) for e, q, at, p in callers]
    assert match(waiting, {1: SALES, 2: SUPPORT}, free={3}) == [Match(served, (3,))]


def test_each_free_agent_is_offered_once_per_round() -> None:
    callers = [WaitingCaller(i, queue_id=1, entered_at=float(i)) for i in range(1, 5)]
    result = match(callers, {1: SALES}, free={1, 2})
    assert result == [Match(1, (1,)), Match(2, (2,))]


def test_ring_all_takes_every_free_member_and_leaves_none_for_the_next() -> None:
    callers = [WaitingCaller(1, 9, 1.0), WaitingCaller(2, 1, 2.0)]
    result = match(callers, {9: RING_ALL, 1: SALES}, free={1, 2, 4})
    assert result == [Match(1, (1, 2, 4))]


def test_agents_who_missed_this_caller_are_skipped_then_tried_again_in_a_new_round() -> None:
    caller = WaitingCaller(1, 1, 0.0, tried=frozenset({1}))
    assert match([caller], {1: SALES}, free={1, 2}) == [Match(1, (2,))]
    everyone_tried = WaitingCaller(1, 1, 0.0, tried=frozenset({1, 2, 3}))
    assert match([everyone_tried], {1: SALES}, free={2}) == [Match(1, (2,), new_round=True)]


def test_unknown_queue_or_nobody_free_offers_nothing() -> None:
    assert match([WaitingCaller(1, 5, 0.0)], {1: SALES}, free={1}) == []
    assert match([WaitingCaller(1, 1, 0.0)], {1: SALES}, free=set()) == []
    assert match([WaitingCaller(1, 1, 0.0)], {1: SALES}, free={4}) == []


def test_strategy_state_is_passed_through() -> None:
    evenly = {1: QueueRule(Strategy.EVENLY, (1, 2))}
    history = {1: AgentHistory(idle_since=50.0), 2: AgentHistory(idle_since=10.0)}
    assert match([WaitingCaller(1, 1, 0.0)], evenly, {1, 2}, history) == [Match(1, (2,))]
    robin = {1: QueueRule(Strategy.ROUND_ROBIN, (1, 2, 3))}
    assert match([WaitingCaller(1, 1, 0.0)], robin, {1, 2, 3}, last={1: 2}) == [Match(1, (3,))]
