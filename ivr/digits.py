"""Digit collection during a greeting: a pure state machine over (digit or tick, now); no timers.

The shell feeds digits and clock ticks and owns the timer: it wakes at `deadline`.
Rules (the Calls issue): digits end on '#', on the inter-digit timeout, or at once when the
digits dialled so far can only mean one extension (no other extension starts with them), and
equally at once when no extension starts with them ("not found" without the wait).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum

TERMINATOR = "#"


class Outcome(Enum):
    COLLECTING = "collecting"  # keep listening until `deadline`
    EXTENSION = "extension"  # `digits` is an existing extension
    UNKNOWN = "unknown"  # digits were dialled but they are no extension
    NOTHING = "nothing"  # no digit came before the deadline


@dataclass(frozen=True)
class Collection:
    """What has been dialled so far and what it means; replaced, never mutated."""

    extensions: frozenset[str]
    inter_digit_timeout: float
    digits: str = ""
    outcome: Outcome = Outcome.COLLECTING
    # None while the greeting plays and nobody has dialled: the shell decides that wait.
    deadline: float | None = None

    @property
    def done(self) -> bool:
        return self.outcome is not Outcome.COLLECTING


def start_collecting(extensions: frozenset[str], inter_digit_timeout: float) -> Collection:
    return Collection(extensions=extensions, inter_digit_timeout=inter_digit_timeout)


def feed_digit(collection: Collection, digit: str, now: float) -> Collection:
    """One DTMF digit ('0'-'9', '*', '#', 'A'-'D') at time `now`."""
    if collection.done:
        return collection
    if digit == TERMINATOR:
        return _finish(collection) if collection.digits else collection
    if not digit.isascii() or not digit.isdigit():
        # '*' and A-D are no part of an extension; ignore them rather than fail the caller.
        return collection
    digits = collection.digits + digit
    updated = replace(collection, digits=digits, deadline=now + collection.inter_digit_timeout)
    longer_exists = any(
        len(ext) > len(digits) and ext.startswith(digits) for ext in collection.extensions
    )
    if longer_exists:
        return updated
    # Nothing longer can follow: decide now rather than make the caller wait for the timeout.
    return _finish(updated)


def feed_tick(collection: Collection, now: float) -> Collection:
    """The clock at `now`: ends the collection when the inter-digit timeout has passed."""
    if collection.done or collection.deadline is None or now < collection.deadline:
        return collection
    return _finish(collection)


def give_up_waiting(collection: Collection) -> Collection:
    """The shell's wait after the greeting ran out with nothing dialled."""
    if collection.done or collection.digits:
        return collection
    return replace(collection, outcome=Outcome.NOTHING, deadline=None)


def _finish(collection: Collection) -> Collection:
    outcome = Outcome.EXTENSION if collection.digits in collection.extensions else Outcome.UNKNOWN
    return replace(collection, outcome=outcome, deadline=None)
