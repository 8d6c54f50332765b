"""Digit collection during a greeting: a pure state machine over (digit or tick, now); no timers.

The shell feeds digits and clock ticks and owns the timer: it wakes at `deadline`.
Rules (the Calls issue): digits end on '#', on the inter-digit timeout, or at once when the
digits dialled so far can only mean one extension (no other extension starts with them), and
equally at once when no extension starts with them ("not found" without the wait).

Greeting and menu (the IVR issue): when the number's route is a menu, digits that end as no
extension but are exactly one digit the menu has an option for are that menu option. So a
digit no extension starts with picks its option at once, and a digit that starts extensions
(1 when 12 exists) waits for more and picks the option only if nothing more comes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum

TERMINATOR = "#"


class Outcome(Enum):
    COLLECTING = "collecting"  # keep listening until `deadline`
    EXTENSION = "extension"  # `digits` is an existing extension
    UNKNOWN = "unknown"  # digits were dialled but they are no extension
    MENU_OPTION = "menu_option"  # `digits` is one digit: an option of the menu after the greeting
    NOTHING = "nothing"  # no digit came before the deadline


@dataclass(frozen=True)
class Collection:
    """What has been dialled so far and what it means; replaced, never mutated."""

    extensions: frozenset[str]
    inter_digit_timeout: float
    digits: str = ""
    # Keys of the menu the greeting leads to (empty: no menu).
    menu_options: frozenset[str] = frozenset()
    outcome: Outcome = Outcome.COLLECTING
    # None while the greeting plays and nobody has dialled: the shell decides that wait.
    deadline: float | None = None

    @property
    def done(self) -> bool:
        return self.outcome is not Outcome.COLLECTING


def start_collecting(
    extensions: frozenset[str],
    inter_digit_timeout: float,
    menu_options: frozenset[str] = frozenset(),
) -> Collection:
    return Collection(
        extensions=extensions, inter_digit_timeout=inter_digit_timeout, menu_options=menu_options
    )


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
    digits = collection.digits
    if digits in collection.extensions:
        outcome = Outcome.EXTENSION
    elif len(digits) == 1 and digits in collection.menu_options:
        outcome = Outcome.MENU_OPTION
    else:
        outcome = Outcome.UNKNOWN
    return replace(collection, outcome=outcome, deadline=None)
