"""Customer timeline: every call and chat dialog of one customer, newest first, paged."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from api import timeline
from api.routing import STAFF, ApiRequest, RouteTable
from chat.customer_history import dialogs_of_customer
from chat.models import DialogRow
from chat.stats import user_names
from ivr.cdr import CallRecord, Direction, calls_with_party

routes = RouteTable()


class TimelineQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Exactly one of the two.
    phone: str | None = Field(None, max_length=128, description="a number, e.g. +49 30 1234")
    chat_customer: str | None = Field(
        None, max_length=220, description="<channel id>:<customer id>, e.g. 3:ann@example.com"
    )
    limit: int = Field(50, ge=1, le=200)
    cursor: str | None = Field(None, max_length=64, description="next_cursor of the last page")


class HandledBy(BaseModel):
    user_id: int
    name: str


class CallDetail(BaseModel):
    caller: str
    called: str
    connected_to: str | None
    answered_at: datetime | None
    ended_at: datetime | None
    hangup_by: str | None


class ChatDetail(BaseModel):
    channel_id: int
    customer_id: str
    customer_name: str | None
    spam: bool
    first_response_at: datetime | None
    closed_at: datetime | None
    rating: int | None


class TimelineItem(BaseModel):
    kind: Literal["call", "chat"]
    id: int
    # When the call started or the dialog was opened.
    at: datetime
    # Calls: inbound, internal or outbound (the CDR's); dialogs: inbound (customers open them).
    direction: str
    # Calls: who answered (or placed an outbound call); dialogs: who holds or closed it.
    handled_by: HandledBy | None
    # Calls: the disposition (null while the call goes on); dialogs: the state.
    outcome: str | None
    # Calls: talk time; dialogs: opened to closed.
    duration_seconds: float | None
    call: CallDetail | None = None
    chat: ChatDetail | None = None


class Timeline(BaseModel):
    items: list[TimelineItem]
    limit: int
    # Pass as `cursor` for the next page; null on the last.
    next_cursor: str | None


@routes.add(
    "GET", "/customers/timeline", summary="A customer's calls and dialogs", tag="customers",
    roles=STAFF, query=TimelineQuery, response=Timeline, errors=(401, 403, 422),
)  # fmt: skip
async def customer_timeline(req: ApiRequest) -> Timeline:
    query: TimelineQuery = req.query
    who = timeline.customer(query.phone, query.chat_customer)
    cursor = timeline.decode_cursor(query.cursor) if query.cursor is not None else None
    # One more than a page from each source tells whether a next page exists.
    fetch = query.limit + 1
    calls = (
        await calls_with_party(req.ctx, who.numbers, timeline.older_than("call", cursor), fetch)
        if who.numbers
        else []
    )
    dialogs = await dialogs_of_customer(
        req.ctx, who.chat_ids, who.channel_id, timeline.older_than("chat", cursor), fetch
    )
    handlers = {_call_handler(c) for c in calls} | {d.assignee_id for d in dialogs}
    names = await user_names(req.ctx, {user_id for user_id in handlers if user_id is not None})
    page, after = timeline.newest_first(
        [*(_call_item(c, names) for c in calls), *(_chat_item(d, names) for d in dialogs)],
        query.limit,
    )
    return Timeline(
        items=list(page), limit=query.limit, next_cursor=after.encode() if after else None
    )


def _call_handler(row: CallRecord) -> int | None:
    """Who answered, or placed an outbound call; nobody handled an unanswered call."""
    if row.answered_at is not None or row.direction == Direction.OUTBOUND:
        return row.user_id
    return None


def _handled_by(user_id: int | None, names: dict[int, str]) -> HandledBy | None:
    return HandledBy(user_id=user_id, name=names.get(user_id, "")) if user_id is not None else None


def _call_item(row: CallRecord, names: dict[int, str]) -> TimelineItem:
    talk = (
        (row.ended_at - row.answered_at).total_seconds()
        if row.answered_at is not None and row.ended_at is not None
        else None
    )
    return TimelineItem(
        kind="call", id=row.id, at=row.started_at, direction=row.direction,
        handled_by=_handled_by(_call_handler(row), names),
        outcome=row.disposition, duration_seconds=talk,
        call=CallDetail(
            caller=row.caller, called=row.called, connected_to=row.connected_to,
            answered_at=row.answered_at, ended_at=row.ended_at, hangup_by=row.hangup_by,
        ),
    )  # fmt: skip


def _chat_item(row: DialogRow, names: dict[int, str]) -> TimelineItem:
    duration = (row.closed_at - row.created_at).total_seconds() if row.closed_at else None
    return TimelineItem(
        kind="chat", id=row.id, at=row.created_at, direction="inbound",
        handled_by=_handled_by(row.assignee_id, names),
        outcome=row.state, duration_seconds=duration,
        chat=ChatDetail(
            channel_id=row.channel_id, customer_id=row.customer_id,
            customer_name=row.customer_name, spam=row.spam,
            first_response_at=row.first_response_at, closed_at=row.closed_at,
            rating=row.rating,
        ),
    )  # fmt: skip
