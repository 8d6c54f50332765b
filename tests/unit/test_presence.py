"""Agent presence, row by row: who gets ACD work, and what each event does to the state."""

from __future__ import annotations

from typing import Any

import pytest

from acd.forwarding import Action, Decision, after_no_answer, decide
from acd.presence import (
    MISSED_CALLS_REASON,
    Activity,
    IllegalStatus,
    NotOfferable,
    Presence,
    Status,
    after_restart,
    answered,
    call_ended,
    choose_status,
    direct_call_ended,
    direct_call_started,
    end_wrap_up,
    offer,
    offer_missed,
    offer_withdrawn,
    stamped,
    tick,
    wrap_up_length,
)
from destinations.destination import ExtensionDestination, HangupDestination, NumberDestination

REASONS = frozenset({"break", "other"})


def chosen(status: str, reason: str | None = None, *, current: Presence | None = None,
           now: float = 0.0, wrap: float | None = None) -> Presence:  # fmt: skip
    return choose_status(
        current or Presence(), status, reason=reason, message=None, reasons=REASONS, now=now,
        wrap_up_seconds=wrap,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("presence", "takes_work"),
    [
        (Presence(Status.READY), True),
        (Presence(Status.READY, activity=Activity.RINGING), False),
        (Presence(Status.READY, activity=Activity.IN_CALL), False),
        (Presence(Status.NOT_READY, reason="break"), False),
        (Presence(Status.WRAP_UP, wrap_up_until=10.0), False),
        (Presence(Status.AVAILABLE), False),
        (Presence(Status.AWAY), False),
        (Presence(Status.DND), False),
        (Presence(Status.LOGGED_OUT), False),
    ],
)
def test_only_ready_and_idle_agents_take_acd_work(presence: Presence, takes_work: bool) -> None:
    assert presence.takes_acd_work is takes_work


@pytest.mark.parametrize(
    ("status", "reason", "field"),
    [
        ("in_call", None, "status"),
        ("ringing", None, "status"),
        ("idle", None, "status"),
        ("sleeping", None, "status"),
        ("not_ready", None, "reason"),
        ("not_ready", "lunch", "reason"),
        ("ready", "break", "reason"),
    ],
)
def test_illegal_choices_name_the_field(status: str, reason: str | None, field: str) -> None:
    with pytest.raises(IllegalStatus) as error:
        chosen(status, reason)
    assert error.value.field == field


@pytest.mark.parametrize("status", ["available", "away", "ready", "dnd", "logged_out"])
def test_plain_statuses_apply_at_once_when_idle(status: str) -> None:
    assert chosen(status).status == Status(status)


def test_not_ready_carries_its_reason_and_message() -> None:
    presence = choose_status(
        Presence(Status.READY), "not_ready", reason="break", message="back at 3",
        reasons=REASONS, now=0.0,
    )  # fmt: skip
    assert (presence.status, presence.reason, presence.message) == (
        Status.NOT_READY, "break", "back at 3",
    )  # fmt: skip


def test_change_during_a_call_waits_for_the_call_to_end() -> None:
    in_call = answered(offer(Presence(Status.READY)))
    asked = chosen("not_ready", "break", current=in_call)
    assert asked.status is Status.READY and asked.activity is Activity.IN_CALL
    after = call_ended(asked, acd=True, wrap_up_seconds=30, now=100.0)
    assert (after.status, after.reason, after.activity) == (
        Status.NOT_READY,
        "break",
        Activity.IDLE,
    )
    assert after.pending is None


def test_acd_call_end_starts_wrap_up_which_ends_by_itself() -> None:
    in_call = answered(offer(Presence(Status.READY)))
    wrapping = call_ended(in_call, acd=True, wrap_up_seconds=30, now=100.0)
    assert wrapping.status is Status.WRAP_UP and not wrapping.takes_acd_work
    assert tick(wrapping, 129.9).status is Status.WRAP_UP
    assert tick(wrapping, 130.0).status is Status.READY


def test_wrap_up_can_end_early_or_be_entered_by_hand() -> None:
    wrapping = call_ended(answered(offer(Presence(Status.READY))), acd=True,
                          wrap_up_seconds=30, now=0.0)  # fmt: skip
    assert end_wrap_up(wrapping).takes_acd_work
    manual = chosen("wrap_up", current=Presence(Status.READY), now=5.0, wrap=20.0)
    assert manual.status is Status.WRAP_UP and manual.wrap_up_until == 25.0
    with pytest.raises(IllegalStatus):
        end_wrap_up(Presence(Status.READY))


@pytest.mark.parametrize(
    ("agent_own", "default", "length"), [(None, 10, 10), (45, 10, 45), (0, 10, 0), (None, 0, 0)]
)
def test_an_agents_own_wrap_up_time_wins(agent_own: int | None, default: int, length: int) -> None:
    assert wrap_up_length(agent_own, default) == length


def test_direct_calls_block_acd_work_without_wrap_up() -> None:
    on_direct = direct_call_started(Presence(Status.READY))
    assert not on_direct.takes_acd_work and on_direct.shown_activity is Activity.IN_CALL
    two = direct_call_started(on_direct)
    assert not direct_call_ended(two).takes_acd_work
    after = direct_call_ended(direct_call_ended(two))
    assert after.status is Status.READY and after.takes_acd_work


def test_change_asked_for_during_a_direct_call_waits_for_its_end() -> None:
    on_direct = direct_call_started(Presence(Status.READY))
    asked = chosen("not_ready", "break", current=on_direct)
    assert asked.status is Status.READY and asked.pending is not None
    after = direct_call_ended(asked)
    assert after.status is Status.NOT_READY and after.reason == "break"
    assert after.direct_calls == 0 and after.pending is None


def test_offer_withdrawn_frees_the_agent_without_counting_a_miss() -> None:
    ringing = offer(Presence(Status.READY, missed_offers=1))
    after = offer_withdrawn(ringing)
    assert after.takes_acd_work and after.missed_offers == 1


def test_restart_keeps_choices_and_forgets_calls() -> None:
    talking = answered(offer(Presence(Status.READY, message="hi")))
    talking = direct_call_started(chosen("dnd", current=talking))
    after = after_restart(talking)
    assert after.status is Status.DND and after.message is None  # the pending choice applied
    wrapping = Presence(Status.WRAP_UP, wrap_up_until=99.0, message="notes")
    assert after_restart(wrapping) == wrapping


@pytest.mark.parametrize(
    ("before", "after", "changed_at", "idle_since"),
    [
        (Presence(Status.AWAY), Presence(Status.READY), 7.0, 7.0),
        (Presence(Status.READY), Presence(Status.READY, message="x"), 0.0, 0.0),
        (Presence(Status.READY), Presence(Status.READY, activity=Activity.RINGING), 7.0, 0.0),
        (Presence(Status.READY, direct_calls=1), Presence(Status.READY), 7.0, 7.0),
    ],
)
def test_stamps_say_when_status_and_free_time_changed(
    before: Presence, after: Presence, changed_at: float, idle_since: float
) -> None:
    result = stamped(before, after, 7.0)
    assert (result.changed_at, result.idle_since) == (changed_at, idle_since)


def test_no_second_offer_while_ringing_or_talking() -> None:
    ringing = offer(Presence(Status.READY))
    with pytest.raises(NotOfferable):
        offer(ringing)
    with pytest.raises(NotOfferable):
        offer(answered(ringing))
    with pytest.raises(NotOfferable):
        offer(Presence(Status.NOT_READY, reason="break"))


def test_too_many_missed_offers_make_the_agent_not_ready() -> None:
    presence = Presence(Status.READY)
    for _ in range(2):
        presence = offer_missed(offer(presence), max_missed=3)
        assert presence.takes_acd_work
    presence = offer_missed(offer(presence), max_missed=3)
    assert (presence.status, presence.reason) == (Status.NOT_READY, MISSED_CALLS_REASON)


def test_an_answer_resets_the_missed_count() -> None:
    presence = offer_missed(offer(Presence(Status.READY)), max_missed=2)
    presence = call_ended(answered(offer(presence)), acd=True, wrap_up_seconds=0, now=0.0)
    presence = offer_missed(offer(presence), max_missed=2)
    assert presence.status is Status.READY


# -- per-status forwarding of direct calls ---------------------------------------------------

MOBILE = NumberDestination(number="+491701234567")
DESK = ExtensionDestination(extension="1002")
REJECT = HangupDestination()


@pytest.mark.parametrize(
    ("presence", "rules", "action", "destination"),
    [
        (Presence(Status.READY), {}, Action.RING, None),
        (Presence(Status.AWAY), {"away": MOBILE}, Action.FORWARD, MOBILE),
        (Presence(Status.AWAY), {"dnd": MOBILE}, Action.RING, None),
        (Presence(Status.DND), {}, Action.REJECT, None),
        (Presence(Status.DND), {"dnd": DESK}, Action.FORWARD, DESK),
        (Presence(Status.LOGGED_OUT), {"logged_out": REJECT}, Action.REJECT, None),
        (Presence(Status.READY, activity=Activity.IN_CALL), {"busy": DESK}, Action.FORWARD, DESK),
        (Presence(Status.READY, direct_calls=1), {"busy": MOBILE}, Action.FORWARD, MOBILE),
        (Presence(Status.READY, direct_calls=1), {}, Action.RING, None),
        # A rule for the status wins over busy.
        (
            Presence(Status.AWAY, direct_calls=1),
            {"away": DESK, "busy": MOBILE},
            Action.FORWARD,
            DESK,
        ),
    ],
)
def test_forwarding_decision_before_ringing(
    presence: Presence, rules: dict[str, Any], action: Action, destination: Any
) -> None:
    decision = decide(presence, rules)
    assert (decision.action, decision.destination) == (action, destination)


def test_no_answer_rule_applies_after_ringing() -> None:
    assert after_no_answer({}) is None
    assert after_no_answer({"no_answer": MOBILE}) == Decision(Action.FORWARD, MOBILE)
    assert after_no_answer({"no_answer": REJECT}) == Decision(Action.REJECT)
