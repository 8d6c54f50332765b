"""The call statistics fold (acd/call_stats.py): wrap-ups from presence history, figures per
agent and per queue from call records and the queue log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from acd.call_stats import (
    MAX_WRAP_UP,
    CallFacts,
    PresenceFacts,
    QueueLogFacts,
    agent_figures,
    figures_of_queue,
    history_window,
    queue_figures,
    taken_by,
    wrap_ups,
)

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def call(
    call_id: int, direction: str = "inbound", user_id: int | None = None,
    answered: float | None = None, ended: float | None = None,
) -> CallFacts:  # fmt: skip
    return CallFacts(
        call_id, direction, user_id,
        at(answered) if answered is not None else None, at(ended) if ended is not None else None,
    )  # fmt: skip


def q(
    event: str, call_id: int, user_id: int | None = None, wait: float | None = None,
    queue_id: int = 1,
) -> QueueLogFacts:  # fmt: skip
    return QueueLogFacts(queue_id, call_id, event, user_id, wait)


def p(user_id: int, seconds: float, status: str, cause: str = "user:1") -> PresenceFacts:
    return PresenceFacts(user_id, at(seconds), status, cause)


@pytest.mark.parametrize(
    ("history", "expected"),
    [
        # A queue call's wrap-up ends when it runs out (back to ready).
        ([p(7, 0, "ready", "call:1"), p(7, 60, "wrap_up", "call:1"),
          p(7, 70, "ready", "wrap_up_over")], {(7, 1): 10.0}),
        # Ended early by the agent (ready or *52), or by choosing another status.
        ([p(7, 60, "wrap_up", "call:1"), p(7, 63.5, "ready", "user:7"),
          p(7, 100, "wrap_up", "call:2"), p(7, 104, "not_ready", "user:7")],
         {(7, 1): 3.5, (7, 2): 4.0}),
        # A direct call during wrap-up writes rows that are still wrap_up: no new start.
        ([p(7, 60, "wrap_up", "call:1"), p(7, 62, "wrap_up", "call:9"),
          p(7, 64, "wrap_up", "call:9"), p(7, 70, "ready", "wrap_up_over")], {(7, 1): 10.0}),
        # Wrap-up chosen by hand belongs to no call; one not over yet is left out.
        ([p(7, 0, "wrap_up", "user:7"), p(7, 30, "ready", "user:7"),
          p(7, 60, "wrap_up", "call:3")], {}),
        # Agents are followed separately.
        ([p(7, 60, "wrap_up", "call:1"), p(8, 61, "wrap_up", "call:2"),
          p(8, 62, "ready", "wrap_up_over"), p(7, 65, "ready", "wrap_up_over")],
         {(7, 1): 5.0, (8, 2): 1.0}),
        ([], {}),
    ],
)  # fmt: skip
def test_wrap_ups(history: list[PresenceFacts], expected: dict[tuple[int, int], float]) -> None:
    assert wrap_ups(history) == expected


@pytest.mark.parametrize(
    ("facts", "taker"),
    [
        (call(1, "inbound", 7, answered=5), 7),
        (call(1, "internal", 7, answered=5), 7),
        (call(1, "outbound", 7, answered=5), None),  # placed by 7, not taken
        (call(1, "inbound", None, answered=5), None),
        (call(1, "internal", 7), None),  # unanswered: 7 is the caller
    ],
)
def test_taken_by(facts: CallFacts, taker: int | None) -> None:
    assert taken_by(facts) == taker


def test_agent_figures_split_queue_and_direct_calls() -> None:
    calls = [
        call(1, user_id=7, answered=10, ended=70),  # queue call, 60 s talk
        call(2, user_id=7, answered=100, ended=130),  # queue call, 30 s talk
        call(3, "internal", 7, answered=200, ended=220),  # direct, 20 s talk
        call(4, "outbound", 7, answered=300, ended=400),  # placed, not counted
        call(5, user_id=7, answered=500),  # queue call still going: no talk yet
        call(6),  # abandoned in the queue
    ]
    log = [
        q("enter", 1), q("offer", 1, 8, 2), q("no_answer", 1, 8, 7), q("offer", 1, 7, 7),
        q("connect", 1, 7, 9),
        q("enter", 2), q("offer", 2, 7, 1), q("connect", 2, 7, 2),
        q("enter", 5), q("offer", 5, 7, 1), q("connect", 5, 7, 2),
        q("enter", 6), q("offer", 6, 8, 1), q("no_answer", 6, 8, 5), q("abandon", 6, None, 9),
    ]  # fmt: skip
    figures = agent_figures(calls, log, {(7, 1): 10.0, (7, 2): 6.0, (8, 1): 99.0})
    assert set(figures) == {7, 8}
    mine = figures[7]
    assert (mine.offered, mine.missed, mine.answered) == (3, 0, 4)
    assert (mine.queue_answered, mine.direct_answered) == (3, 1)
    h = mine.handling
    assert (h.talked, h.talk_seconds, h.mean_talk_seconds) == (3, 110.0, 36.667)
    assert (h.wrap_ups, h.wrap_up_seconds, h.mean_wrap_up_seconds) == (2, 16.0, 8.0)
    assert h.handling_seconds == 42.0  # (110 + 16) / 3
    other = figures[8]
    assert (other.offered, other.missed, other.answered) == (2, 2, 0)
    assert other.handling.talked == 0 and other.handling.handling_seconds is None


def test_queue_figures() -> None:
    calls = [
        call(1, user_id=7, answered=10, ended=70),
        call(2, user_id=8, answered=100, ended=110),
        call(3), call(4), call(5), call(6), call(7), call(8),
    ]  # fmt: skip
    log = [
        q("enter", 1), q("connect", 1, 7, 5.0),  # in service level (20 s)
        q("enter", 2), q("connect", 2, 8, 20.0),  # exactly 20 s: still in
        q("enter", 3), q("abandon", 3, None, 40.0),
        q("enter", 4), q("timeout", 4, None, 300.0),
        q("enter", 5), q("exit_key", 5, None, 12.0),
        q("full", 6, None, 0.0),
        q("enter", 7), q("failed", 7, None, 3.0),  # lost while waiting
        q("no_agents", 8, None, 0.0, queue_id=2),
    ]  # fmt: skip
    figures = queue_figures(calls, log, {(7, 1): 4.0}, service_level_seconds=20)
    assert set(figures) == {1, 2}
    one = figures[1]
    assert (one.offered, one.entered, one.refused) == (7, 6, 1)
    assert (one.answered, one.abandoned, one.timed_out, one.left_by_key, one.failed) == (
        2, 1, 1, 1, 1)  # fmt: skip
    assert one.mean_wait_seconds == 63.333  # (5 + 20 + 40 + 300 + 12 + 3) / 6
    assert one.longest_wait_seconds == 300.0
    assert (one.answered_in_service_level, one.service_level) == (2, 0.3333)
    assert (one.handling.talk_seconds, one.handling.wrap_up_seconds) == (70.0, 4.0)
    assert one.handling.handling_seconds == 37.0  # (70 + 4) / 2
    two = figures[2]
    assert (two.offered, two.entered, two.refused) == (1, 0, 1)
    assert two.service_level is None and two.mean_wait_seconds is None


def test_a_talk_lost_is_no_wait_and_an_empty_queue_has_zeros() -> None:
    calls = [call(1, user_id=7, answered=10, ended=20)]
    log = [q("enter", 1), q("connect", 1, 7, 8.0), q("failed", 1, 7, None)]
    figures = figures_of_queue(log, {c.id: c for c in calls}, {}, 20)
    assert (figures.answered, figures.failed, figures.mean_wait_seconds) == (1, 0, 8.0)
    empty = figures_of_queue([], {}, {}, 20)
    assert (empty.offered, empty.service_level, empty.handling.talk_seconds) == (0, None, 0.0)


def test_history_window_spans_the_queue_calls_and_the_longest_wrap_up() -> None:
    calls = [call(1, answered=10, ended=70), call(2, answered=5, ended=900), call(3, answered=50)]
    assert history_window(calls, {1, 3}) == (at(10), at(70) + MAX_WRAP_UP)
    assert history_window(calls, set()) is None
    assert history_window([call(4)], {4}) is None
