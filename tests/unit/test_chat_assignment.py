"""Chat assignment, row by row: availability, limits with exclusions, the hard cap, each
distribution mode, batches that respect limits, and dialogs moving on after idling."""

from __future__ import annotations

import pytest

from acd.presence import Activity, Presence, Status
from chat.assignment import (
    HARD_CAP,
    ChannelRule,
    Countable,
    Distribution,
    Loads,
    Placement,
    WaitingDialog,
    counted_open,
    over_limit,
    plan_placements,
    takes_chats,
)

CHANNEL = 7
MEMBERS = (11, 12, 13)
READY = Presence(Status.READY)


def everyone(presence: Presence = READY) -> dict[int, Presence]:
    return dict.fromkeys(MEMBERS, presence)


def loads(**per_agent: int) -> Loads:
    """loads(a11=2) -> agent 11 holds 2 counted open dialogs in CHANNEL."""
    counts = {int(k[1:]): v for k, v in per_agent.items()}
    return Loads({(a, CHANNEL): n for a, n in counts.items()}, dict(counts))


def plan(
    rule: ChannelRule, waiting: list[WaitingDialog], presences: dict[int, Presence] | None = None,
    load: Loads | None = None, last: dict[int, float] | None = None, *, on_call: bool = True,
) -> list[Placement]:  # fmt: skip
    return plan_placements(
        waiting, {CHANNEL: rule}, everyone() if presences is None else presences,
        load or loads(), last or {}, while_on_call=on_call, now=100.0,
    )  # fmt: skip


def dialogs(count: int) -> list[WaitingDialog]:
    return [WaitingDialog(i, CHANNEL, queued_at=float(i)) for i in range(1, count + 1)]


@pytest.mark.parametrize(
    ("presence", "check", "on_call", "takes"),
    [
        (Presence(Status.READY), True, True, True),
        (Presence(Status.AVAILABLE), True, True, True),
        (Presence(Status.WRAP_UP), True, True, False),
        (Presence(Status.NOT_READY, reason="break"), True, True, False),
        (Presence(Status.AWAY), True, True, False),
        (Presence(Status.DND), True, True, False),
        (Presence(Status.LOGGED_OUT), True, True, False),
        (Presence(Status.LOGGED_OUT), False, True, True),  # availability not checked
        (Presence(Status.READY, activity=Activity.IN_CALL), True, True, True),
        (Presence(Status.READY, activity=Activity.IN_CALL), True, False, False),
        (Presence(Status.READY, activity=Activity.RINGING), True, False, False),
        (Presence(Status.READY, direct_calls=1), True, False, False),
        (Presence(Status.AWAY, direct_calls=1), False, False, False),  # a call is not status
    ],
)
def test_who_takes_chats(presence: Presence, check: bool, on_call: bool, takes: bool) -> None:
    assert takes_chats(presence, check_availability=check, while_on_call=on_call) is takes


@pytest.mark.parametrize(
    ("states", "excludes", "counted"),
    [
        ({"assigned": 2, "answered": 3, "waiting": 4}, frozenset(), 9),
        ({"assigned": 2, "answered": 3, "waiting": 4}, frozenset({Countable.ANSWERED}), 6),
        ({"assigned": 2, "answered": 3, "waiting": 4}, frozenset({Countable.WAITING}), 5),
        ({"assigned": 2, "answered": 3, "waiting": 4}, frozenset(Countable), 2),
        ({"closed": 50, "new": 3}, frozenset(), 0),  # closed and queued never count
    ],
)
def test_limit_counts_open_dialogs_minus_exclusions(
    states: dict[str, int], excludes: frozenset[Countable], counted: int
) -> None:
    assert counted_open(states, excludes) == counted


@pytest.mark.parametrize(
    ("distribution", "load", "last", "expected"),
    [
        (Distribution.IN_ORDER, loads(), {}, (11,)),
        (Distribution.IN_ORDER, loads(a11=5), {}, (11,)),  # fills the first member up
        (Distribution.EVENLY, loads(a11=1, a12=0, a13=1), {}, (12,)),  # fewest open
        (Distribution.EVENLY, loads(), {11: 50.0, 12: 30.0, 13: 40.0}, (12,)),  # then longest
        (Distribution.EVENLY, loads(), {}, (11,)),  # then list order
        (Distribution.TO_ALL, loads(), {}, (11, 12, 13)),
    ],
)
def test_distribution_picks(
    distribution: Distribution, load: Loads, last: dict[int, float], expected: tuple[int, ...]
) -> None:
    placements = plan(ChannelRule(distribution, MEMBERS), dialogs(1), load=load, last=last)
    assert placements == [Placement(1, expected, offer=distribution is Distribution.TO_ALL)]


def test_in_order_moves_on_when_the_first_member_is_full() -> None:
    rule = ChannelRule(Distribution.IN_ORDER, MEMBERS, max_open=2)
    got = plan(rule, dialogs(5))
    assert [p.agents for p in got] == [(11,), (11,), (12,), (12,), (13,)]


def test_evenly_spreads_a_batch() -> None:
    got = plan(ChannelRule(Distribution.EVENLY, MEMBERS), dialogs(6))
    assert [p.agents[0] for p in got] == [11, 12, 13, 11, 12, 13]


def test_a_batch_never_passes_the_limit() -> None:
    rule = ChannelRule(Distribution.EVENLY, MEMBERS, max_open=1)
    got = plan(rule, dialogs(5), load=loads(a11=1))
    assert [(p.dialog_id, p.agents) for p in got] == [(1, (12,)), (2, (13,))]


def test_oldest_dialog_goes_first() -> None:
    rule = ChannelRule(Distribution.IN_ORDER, (11,), max_open=1)
    late, early = WaitingDialog(1, CHANNEL, 50.0), WaitingDialog(2, CHANNEL, 10.0)
    assert plan(rule, [late, early]) == [Placement(2, (11,))]


def test_unavailable_and_busy_members_are_skipped() -> None:
    presences = {11: Presence(Status.AWAY), 12: Presence(Status.READY, direct_calls=1),
                 13: Presence(Status.AVAILABLE)}  # fmt: skip
    rule = ChannelRule(Distribution.IN_ORDER, MEMBERS)
    assert plan(rule, dialogs(1), presences, on_call=False) == [Placement(1, (13,))]
    assert plan(rule, dialogs(1), presences, on_call=True) == [Placement(1, (12,))]
    unchecked = ChannelRule(Distribution.IN_ORDER, MEMBERS, check_availability=False)
    assert plan(unchecked, dialogs(1), presences, on_call=True) == [Placement(1, (11,))]


def test_hard_cap_applies_whatever_the_channel_allows() -> None:
    load = Loads({}, {11: HARD_CAP, 12: HARD_CAP - 1})
    got = plan(ChannelRule(Distribution.IN_ORDER, MEMBERS), dialogs(2), load=load)
    assert [p.agents for p in got] == [(12,), (13,)]


def test_nobody_available_places_nothing() -> None:
    rule = ChannelRule(Distribution.TO_ALL, MEMBERS)
    assert plan(rule, dialogs(3), everyone(Presence(Status.LOGGED_OUT))) == []


def test_idle_dialog_moves_to_the_next_agent_and_frees_the_first() -> None:
    rule = ChannelRule(Distribution.IN_ORDER, MEMBERS, max_open=1)
    idle = WaitingDialog(1, CHANNEL, 1.0, idle_with=11)
    queued = WaitingDialog(2, CHANNEL, 2.0)
    got = plan(rule, [idle, queued], load=loads(a11=1))
    # 11 is skipped for the dialog it ignored but gets the next one, its slot being free.
    assert got == [Placement(1, (12,)), Placement(2, (11,))]


def test_idle_dialog_skips_everyone_it_idled_with_then_starts_over() -> None:
    rule = ChannelRule(Distribution.IN_ORDER, MEMBERS)
    went_round = WaitingDialog(1, CHANNEL, 1.0, idle_with=13, tried=frozenset({11, 12}))
    assert plan(rule, [went_round]) == [Placement(1, (11,), new_round=True)]
    half_way = WaitingDialog(1, CHANNEL, 1.0, idle_with=11, tried=frozenset({12}))
    assert plan(rule, [half_way]) == [Placement(1, (13,))]


def test_idle_dialog_stays_when_nobody_else_can_take_it() -> None:
    rule = ChannelRule(Distribution.EVENLY, (11,))
    assert plan(rule, [WaitingDialog(1, CHANNEL, 1.0, idle_with=11)]) == []


def test_idle_to_all_dialog_is_offered_to_the_others() -> None:
    rule = ChannelRule(Distribution.TO_ALL, MEMBERS)
    got = plan(rule, [WaitingDialog(1, CHANNEL, 1.0, idle_with=12)])
    assert got == [Placement(1, (11, 13), offer=True)]


def test_unknown_channel_is_ignored() -> None:
    stray = WaitingDialog(1, CHANNEL + 1, 1.0)
    assert plan(ChannelRule(Distribution.EVENLY, MEMBERS), [stray]) == []


def test_a_backlog_nobody_can_take_keeps_no_other_channel_waiting() -> None:
    other = CHANNEL + 1
    rules = {CHANNEL: ChannelRule(Distribution.EVENLY, (11,), max_open=1),
             other: ChannelRule(Distribution.EVENLY, (12,))}  # fmt: skip
    backlog = [WaitingDialog(i, CHANNEL, float(i)) for i in range(1, 2001)]
    late = WaitingDialog(5000, other, 5000.0)
    got = plan_placements([*backlog, late], rules, everyone(), loads(a11=1), {},
                          while_on_call=True, now=100.0)  # fmt: skip
    assert got == [Placement(5000, (12,))]


@pytest.mark.parametrize(
    ("placements", "held", "over"),
    [
        ([Placement(1, (11,))], loads(a11=1), frozenset()),  # room for one more: max_open 2
        ([Placement(1, (11,)), Placement(2, (11,))], loads(a11=1), {11}),
        ([Placement(1, (11,)), Placement(2, (12,))], loads(a11=2), {11}),  # a claim got there
        ([Placement(1, (11, 12, 13), offer=True)], loads(a11=2), frozenset()),  # offers hold none
        # 11 idled with dialog 3 and gets dialog 1: its slot moved on with dialog 3.
        ([Placement(3, (12,)), Placement(1, (11,))], loads(a11=2), frozenset()),
    ],
)
def test_a_plan_is_checked_against_what_agents_hold(
    placements: list[Placement], held: Loads, over: frozenset[int]
) -> None:
    waiting = {1: WaitingDialog(1, CHANNEL, 1.0), 2: WaitingDialog(2, CHANNEL, 2.0),
               3: WaitingDialog(3, CHANNEL, 0.5, idle_with=11)}  # fmt: skip
    rules = {CHANNEL: ChannelRule(Distribution.EVENLY, MEMBERS, max_open=2)}
    assert over_limit(placements, waiting, rules, held) == over


def test_the_hard_cap_is_checked_too() -> None:
    waiting = {1: WaitingDialog(1, CHANNEL, 1.0)}
    rules = {CHANNEL: ChannelRule(Distribution.EVENLY, MEMBERS)}
    held = Loads({}, {11: HARD_CAP})
    assert over_limit([Placement(1, (11,))], waiting, rules, held) == {11}
