"""The callback rules (acd.callback_rules), table-tested: which numbers can be called back,
how they are read out, and what follows each attempt."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from acd.callback_rules import (
    AfterAttempt,
    AttemptResult,
    CallbackState,
    after_attempt,
    callback_number,
    spoken_digits,
)

NOW = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("keyed", "number"),
    [
        ("4930123456", "4930123456"),
        ("+4930123456", "+4930123456"),
        (" 030123 ", "030123"),
        ("112", "112"),
        ("12", None),  # too short to be a number
        ("1" * 21, None),  # longer than E.164 allows, with room
        ("anonymous", None),
        ("", None),
        ("49*30", None),
        ("++4930", None),
        ("1001@pbx.local", None),
    ],
)
def test_only_numbers_the_trunk_can_dial_are_called_back(keyed: str, number: str | None) -> None:
    assert callback_number(keyed) == number


@pytest.mark.parametrize(
    ("number", "spoken"),
    [("4930", "4 9 3 0"), ("+4930", "plus 4 9 3 0"), ("112", "1 1 2")],
)
def test_a_number_is_read_back_digit_by_digit(number: str, spoken: str) -> None:
    assert spoken_digits(number) == spoken


RETRY = NOW + timedelta(seconds=120)


@pytest.mark.parametrize(
    ("result", "attempts_before", "expected"),
    [
        (AttemptResult.ANSWERED, 0, AfterAttempt(CallbackState.COMPLETED, 1)),
        (AttemptResult.ANSWERED, 2, AfterAttempt(CallbackState.COMPLETED, 3)),
        (AttemptResult.NO_ANSWER, 0, AfterAttempt(CallbackState.PENDING, 1, RETRY)),
        (AttemptResult.BUSY, 1, AfterAttempt(CallbackState.PENDING, 2, RETRY)),
        (AttemptResult.UNAVAILABLE, 2, AfterAttempt(CallbackState.FAILED, 3)),
        (AttemptResult.FAILED, 2, AfterAttempt(CallbackState.FAILED, 3)),
        (AttemptResult.INTERRUPTED, 0, AfterAttempt(CallbackState.PENDING, 1, RETRY)),
        # The agent hung up before the customer answered: not the customer's attempt, and
        # they are tried again at once.
        (AttemptResult.AGENT_LEFT, 0, AfterAttempt(CallbackState.PENDING, 0)),
        (AttemptResult.AGENT_LEFT, 2, AfterAttempt(CallbackState.PENDING, 2)),
    ],
)
def test_what_follows_an_attempt_with_three_allowed(
    result: AttemptResult, attempts_before: int, expected: AfterAttempt
) -> None:
    assert after_attempt(result, attempts_before, 3, 120, NOW) == expected


def test_a_single_allowed_attempt_that_fails_fails_the_callback() -> None:
    assert after_attempt(AttemptResult.NO_ANSWER, 0, 1, 120, NOW).state is CallbackState.FAILED
