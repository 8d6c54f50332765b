"""The customer timeline's pure rules (api/timeline.py): the customer key, the order of calls
and dialogs, and the cursor."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from api.timeline import (
    Cursor,
    Customer,
    CustomerKeyConflict,
    CustomerKeyMissing,
    InvalidChatCustomer,
    InvalidCursor,
    InvalidPhone,
    Kind,
    customer,
    decode_cursor,
    newest_first,
    older_than,
)
from core.errors import InvalidInput

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Entry:
    at: datetime
    kind: Kind
    id: int


@pytest.mark.parametrize(
    ("phone", "chat", "expected"),
    [
        ("+49 30 1234-5", None, Customer(["493012345", "+493012345"],
                                         ["493012345", "+493012345"], None)),
        ("(030) 555.01", None, Customer(["03055501", "+03055501"], ["03055501", "+03055501"],
                                        None)),
        (None, "3:ann@example.com", Customer([], ["ann@example.com"], 3)),
        (None, "007:a:b", Customer([], ["a:b"], 7)),  # the customer id may hold colons
        (None, "000000000002147483647:x", Customer([], ["x"], 2147483647)),
    ],
)  # fmt: skip
def test_customer_keys(phone: str | None, chat: str | None, expected: Customer) -> None:
    assert customer(phone, chat) == expected


@pytest.mark.parametrize(
    ("phone", "chat", "error"),
    [
        (None, None, CustomerKeyMissing),
        ("+4930", "1:x", CustomerKeyConflict),
        ("ann@example.com", None, InvalidPhone),
        ("12", None, InvalidPhone),
        ("+49 30 abc", None, InvalidPhone),
        ("", None, InvalidPhone),
        (None, "ann", InvalidChatCustomer),
        (None, "3:", InvalidChatCustomer),
        (None, ":ann", InvalidChatCustomer),
        (None, "x:ann", InvalidChatCustomer),
        (None, "0:ann", InvalidChatCustomer),
        (None, "-1:ann", InvalidChatCustomer),
        (None, "٣:ann", InvalidChatCustomer),  # a digit, but not ASCII
        (None, "99999999999:ann", InvalidChatCustomer),
        (None, "2147483648:ann", InvalidChatCustomer),
        (None, "9" * 5000 + ":ann", InvalidChatCustomer),
    ],
)
def test_bad_customer_keys(phone: str | None, chat: str | None, error: type[Exception]) -> None:
    with pytest.raises(error) as raised:
        customer(phone, chat)
    assert isinstance(raised.value, InvalidInput) and raised.value.field is not None


def test_cursor_round_trip() -> None:
    cursor = Cursor(T0 + timedelta(microseconds=123456), "call", 42)
    assert decode_cursor(cursor.encode()) == cursor
    assert decode_cursor(Cursor(datetime(1970, 1, 1, tzinfo=UTC), "chat", 1).encode()).id == 1


@pytest.mark.parametrize(
    "text",
    ["", "call", "call.1", "voice.1.0", "call.0.5", "call.2147483648.5", "call.1.-5",
     "call.1.999999999999999999", "call.1.1e5", "call.1.5 "],
)  # fmt: skip
def test_bad_cursors(text: str) -> None:
    with pytest.raises(InvalidCursor):
        decode_cursor(text)


def test_pages_follow_time_then_kind_then_id() -> None:
    items = [
        Entry(T0, "chat", 5), Entry(T0, "call", 3), Entry(T0, "call", 4),
        Entry(T0 + timedelta(seconds=1), "chat", 1), Entry(T0 - timedelta(seconds=1), "call", 9),
    ]  # fmt: skip
    page, after = newest_first(items, 3)
    assert [(i.kind, i.id) for i in page] == [("chat", 1), ("call", 4), ("call", 3)]
    assert after == Cursor(T0, "call", 3)
    rest, end = newest_first(items, 5)
    assert [(i.kind, i.id) for i in rest][3:] == [("chat", 5), ("call", 9)] and end is None
    assert newest_first([], 5) == ([], None)


@pytest.mark.parametrize(
    ("kind", "cursor", "bound"),
    [
        ("call", None, None),
        # Same kind: below the cursor's id at its instant.
        ("call", Cursor(T0, "call", 3), (T0, 3)),
        # Dialogs sort after calls at one instant: all of that instant's come after a call.
        ("chat", Cursor(T0, "call", 3), (T0 + timedelta(microseconds=1), 0)),
        # Calls sort before dialogs: none of that instant's comes after a dialog.
        ("call", Cursor(T0, "chat", 5), (T0, 0)),
    ],
)
def test_older_than(kind: Kind, cursor: Cursor | None, bound: tuple[datetime, int] | None) -> None:
    assert older_than(kind, cursor) == bound


def test_each_item_comes_once_across_pages() -> None:
    """Paging with the cursor, each source filtered by its bound, returns every item once."""
    shape: list[tuple[int, Kind]] = [
        (0, "call"), (0, "chat"), (0, "call"), (1, "chat"), (1, "call"), (2, "chat"), (0, "chat"),
    ]  # fmt: skip
    items = [Entry(T0 + timedelta(seconds=s), k, i) for i, (s, k) in enumerate(shape, start=1)]
    seen: list[Entry] = []
    cursor: Cursor | None = None
    while True:
        rows = [
            e for e in items
            if (bound := older_than(e.kind, cursor)) is None or (e.at, e.id) < bound
        ]  # fmt: skip
        page, cursor = newest_first(rows, 2)
        seen.extend(page)
        if cursor is None:
            break
    assert sorted(seen, key=lambda e: e.id) == items
    assert len(seen) == len(items)
