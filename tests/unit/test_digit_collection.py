"""Greeting digit collection, row by row: (extensions, what the caller does) -> outcome."""

from __future__ import annotations

import pytest

from ivr.digits import (
    Collection,
    Outcome,
    feed_digit,
    feed_tick,
    give_up_waiting,
    start_collecting,
)

EXTENSIONS = frozenset({"1", "12", "123", "1001", "1002", "2000", "7"})
TIMEOUT = 3.0


def dial(keys: str, *, start: float = 0.0, gap: float = 0.5) -> Collection:
    collection = start_collecting(EXTENSIONS, TIMEOUT)
    now = start
    for key in keys:
        collection = feed_digit(collection, key, now)
        now += gap
    return collection


@pytest.mark.parametrize(
    ("keys", "outcome", "digits"),
    [
        ("2000", Outcome.EXTENSION, "2000"),  # only one extension can follow: at once
        ("7", Outcome.EXTENSION, "7"),  # a one-digit extension nothing else starts with
        ("1001", Outcome.EXTENSION, "1001"),
        ("123", Outcome.EXTENSION, "123"),  # 123 is the longest starting with 123
        ("12#", Outcome.EXTENSION, "12"),  # '#' ends an ambiguous prefix
        ("1#", Outcome.EXTENSION, "1"),
        ("10#", Outcome.UNKNOWN, "10"),  # a prefix of 1001 but no extension itself
        ("9", Outcome.UNKNOWN, "9"),  # no extension starts with 9: no waiting
        ("1009", Outcome.UNKNOWN, "1009"),
        ("20001", Outcome.EXTENSION, "2000"),  # digits after the decision are ignored
        ("*7", Outcome.EXTENSION, "7"),  # '*' is no part of an extension
        ("#", Outcome.COLLECTING, ""),  # '#' alone ends nothing
    ],
)
def test_digits_decide_when_they_can(keys: str, outcome: Outcome, digits: str) -> None:
    collection = dial(keys)
    assert collection.outcome is outcome
    assert collection.digits == digits


@pytest.mark.parametrize(
    ("keys", "outcome"),
    [
        ("1", Outcome.EXTENSION),
        ("12", Outcome.EXTENSION),
        ("10", Outcome.UNKNOWN),
        ("100", Outcome.UNKNOWN),
    ],
)
def test_inter_digit_timeout_ends_an_ambiguous_prefix(keys: str, outcome: Outcome) -> None:
    collection = dial(keys, gap=0.5)
    last_digit_at = 0.5 * (len(keys) - 1)
    assert collection.deadline == last_digit_at + TIMEOUT
    assert feed_tick(collection, last_digit_at + TIMEOUT - 0.01).outcome is Outcome.COLLECTING
    assert feed_tick(collection, last_digit_at + TIMEOUT).outcome is outcome


def test_each_digit_restarts_the_timeout() -> None:
    collection = dial("1", start=0.0)
    collection = feed_digit(collection, "0", 2.9)
    assert feed_tick(collection, 3.5).outcome is Outcome.COLLECTING
    assert collection.deadline == pytest.approx(5.9)


def test_no_deadline_until_the_first_digit() -> None:
    collection = start_collecting(EXTENSIONS, TIMEOUT)
    assert collection.deadline is None
    assert feed_tick(collection, 1000.0).outcome is Outcome.COLLECTING
    assert give_up_waiting(collection).outcome is Outcome.NOTHING


def test_giving_up_does_not_cut_a_caller_who_is_dialling() -> None:
    collection = dial("10")
    assert give_up_waiting(collection) == collection


def test_a_decided_collection_ignores_everything_after() -> None:
    decided = dial("7")
    assert feed_digit(decided, "1", 9.0) == decided
    assert feed_tick(decided, 99.0) == decided
    assert give_up_waiting(decided) == decided


def test_empty_directory_rejects_any_digit_at_once() -> None:
    collection = feed_digit(start_collecting(frozenset(), TIMEOUT), "5", 0.0)
    assert collection.outcome is Outcome.UNKNOWN


# -- greeting and menu together: an extension wins when the digits form one ----------------

MENU_KEYS = frozenset({"1", "2", "5", "9"})


def dial_with_menu(keys: str, extensions: frozenset[str], *, then_wait: bool = False) -> Collection:
    collection = start_collecting(extensions, TIMEOUT, MENU_KEYS)
    now = 0.0
    for key in keys:
        collection = feed_digit(collection, key, now)
        now += 0.5
    if then_wait:
        collection = feed_tick(collection, now + TIMEOUT)
    return collection


@pytest.mark.parametrize(
    ("extensions", "keys", "then_wait", "outcome", "digits"),
    [
        # Extension 1 vs option 1: the extension wins, at once when nothing longer exists.
        (frozenset({"1"}), "1", False, Outcome.EXTENSION, "1"),
        (frozenset({"1", "12"}), "1", True, Outcome.EXTENSION, "1"),
        (frozenset({"1", "12"}), "1", False, Outcome.COLLECTING, "1"),
        # Extensions 12 and 123: 1 waits for more; 12 + timeout, 123 at once.
        (frozenset({"12", "123"}), "1", False, Outcome.COLLECTING, "1"),
        (frozenset({"12", "123"}), "12", True, Outcome.EXTENSION, "12"),
        (frozenset({"12", "123"}), "123", False, Outcome.EXTENSION, "123"),
        (frozenset({"12", "123"}), "12#", False, Outcome.EXTENSION, "12"),
        # ...and 1 alone, then nothing: no extension, one digit -> the menu option.
        (frozenset({"12", "123"}), "1", True, Outcome.MENU_OPTION, "1"),
        (frozenset({"12", "123"}), "1#", False, Outcome.MENU_OPTION, "1"),
        # A digit no extension starts with: the option at once, no waiting.
        (frozenset({"12", "123"}), "2", False, Outcome.MENU_OPTION, "2"),
        (frozenset(), "5", False, Outcome.MENU_OPTION, "5"),
        # A digit the menu has no option for and no extension starts with: unknown.
        (frozenset({"12"}), "3", False, Outcome.UNKNOWN, "3"),
        # Two digits are never a menu option.
        (frozenset({"123"}), "12", True, Outcome.UNKNOWN, "12"),
        (frozenset({"100"}), "10#", False, Outcome.UNKNOWN, "10"),
        # 9 starts extension 900: wait; 900 is the extension.
        (frozenset({"900"}), "900", False, Outcome.EXTENSION, "900"),
        (frozenset({"900"}), "9", True, Outcome.MENU_OPTION, "9"),
    ],
)
def test_greeting_digits_are_an_extension_first_then_a_menu_option(
    extensions: frozenset[str], keys: str, then_wait: bool, outcome: Outcome, digits: str
) -> None:
    collection = dial_with_menu(keys, extensions, then_wait=then_wait)
    assert collection.outcome is outcome
    assert collection.digits == digits


def test_without_a_menu_a_single_unknown_digit_stays_unknown() -> None:
    collection = feed_digit(start_collecting(frozenset({"12"}), TIMEOUT), "5", 0.0)
    assert collection.outcome is Outcome.UNKNOWN
