"""Callback rules, pure: which number a caller may be called back on, and what follows an
attempt to reach them (flows.callback carries them out, acd.callbacks keeps the requests)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

# What a caller may key in or be known by: a number the trunk can dial (3 to 20 digits, an
# optional leading +). Anything else (anonymous, a SIP name) must be keyed in.
_DIALLABLE = re.compile(r"^\+?[0-9]{3,20}$")


class CallbackState(StrEnum):
    PENDING = "pending"  # waits for its turn in the queue (again, after a failed attempt)
    CALLING = "calling"  # an agent answered; the customer is being dialled or talked to
    COMPLETED = "completed"  # the customer answered and talked to the agent
    FAILED = "failed"  # every attempt failed
    CANCELLED = "cancelled"  # taken back by an admin or supervisor


OPEN_STATES = frozenset({CallbackState.PENDING, CallbackState.CALLING})


class AttemptResult(StrEnum):
    ANSWERED = "answered"
    NO_ANSWER = "no_answer"
    BUSY = "busy"
    UNAVAILABLE = "unavailable"  # the provider cannot reach the number now
    FAILED = "failed"  # the trunk or a worker failed
    # The agent hung up before the customer answered: that attempt does not count against
    # the customer, who is tried again at once.
    AGENT_LEFT = "agent_left"
    INTERRUPTED = "interrupted"  # the service stopped during the attempt


def callback_number(digits: str) -> str | None:
    """The number to call back, or None when the trunk could not dial it."""
    number = digits.strip()
    return number if _DIALLABLE.match(number) else None


def spoken_digits(number: str) -> str:
    """How a number is read back: digit by digit ("4 9 3 0 ..."), "plus" for a leading +."""
    digits = " ".join(number.lstrip("+"))
    return f"plus {digits}" if number.startswith("+") else digits


@dataclass(frozen=True)
class AfterAttempt:
    state: CallbackState
    attempts: int  # attempts that count, this one included
    # When the next attempt may begin (PENDING only); None: at the caller's turn, at once.
    next_attempt_at: datetime | None = None


def after_attempt(
    result: AttemptResult, attempts: int, max_attempts: int, retry_interval: int, now: datetime
) -> AfterAttempt:
    """`attempts`: those that counted before this one. An answered call completes the
    callback; the agent leaving does not count; anything else counts and is retried after
    `retry_interval` seconds until `max_attempts` have failed."""
    if result is AttemptResult.ANSWERED:
        return AfterAttempt(CallbackState.COMPLETED, attempts + 1)
    if result is AttemptResult.AGENT_LEFT:
        return AfterAttempt(CallbackState.PENDING, attempts)
    made = attempts + 1
    if made >= max_attempts:
        return AfterAttempt(CallbackState.FAILED, made)
    return AfterAttempt(CallbackState.PENDING, made, now + timedelta(seconds=retry_interval))
