"""The customer timeline's rules, pure: which customer a query names, the order of calls and
dialogs in one list, and the cursor that pages through it (api/customers.py reads the rows)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol, TypeVar

from chat.blocklist import entries_matching
from core.errors import InvalidInput
from core.sql_bounds import SQL_INT_MAX

Kind = Literal["call", "chat"]
# At the same instant a call is listed before a dialog (newest first, then this, then id).
_RANK: dict[str, int] = {"chat": 0, "call": 1}
_CURSOR = re.compile(r"^(call|chat)\.([0-9]{1,10})\.([0-9]{1,18})$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_LATEST = datetime.max.replace(tzinfo=UTC)


class CustomerKeyMissing(InvalidInput):
    code = "customer_key_missing"


class CustomerKeyConflict(InvalidInput):
    code = "customer_key_conflict"


class InvalidPhone(InvalidInput):
    code = "invalid_phone"


class InvalidChatCustomer(InvalidInput):
    code = "invalid_chat_customer"


class InvalidCursor(InvalidInput):
    code = "invalid_cursor"


@dataclass(frozen=True)
class Customer:
    """Who the timeline is about: calls from or to `numbers` (none for a chat customer), and
    dialogs of `chat_ids` in `channel_id` (any channel when None)."""

    numbers: list[str]
    chat_ids: list[str]
    channel_id: int | None


def customer(phone: str | None, chat_customer: str | None) -> Customer:
    """Exactly one of `phone` (a number, as the blocklist matches it: punctuation dropped, `+`
    optional) and `chat_customer` (`<channel id>:<customer id>`)."""
    if phone is None and chat_customer is None:
        raise CustomerKeyMissing("give phone or chat_customer", field="phone")
    if phone is not None and chat_customer is not None:
        raise CustomerKeyConflict("give phone or chat_customer, not both", field="chat_customer")
    if phone is not None:
        numbers = [] if "@" in phone else entries_matching(phone)
        if not numbers:
            raise InvalidPhone(f"{phone!r} is not a number (3-20 digits, optional +)",
                               field="phone")  # fmt: skip
        # A messenger that names its customers by phone number: their dialogs are theirs too.
        return Customer(numbers, numbers, None)
    assert chat_customer is not None
    channel, sep, customer_id = chat_customer.partition(":")
    if not (sep and channel.isascii() and channel.isdigit() and customer_id):
        raise InvalidChatCustomer(
            "chat_customer must be <channel id>:<customer id>", field="chat_customer"
        )
    significant = channel.lstrip("0") or "0"
    # Bounded by length first: int() refuses strings over 4,300 digits.
    channel_id = int(significant) if len(significant) <= 10 else 0
    if not 1 <= channel_id <= SQL_INT_MAX:
        raise InvalidChatCustomer(
            f"the channel id must be 1 to {SQL_INT_MAX}", field="chat_customer"
        )
    return Customer([], [customer_id], channel_id)


@dataclass(frozen=True)
class Cursor:
    """The last item of a page: the next page starts after it."""

    at: datetime
    kind: Kind
    id: int

    def encode(self) -> str:
        return f"{self.kind}.{self.id}.{(self.at - _EPOCH) // _MICROSECOND}"


def decode_cursor(text: str) -> Cursor:
    match = _CURSOR.match(text)
    if match is None:
        raise InvalidCursor("cursor is not one this service handed out", field="cursor")
    kind, item_id, micros = match.groups()
    try:
        at = _EPOCH + timedelta(microseconds=int(micros))
    except OverflowError:
        raise InvalidCursor("cursor is out of range", field="cursor") from None
    # older_than adds a microsecond to the cursor's instant.
    if at >= _LATEST or not 1 <= int(item_id) <= SQL_INT_MAX:
        raise InvalidCursor("cursor is out of range", field="cursor")
    return Cursor(at, "call" if kind == "call" else "chat", int(item_id))


def older_than(kind: Kind, cursor: Cursor | None) -> tuple[datetime, int] | None:
    """The (time, id) that rows of `kind` must sort below to come after `cursor`."""
    if cursor is None:
        return None
    if _RANK[kind] == _RANK[cursor.kind]:
        return cursor.at, cursor.id
    if _RANK[kind] < _RANK[cursor.kind]:
        # Every item of this kind at the cursor's instant comes after it (timestamps are
        # stored to the microsecond).
        return cursor.at + _MICROSECOND, 0
    return cursor.at, 0


class Item(Protocol):
    @property
    def at(self) -> datetime: ...
    @property
    def kind(self) -> Kind: ...
    @property
    def id(self) -> int: ...


T = TypeVar("T", bound=Item)


def newest_first(items: Iterable[T], limit: int) -> tuple[Sequence[T], Cursor | None]:
    """One page of `items` (each source's first `limit + 1` after the cursor, so a next page
    exists exactly when more than `limit` came), and the cursor of the next page."""
    ordered = sorted(items, key=lambda i: (i.at, _RANK[i.kind], i.id), reverse=True)
    page = ordered[:limit]
    if len(ordered) <= limit or not page:
        return page, None
    last = page[-1]
    return page, Cursor(last.at, last.kind, last.id)
