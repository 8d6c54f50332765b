"""The small pure rules around chat: working hours, blocklist entries, canned response
placeholders, reply delivery backoff and signatures, and the statistics fold."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from chat.blocklist import Action, InvalidEntry, entries_matching, normalised_entry, strongest
from chat.canned_responses import InvalidPlaceholder, check_placeholders, fill
from chat.outbox import backoff_seconds, signature
from chat.stats import DialogFacts, figures, figures_by
from chat.working_hours import WorkingHours, is_open, next_opening

OFFICE = WorkingHours(
    timezone="Europe/Berlin", days={"mon": ["09:00-12:00", "13:00-18:00"], "sat": ["10:00-24:00"]}
)


@pytest.mark.parametrize(
    ("utc", "open_"),
    [
        ("2026-11-23T08:30:00", True),  # Monday 09:30 in Berlin (UTC+1)
        ("2026-11-23T07:59:00", False),  # 08:59
        ("2026-11-23T11:30:00", False),  # 12:30, lunch
        ("2026-11-23T16:59:00", True),  # 17:59
        ("2026-11-23T17:00:00", False),  # 18:00: the end is not included
        ("2026-11-24T10:00:00", False),  # Tuesday: not listed
        ("2026-11-28T22:59:00", True),  # Saturday 23:59 up to 24:00
        ("2026-07-06T07:30:00", True),  # Monday 09:30 in summer (UTC+2)
    ],
)
def test_working_hours(utc: str, open_: bool) -> None:
    assert is_open(OFFICE, datetime.fromisoformat(utc).replace(tzinfo=UTC)) is open_


@pytest.mark.parametrize(
    ("utc", "opens"),
    [
        ("2026-11-23T06:00:00", "2026-11-23T08:00:00"),  # Monday 07:00 -> 09:00 Berlin
        ("2026-11-23T09:00:00", "2026-11-23T12:00:00"),  # 10:00 -> after lunch, 13:00
        ("2026-11-23T12:00:00", "2026-11-28T09:00:00"),  # 13:00 (just opened) -> Saturday
        ("2026-11-28T12:00:00", "2026-11-30T08:00:00"),  # Saturday -> next Monday 09:00
        ("2026-03-29T06:00:00", "2026-03-30T07:00:00"),  # Sunday before: Monday in summer time
    ],
)
def test_working_hours_next_opening(utc: str, opens: str) -> None:
    at = next_opening(OFFICE, datetime.fromisoformat(utc).replace(tzinfo=UTC))
    assert at == datetime.fromisoformat(opens).replace(tzinfo=UTC)
    assert at is not None and is_open(OFFICE, at)


def test_hours_that_never_open_or_always_are_have_no_next_opening() -> None:
    now = datetime(2026, 11, 23, tzinfo=UTC)
    assert next_opening(WorkingHours(timezone="UTC", days={}), now) is None
    assert next_opening(None, now) is None


def test_no_working_hours_means_always_open() -> None:
    assert is_open(None, datetime(2026, 1, 1, 3, tzinfo=UTC))


@pytest.mark.parametrize(
    "hours",
    [
        {"timezone": "Mars/Olympus"},
        {"days": {"mon": ["18:00-09:00"]}},
        {"days": {"mon": ["9-17"]}},
        {"days": {"someday": ["09:00-17:00"]}},
        {"days": {"mon": ["09:00-24:01"]}},
    ],
)
def test_bad_working_hours_are_refused(hours: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        WorkingHours.model_validate(hours)


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("+49 30 1234-567", "+49301234567"),
        ("(030) 123.456", "030123456"),
        ("Ann@Example.COM", "ann@example.com"),
        ("@Spam.Example", "@spam.example"),
    ],
)
def test_blocklist_entries_are_normalised(raw: str, normalised: str) -> None:
    assert normalised_entry(raw) == normalised


@pytest.mark.parametrize("raw", ["12", "abc", "@", "@nodot", "a@b", "ann@@example.com", "+"])
def test_blocklist_refuses_what_is_no_number_address_or_domain(raw: str) -> None:
    with pytest.raises(InvalidEntry):
        normalised_entry(raw)


@pytest.mark.parametrize(
    ("identity", "matching"),
    [
        ("+4930123", ["4930123", "+4930123"]),
        ("4930123", ["4930123", "+4930123"]),
        ("Bob@Spam.Example", ["bob@spam.example", "@spam.example"]),
        ("telegram-user-17", []),
    ],
)
def test_what_blocks_an_identity(identity: str, matching: list[str]) -> None:
    assert entries_matching(identity) == matching


def test_refuse_beats_spam() -> None:
    assert strongest([Action.SPAM, Action.REFUSE]) is Action.REFUSE
    assert strongest([Action.SPAM]) is Action.SPAM
    assert strongest([]) is None


def test_canned_response_placeholders() -> None:
    text = "Hello {customer_name}, {agent_name} here. {{braces}} stay."
    check_placeholders(text)
    assert fill(text, customer_name="Ann", agent_name="Bo") == "Hello Ann, Bo here. {braces} stay."
    assert fill(text, customer_name=None, agent_name=None).startswith("Hello there, your agent")


@pytest.mark.parametrize("text", ["Hi {name}", "Hi {}", "Hi {0}", "Hi {customer_name", "}"])
def test_unknown_or_broken_placeholders_are_refused(text: str) -> None:
    with pytest.raises(InvalidPlaceholder):
        check_placeholders(text)


def test_backoff_doubles_up_to_the_cap() -> None:
    waits = [backoff_seconds(n, first=5, cap=60) for n in range(1, 7)]
    assert waits == [5, 10, 20, 40, 60, 60]


def test_signature_is_hmac_sha256_of_the_body() -> None:
    expected = hmac.new(b"k", b'{"a":1}', hashlib.sha256).hexdigest()
    assert signature("k", b'{"a":1}') == "sha256=" + expected


def test_statistics_fold() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)

    def at(seconds: float) -> datetime:
        return t0 + timedelta(seconds=seconds)

    rows = [
        DialogFacts(1, 11, t0, at(1), at(10), at(100), 5),
        DialogFacts(1, 11, t0, at(2), at(30), None, None),
        DialogFacts(1, None, t0, None, None, None, None),  # still queued
        DialogFacts(2, 12, t0, at(1), None, at(61), 2),  # closed unanswered
    ]
    one = figures_by(rows, lambda d: d.channel_id)[1]
    assert (one.received, one.unanswered, one.first_response_seconds) == (3, 1, 20.0)
    assert (one.handling_seconds, one.average_rating, one.rated) == (99.0, 5.0, 1)
    by_agent = figures_by(rows, lambda d: d.assignee_id)
    assert set(by_agent) == {11, 12}
    assert by_agent[12].unanswered == 1 and by_agent[12].handling_seconds == 60.0
    assert figures([]).first_response_seconds is None
