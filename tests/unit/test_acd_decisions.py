"""The ACD decision core (acd.decisions): events in, actions out, no I/O. Every test ends with
the core's invariant check (the `core` fixture), as dask's tests validate the worker state."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import replace

import pytest

from acd.decisions import (
    AcdCore,
    AgentTarget,
    CallerJoined,
    CallerLeft,
    CallsBlocked,
    ClaimFailed,
    EndWrapUp,
    OfferAnswered,
    OfferEnded,
    PresenceChanged,
    RememberLastOffered,
    Ring,
    RulesChanged,
    Started,
    TimerFired,
)
from acd.matching import QueueRule
from acd.presence import Activity, Presence, Status, answered, call_ended, offer, offer_withdrawn
from acd.strategies import Strategy

READY = Presence(Status.READY)
NOT_READY = Presence(Status.NOT_READY, reason="break")
T0 = 1_800_000_000.0


@pytest.fixture
def core() -> Iterator[AcdCore]:
    core = AcdCore(rng=random.Random(7))
    yield core
    core.validate()


def target(user_id: int) -> AgentTarget:
    return AgentTarget(user_id, str(1000 + user_id), None)


def rules(*queues: tuple[int, Strategy, tuple[int, ...]], unreachable: tuple[int, ...] = ()
          ) -> RulesChanged:  # fmt: skip
    members = {m for _, _, ms in queues for m in ms}
    return RulesChanged(
        now=T0,
        rules={q: QueueRule(strategy, members) for q, strategy, members in queues},
        reachable={m: target(m) for m in members if m not in unreachable},
    )


def start(core: AcdCore, presences: dict[int, Presence], *queues: tuple[int, Strategy,
          tuple[int, ...]], **kw: tuple[int, ...]) -> None:  # fmt: skip
    actions = core.handle(
        Started(now=T0, presences=presences, answered_today={}, last_offered={}),
        rules(*queues, **kw),
    )
    assert actions == []


def rung(actions: list[object]) -> list[tuple[int, list[int]]]:
    return [(a.entry_id, [t.user_id for t in a.agents]) for a in actions if isinstance(a, Ring)]


def test_ready_agent_is_rung_for_a_caller_who_joins(core: AcdCore) -> None:
    start(core, {1: READY}, (10, Strategy.EVENLY, (1,)))
    actions = core.handle(CallerJoined(now=T0 + 1, entry_id=5, queue_id=10))
    assert rung(actions) == [(5, [1])]
    assert RememberLastOffered(10, 1) in actions


def test_not_ready_agent_gets_no_offer_until_ready(core: AcdCore) -> None:
    start(core, {1: NOT_READY}, (10, Strategy.EVENLY, (1,)))
    assert core.handle(CallerJoined(now=T0 + 1, entry_id=5, queue_id=10)) == []
    actions = core.handle(PresenceChanged(now=T0 + 2, user_id=1, presence=READY))
    assert rung(actions) == [(5, [1])]


def test_agent_with_an_offer_out_is_not_offered_again(core: AcdCore) -> None:
    start(core, {1: READY}, (10, Strategy.EVENLY, (1,)))
    core.handle(CallerJoined(now=T0 + 1, entry_id=5, queue_id=10))
    # The store has not reported the claim yet: the core's own offer keeps the agent busy.
    assert rung(core.handle(CallerJoined(now=T0 + 2, entry_id=6, queue_id=10))) == []


def test_oldest_caller_across_queues_goes_first(core: AcdCore) -> None:
    start(core, {1: NOT_READY}, (10, Strategy.EVENLY, (1,)), (20, Strategy.EVENLY, (1,)))
    core.handle(CallerJoined(now=T0 + 2, entry_id=6, queue_id=10))
    core.handle(CallerJoined(now=T0 + 1, entry_id=5, queue_id=20))
    actions = core.handle(PresenceChanged(now=T0 + 3, user_id=1, presence=READY))
    assert rung(actions) == [(5, [1])]


def test_a_caller_of_higher_priority_goes_before_older_ones(core: AcdCore) -> None:
    start(core, {1: NOT_READY}, (10, Strategy.EVENLY, (1,)))
    core.handle(CallerJoined(now=T0 + 1, entry_id=5, queue_id=10),
                CallerJoined(now=T0 + 2, entry_id=6, queue_id=10, priority=2),
                CallerJoined(now=T0 + 3, entry_id=7, queue_id=10, priority=2))  # fmt: skip
    actions = core.handle(PresenceChanged(now=T0 + 4, user_id=1, presence=READY))
    assert rung(actions) == [(6, [1])]


def test_agent_free_after_a_call_rings_for_the_next_caller_at_once(core: AcdCore) -> None:
    start(core, {1: READY}, (10, Strategy.EVENLY, (1,)))
    core.handle(CallerJoined(now=T0 + 1, entry_id=5, queue_id=10),
                CallerJoined(now=T0 + 1, entry_id=6, queue_id=10))  # fmt: skip
    ringing = offer(READY)
    core.handle(PresenceChanged(now=T0 + 2, user_id=1, presence=ringing))
    in_call = answered(ringing)
    core.handle(PresenceChanged(now=T0 + 3, user_id=1, presence=in_call),
                OfferAnswered(now=T0 + 3, entry_id=5, user_id=1))  # fmt: skip
    free = call_ended(in_call, acd=True, wrap_up_seconds=0, now=T0 + 9)
    assert rung(core.handle(PresenceChanged(now=T0 + 9, user_id=1, presence=free))) == [(6, [1])]


def test_wrap_up_ends_on_the_timer_and_the_agent_is_then_offered(core: AcdCore) -> None:
    wrapping = Presence(Status.WRAP_UP, wrap_up_until=T0 + 30)
    start(core, {1: wrapping}, (10, Strategy.EVENLY, (1,)))
    assert core.handle(CallerJoined(now=T0 + 1, entry_id=5, queue_id=10)) == []
    assert core.next_deadline() == T0 + 30
    assert core.handle(TimerFired(now=T0 + 29.9)) == []
    assert core.handle(TimerFired(now=T0 + 30)) == [EndWrapUp(1)]
    assert core.next_deadline() is None  # asked once; the store's answer comes as an event
    actions = core.handle(PresenceChanged(now=T0 + 30, user_id=1, presence=READY))
    assert rung(actions) == [(5, [1])]


def test_refused_claim_frees_the_agent_for_the_core_and_takes_the_stores_word(
    core: AcdCore,
) -> None:
    start(core, {1: READY, 2: READY}, (10, Strategy.IN_ORDER, (1, 2)))
    assert rung(core.handle(CallerJoined(now=T0 + 1, entry_id=5, queue_id=10))) == [(5, [1])]
    actions = core.handle(
        ClaimFailed(now=T0 + 2, entry_id=5, user_id=1),
        PresenceChanged(now=T0 + 2, user_id=1, presence=NOT_READY),
    )
    assert rung(actions) == [(5, [2])]


def test_caller_leaving_releases_the_offer(core: AcdCore) -> None:
    start(core, {1: READY}, (10, Strategy.EVENLY, (1,)))
    core.handle(CallerJoined(now=T0 + 1, entry_id=5, queue_id=10))
    core.handle(CallerLeft(now=T0 + 2, entry_id=5))
    assert core.offered_agents() == {}
    core.handle(CallerJoined(now=T0 + 3, entry_id=6, queue_id=10))
    assert core.offered_agents() == {1: 6}


def test_no_answer_moves_on_to_the_next_member_then_starts_over(core: AcdCore) -> None:
    start(core, {1: READY, 2: READY}, (10, Strategy.IN_ORDER, (1, 2)))
    assert rung(core.handle(CallerJoined(now=T0 + 1, entry_id=5, queue_id=10))) == [(5, [1])]
    assert rung(core.handle(OfferEnded(now=T0 + 20, entry_id=5, missed=frozenset({1})))) == [
        (5, [2])
    ]
    actions = core.handle(OfferEnded(now=T0 + 40, entry_id=5, missed=frozenset({2})))
    assert rung(actions) == [(5, [1])]


def test_ring_all_rings_every_free_member(core: AcdCore) -> None:
    start(core, {1: READY, 2: NOT_READY, 3: READY}, (10, Strategy.RING_ALL, (1, 2, 3)))
    assert rung(core.handle(CallerJoined(now=T0 + 1, entry_id=5, queue_id=10))) == [(5, [1, 3])]


@pytest.mark.parametrize(
    ("why", "presence", "blocked", "unreachable"),
    [
        ("in wrap-up", Presence(Status.WRAP_UP, wrap_up_until=T0 + 60), (), ()),
        ("on a direct call", replace(READY, direct_calls=1), (), ()),
        ("ringing already", replace(READY, activity=Activity.RINGING), (), ()),
        ("dnd", Presence(Status.DND), (), ()),
        ("kept from calls by open chats", READY, (1,), ()),
        ("without an extension", READY, (), (1,)),
    ],
)
def test_agents_who_may_not_take_a_call_get_no_offer(
    core: AcdCore, why: str, presence: Presence, blocked: tuple[int, ...],
    unreachable: tuple[int, ...],
) -> None:  # fmt: skip
    start(core, {1: presence}, (10, Strategy.EVENLY, (1,)), unreachable=unreachable)
    core.handle(CallsBlocked(now=T0, user_ids=frozenset(blocked)))
    assert rung(core.handle(CallerJoined(now=T0 + 1, entry_id=5, queue_id=10))) == [], why


def test_fewest_calls_counts_answers_per_day(core: AcdCore) -> None:
    start(core, {1: READY, 2: READY}, (10, Strategy.FEWEST_CALLS, (1, 2)))
    core.handle(PresenceChanged(now=T0, user_id=1, presence=NOT_READY))
    core.handle(CallerJoined(now=T0 + 1, entry_id=5, queue_id=10))  # goes to 2
    core.handle(OfferAnswered(now=T0 + 2, entry_id=5, user_id=2),
                PresenceChanged(now=T0 + 2, user_id=2, presence=NOT_READY),
                PresenceChanged(now=T0 + 2, user_id=1, presence=READY))  # fmt: skip
    core.handle(CallerJoined(now=T0 + 3, entry_id=6, queue_id=10))  # goes to 1
    core.handle(OfferAnswered(now=T0 + 4, entry_id=6, user_id=1),
                PresenceChanged(now=T0 + 4, user_id=1, presence=NOT_READY))  # fmt: skip
    core.handle(OfferAnswered(now=T0 + 5, entry_id=99, user_id=1))  # 1 has 2 calls, 2 has 1
    both_ready = core.handle(
        PresenceChanged(now=T0 + 6, user_id=1, presence=replace(READY, idle_since=T0)),
        PresenceChanged(now=T0 + 6, user_id=2, presence=replace(READY, idle_since=T0 + 5)),
        CallerJoined(now=T0 + 6, entry_id=7, queue_id=10),
    )
    assert rung(both_ready) == [(7, [2])]


def test_random_histories_keep_every_invariant() -> None:
    """Random events from every kind, the invariants checked after each handle()."""
    rng = random.Random(2026)
    for _run in range(40):
        core = AcdCore(rng=random.Random(rng.random()))
        agents = list(range(1, 7))
        strategies = list(Strategy)
        queues = [(q, rng.choice(strategies), tuple(rng.sample(agents, rng.randint(1, 4))))
                  for q in (10, 20, 30)]  # fmt: skip
        start(core, {a: rng.choice([READY, NOT_READY]) for a in agents}, *queues)
        presences = {a: core.presence(a) for a in agents}
        now, next_entry = T0, 1
        waiting: list[int] = []
        for _step in range(150):
            now += rng.uniform(0.0, 2.0)
            kind = rng.randrange(7)
            events: list[object] = []
            offered = core.offered_agents()
            if kind == 0:
                events.append(CallerJoined(now=now, entry_id=next_entry,
                                           queue_id=rng.choice(queues)[0],
                                           priority=rng.choice((0, 0, 0, 1, 5))))  # fmt: skip
                waiting.append(next_entry)
                next_entry += 1
            elif kind == 1 and waiting:
                events.append(
                    CallerLeft(now=now, entry_id=waiting.pop(rng.randrange(len(waiting))))
                )
            elif kind == 2:
                agent = rng.choice(agents)
                choice = rng.choice([READY, NOT_READY, Presence(Status.WRAP_UP,
                                     wrap_up_until=now + rng.uniform(0, 5))])  # fmt: skip
                presences[agent] = replace(choice, activity=presences[agent].activity)
                events.append(PresenceChanged(now=now, user_id=agent, presence=presences[agent]))
            elif kind == 3 and offered:
                agent, entry = rng.choice(sorted(offered.items()))
                presences[agent] = offer_withdrawn(presences[agent])
                events += [
                    OfferEnded(now=now, entry_id=entry, missed=frozenset({agent})),
                    PresenceChanged(now=now, user_id=agent, presence=presences[agent]),
                ]
            elif kind == 4 and offered:
                agent, entry = rng.choice(sorted(offered.items()))
                events.append(ClaimFailed(now=now, entry_id=entry, user_id=agent))
            elif kind == 5 and offered:
                agent, entry = rng.choice(sorted(offered.items()))
                presences[agent] = replace(presences[agent], activity=Activity.IN_CALL)
                waiting.remove(entry)
                events += [
                    OfferAnswered(now=now, entry_id=entry, user_id=agent),
                    PresenceChanged(now=now, user_id=agent, presence=presences[agent]),
                ]
            else:
                for agent, p in presences.items():
                    if p.activity is Activity.IN_CALL and rng.random() < 0.5:
                        presences[agent] = call_ended(p, acd=True, wrap_up_seconds=1, now=now)
                        events.append(PresenceChanged(now=now, user_id=agent,
                                                      presence=presences[agent]))  # fmt: skip
                events.append(TimerFired(now=now))
            for action in core.handle(*events):  # type: ignore[arg-type]
                if isinstance(action, EndWrapUp):
                    presences[action.user_id] = replace(
                        presences[action.user_id], status=Status.READY, wrap_up_until=None
                    )
                    core.handle(
                        PresenceChanged(
                            now=now, user_id=action.user_id, presence=presences[action.user_id]
                        )
                    )
                    core.validate()
                elif isinstance(action, Ring):
                    for agent_target in action.agents:
                        presences[agent_target.user_id] = offer(presences[agent_target.user_id])
                        core.handle(
                            PresenceChanged(
                                now=now,
                                user_id=agent_target.user_id,
                                presence=presences[agent_target.user_id],
                            )
                        )
                        core.validate()
            core.validate()
