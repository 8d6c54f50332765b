"""Chat dialogs: customer messages in, agent replies out, claim, forward, close and rating.

States: new (waiting in its channel's queue) -> assigned (an agent owns it; the customer's
last message is unanswered) -> answered (the agent replied) or waiting (the agent replied and
waits for the customer) -> closed. A customer message makes an answered or waiting dialog
assigned again. Every change is one SQL transaction with its events; who may act is decided
here: admin everything, supervisor reads everything, an operator only their own dialogs
(and, in to_all channels, the ones offered to them).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Select, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from chat.assignment import HARD_CAP, counted_open
from chat.canned_responses import render_canned_response
from chat.channels import channel_specs, load_channel_row
from chat.models import (
    ChannelRow,
    ChatMessageRow,
    DialogOfferRow,
    DialogRow,
    OutboxRow,
)
from chat.outbox import queue_delivery
from core.context import ServiceContext
from core.db import utcnow
from core.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthorized
from core.events import Event, EventBus
from extensions.models import User
from extensions.roles import Role
from extensions.tokens import Principal

log = structlog.get_logger(__name__)

# States whose dialogs an agent holds (new ones wait in the queue).
HELD_STATES = ("assigned", "answered", "waiting")


class BadChannelSecret(Unauthorized):
    code = "bad_channel_secret"


class Blocked(Forbidden):
    code = "blocked"


class DialogNotYours(Forbidden):
    code = "dialog_not_yours"


class DialogClosed(Conflict):
    code = "dialog_closed"


class DialogTaken(Conflict):
    code = "dialog_taken"


class DialogLimitReached(Conflict):
    code = "dialog_limit_reached"


class CustomerHasOpenDialog(Conflict):
    code = "customer_has_open_dialog"


class DialogNotClosed(Conflict):
    code = "dialog_not_closed"


class DialogAlreadyRated(Conflict):
    code = "dialog_already_rated"


class InvalidForward(InvalidInput):
    code = "invalid_forward"


@dataclass(frozen=True)
class Inbound:
    dialog_id: int
    message_id: int
    state: str
    spam: bool


@dataclass(frozen=True)
class DialogFilter:
    channel_id: int | None = None
    state: str | None = None
    assignee_id: int | None = None
    customer_id: str | None = None
    spam: bool | None = None
    limit: int = 100
    offset: int = 0


# -- the customer's side (through the channel's connector) ---------------------------------


async def rate(ctx: ServiceContext, dialog_id: int, secret: str, rating: int) -> DialogRow:
    """The customer rates a closed dialog once, through the channel's connector."""
    async with ctx.sessions.begin() as session:
        dialog = await _load(session, dialog_id)
        channel = await load_channel_row(session, dialog.channel_id)
        if not hmac.compare_digest(channel.secret.encode(), secret.encode()):
            raise BadChannelSecret("X-Channel-Secret does not match the dialog's channel")
        if dialog.state != "closed":
            raise DialogNotClosed(f"dialog {dialog_id} is {dialog.state}; rate it once closed")
        if dialog.rating is not None:
            raise DialogAlreadyRated(f"dialog {dialog_id} was rated {dialog.rating} already")
        dialog.rating = rating
        event = await ctx.events.stage(session, "dialog_rated", dialog_data(dialog))
    await ctx.events.publish(event)
    ctx.metrics.chat_dialogs.labels(event="rated").inc()
    return dialog


# -- the agent's side ----------------------------------------------------------------------


async def list_dialogs(
    ctx: ServiceContext, viewer: Principal, where: DialogFilter
) -> list[tuple[DialogRow, list[int]]]:
    """Newest first, each with the agents it is offered to."""
    query = select(DialogRow)
    if where.channel_id is not None:
        query = query.where(DialogRow.channel_id == where.channel_id)
    if where.state is not None:
        query = query.where(DialogRow.state == where.state)
    if where.assignee_id is not None:
        query = query.where(DialogRow.assignee_id == where.assignee_id)
    if where.customer_id is not None:
        query = query.where(DialogRow.customer_id == where.customer_id)
    if where.spam is not None:
        query = query.where(DialogRow.spam.is_(where.spam))
    if viewer.role is Role.OPERATOR:
        offered = select(DialogOfferRow.dialog_id).where(DialogOfferRow.user_id == viewer.user_id)
        query = query.where((DialogRow.assignee_id == viewer.user_id) | DialogRow.id.in_(offered))
    query = query.order_by(DialogRow.id.desc()).limit(where.limit).offset(where.offset)
    async with ctx.sessions() as session:
        found = list(await session.scalars(query))
        offers = await offered_to(session, [d.id for d in found])
    return [(d, offers.get(d.id, [])) for d in found]


async def read_dialog(
    ctx: ServiceContext, viewer: Principal, dialog_id: int
) -> tuple[DialogRow, list[int], list[tuple[ChatMessageRow, OutboxRow | None]]]:
    """The dialog, who it is offered to, and its messages with their delivery."""
    async with ctx.sessions() as session:
        dialog = await _load(session, dialog_id)
        offered = await offered_to(session, [dialog_id])
        if viewer.role is Role.OPERATOR:
            _ensure_involved(dialog, viewer, offered.get(dialog_id, []))
        messages: list[tuple[ChatMessageRow, OutboxRow | None]] = [
            (message, outbox)
            for message, outbox in await session.execute(
                select(ChatMessageRow, OutboxRow)
                .outerjoin(OutboxRow, OutboxRow.message_id == ChatMessageRow.id)
                .where(ChatMessageRow.dialog_id == dialog_id)
                .order_by(ChatMessageRow.id)
            )
        ]
        return dialog, offered.get(dialog_id, []), messages


async def agent_dialogs(ctx: ServiceContext, user_id: int) -> tuple[set[int], set[int]]:
    """The dialogs an agent holds now and those offered to them now (their event stream)."""
    held = select(DialogRow.id).where(
        DialogRow.assignee_id == user_id, DialogRow.state.in_(HELD_STATES)
    )
    offered = select(DialogOfferRow.dialog_id).where(DialogOfferRow.user_id == user_id)
    async with ctx.sessions() as session:
        return set(await session.scalars(held)), set(await session.scalars(offered))


async def offered_to(session: AsyncSession, dialog_ids: Sequence[int]) -> dict[int, list[int]]:
    found: dict[int, list[int]] = {}
    for dialog_id, user_id in await session.execute(
        select(DialogOfferRow.dialog_id, DialogOfferRow.user_id)
        .where(DialogOfferRow.dialog_id.in_(dialog_ids))
        .order_by(DialogOfferRow.dialog_id, DialogOfferRow.user_id)
    ):  # fmt: skip
        found.setdefault(dialog_id, []).append(user_id)
    return found


async def reply(
    ctx: ServiceContext, viewer: Principal, dialog_id: int, *, text: str | None,
    canned_response_id: int | None, wait_for_customer: bool,
) -> ChatMessageRow:  # fmt: skip
    """An agent's message to the customer. Replying to a dialog offered to you claims it."""
    now = utcnow()
    async with ctx.sessions.begin() as session:
        dialog = await _load(session, dialog_id)
        events = []
        if dialog.state == "new" and dialog.assignee_id is None:
            await _take(session, dialog, viewer, now)
            claimed = {**dialog_data(dialog), "cause": "claim"}
            events.append(await ctx.events.stage(session, "dialog_assigned", claimed))
        _ensure_may_write(dialog, viewer)
        if canned_response_id is not None:
            text = await render_canned_response(
                session, canned_response_id, customer_name=dialog.customer_name,
                agent_name=await _name_of(session, viewer.user_id),
            )  # fmt: skip
        assert text is not None  # the API sends exactly one of text and canned_response_id
        channel = await load_channel_row(session, dialog.channel_id)
        message = await _send(session, dialog, channel.reply_url, text, viewer.user_id, now)
        if dialog.first_response_at is None:
            dialog.first_response_at = now
            dialog.first_response_by = viewer.user_id
        dialog.state = "waiting" if wait_for_customer else "answered"
        dialog.idle_deadline = None
        events.append(
            await ctx.events.stage(session, "message_sent", message_data(message, dialog.state))
        )
    await ctx.events.publish(*events)
    ctx.metrics.chat_messages.labels(direction="out").inc()
    return message


async def claim(ctx: ServiceContext, viewer: Principal, dialog_id: int) -> DialogRow:
    """Take a waiting dialog (to_all offers it to several agents: exactly one wins)."""
    now = utcnow()
    async with ctx.sessions.begin() as session:
        dialog = await _load(session, dialog_id)
        if dialog.state != "new" or dialog.assignee_id is not None:
            raise DialogTaken(f"dialog {dialog_id} is {dialog.state}, not waiting")
        await _take(session, dialog, viewer, now)
        event = await ctx.events.stage(session, "dialog_assigned",
                                       {**dialog_data(dialog), "cause": "claim"})  # fmt: skip
    await ctx.events.publish(event)
    ctx.metrics.chat_dialogs.labels(event="assigned").inc()
    return dialog


async def forward(
    ctx: ServiceContext, viewer: Principal, dialog_id: int, *, user_id: int | None,
    channel_id: int | None,
) -> DialogRow:  # fmt: skip
    """To another agent (it becomes theirs at once) or to another channel (its queue)."""
    now = utcnow()
    try:
        async with ctx.sessions.begin() as session:
            dialog = await _load(session, dialog_id)
            _ensure_may_write(dialog, viewer)
            previous = {"assignee_id": dialog.assignee_id, "channel_id": dialog.channel_id}
            if user_id is not None:
                await _forward_to_agent(session, dialog, user_id, now)
            elif channel_id is not None:
                await _forward_to_channel(session, dialog, channel_id, now)
            await session.flush()
            forwarded = {**dialog_data(dialog), "previous": previous}
            event = await ctx.events.stage(session, "dialog_forwarded", forwarded)
    except IntegrityError:
        raise CustomerHasOpenDialog(
            "the customer has an open dialog in that channel already", field="channel_id"
        ) from None
    await ctx.events.publish(event)
    ctx.metrics.chat_dialogs.labels(event="forwarded").inc()
    return dialog


async def close(ctx: ServiceContext, viewer: Principal, dialog_id: int) -> DialogRow:
    now = utcnow()
    async with ctx.sessions.begin() as session:
        dialog = await _load(session, dialog_id)
        _ensure_may_write(dialog, viewer)
        dialog.state = "closed"
        dialog.closed_at = now
        dialog.closed_by = f"user:{viewer.user_id}" if viewer.user_id is not None else "admin"
        dialog.idle_deadline = None
        await session.execute(delete(DialogOfferRow).where(DialogOfferRow.dialog_id == dialog_id))
        event = await ctx.events.stage(session, "dialog_closed", dialog_data(dialog))
    await ctx.events.publish(event)
    ctx.metrics.chat_dialogs.labels(event="closed").inc()
    return dialog


async def requeue_dialogs_of(session: AsyncSession, bus: EventBus, user_id: int) -> list[Event]:
    """A dismissed agent's open dialogs go back to their queues, keeping their place, inside
    the caller's transaction (dismissal is one); returns the staged events."""
    dialogs = list(await session.scalars(select(DialogRow).where(
        DialogRow.assignee_id == user_id, DialogRow.state.in_(HELD_STATES)
    )))  # fmt: skip
    events = []
    for dialog in dialogs:
        dialog.state, dialog.assignee_id, dialog.idle_deadline = "new", None, None
        events.append(await bus.stage(session, "dialog_requeued", dialog_data(dialog)))
    return events


# -- capacity shared with calls ------------------------------------------------------------


async def open_dialog_loads(
    session: AsyncSession, agents: Sequence[int]
) -> dict[tuple[int, int], dict[str, int]]:
    """(agent, channel) -> open dialogs per state, for the agents given."""
    if not agents:
        return {}
    return loads_from_rows(await session.execute(held_counts(agents)))


def held_counts(agents: Sequence[int]) -> Select[int | None, int, str, int]:
    return (
        select(DialogRow.assignee_id, DialogRow.channel_id, DialogRow.state, func.count())
        .where(DialogRow.assignee_id.in_(agents), DialogRow.state.in_(HELD_STATES))
        .group_by(DialogRow.assignee_id, DialogRow.channel_id, DialogRow.state)
    )


def loads_from_rows(
    rows: Iterable[tuple[int | None, int, str, int]],
) -> dict[tuple[int, int], dict[str, int]]:
    loads: dict[tuple[int, int], dict[str, int]] = {}
    for agent, channel_id, state, count in rows:
        if agent is not None:  # always: the IN clause holds ids only
            loads.setdefault((agent, channel_id), {})[state] = count
    return loads


async def lock_agents(session: AsyncSession, agents: Sequence[int]) -> None:
    """Before counting what agents hold in order to give them more: with PostgreSQL, two
    transactions doing so for one agent take turns on the agent's row (the chat assigner's
    pass locks them too). SQLite has one writer at a time already (and no FOR UPDATE)."""
    if agents and session.get_bind().dialect.name != "sqlite":
        await session.execute(agent_rows_locked(agents))


def agent_rows_locked(agents: Sequence[int]) -> Select[int]:
    return select(User.id).where(User.id.in_(agents)).with_for_update()


# -- views ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DialogView:
    """A dialog's columns as plain values: what chat.writes reads and writes without the ORM
    (its rows would cost a unit of work each on the hot path)."""

    id: int
    channel_id: int
    customer_id: str
    customer_name: str | None
    state: str
    spam: bool
    assignee_id: int | None
    created_at: datetime
    queued_at: datetime
    assigned_at: datetime | None
    first_assigned_at: datetime | None
    idle_deadline: datetime | None
    tried: list[int]
    first_response_at: datetime | None
    first_response_by: int | None
    last_message_at: datetime
    closed_at: datetime | None
    closed_by: str | None
    rating: int | None

    @classmethod
    def of(cls, row: Mapping[Any, Any]) -> DialogView:
        return cls(**{name: row[name] for name in _DIALOG_FIELDS})


_DIALOG_FIELDS = tuple(DialogView.__dataclass_fields__)


@dataclass(frozen=True)
class MessageView:
    id: int
    dialog_id: int
    direction: str
    author_id: int | None
    text: str
    created_at: datetime


def dialog_data(dialog: DialogRow | DialogView) -> dict[str, Any]:
    return {
        "id": dialog.id,
        "channel_id": dialog.channel_id,
        "customer": {"id": dialog.customer_id, "name": dialog.customer_name},
        "state": dialog.state,
        "spam": dialog.spam,
        "assignee_id": dialog.assignee_id,
        "created_at": _iso(dialog.created_at),
        "queued_at": _iso(dialog.queued_at),
        "assigned_at": _iso(dialog.assigned_at),
        "first_response_at": _iso(dialog.first_response_at),
        "last_message_at": _iso(dialog.last_message_at),
        "closed_at": _iso(dialog.closed_at),
        "closed_by": dialog.closed_by,
        "rating": dialog.rating,
        # For the chat assigner's memory (chat.board): when an unanswered dialog moves on,
        # and the agents it already sat idle with.
        "idle_deadline": _iso(dialog.idle_deadline),
        "tried": list(dialog.tried or []),
    }


def message_data(message: ChatMessageRow | MessageView, dialog_state: str) -> dict[str, Any]:
    return {
        "id": message.id,
        "dialog_id": message.dialog_id,
        "direction": message.direction,
        "author_id": message.author_id,
        "text": message.text,
        "created_at": _iso(message.created_at),
        # A message can change its dialog's state (a reply answers it, the customer writing
        # back makes it the agent's turn again).
        "dialog_state": dialog_state,
    }


# -- inside a transaction ------------------------------------------------------------------


async def _load(session: AsyncSession, dialog_id: int) -> DialogRow:
    dialog = await session.get(DialogRow, dialog_id)
    if dialog is None:
        raise NotFound(f"dialog {dialog_id} does not exist")
    return dialog


def _ensure_involved(dialog: DialogRow, viewer: Principal, offered: list[int]) -> None:
    if dialog.assignee_id != viewer.user_id and viewer.user_id not in offered:
        raise DialogNotYours(f"dialog {dialog.id} is not yours")


def _ensure_may_write(dialog: DialogRow, viewer: Principal) -> None:
    if dialog.state == "closed":
        raise DialogClosed(f"dialog {dialog.id} is closed")
    if viewer.role is not Role.ADMIN and dialog.assignee_id != viewer.user_id:
        raise DialogNotYours(f"dialog {dialog.id} is not yours")


async def _take(session: AsyncSession, dialog: DialogRow, viewer: Principal, now: datetime) -> None:
    """Claim a waiting dialog for the viewer: only if it is offered to them (admins may take
    any) and within their limits. One conditional UPDATE: of two claims, one wins."""
    if viewer.user_id is None:
        raise InvalidForward("a token without a user cannot own a dialog")
    offered = (await offered_to(session, [dialog.id])).get(dialog.id, [])
    if viewer.role is not Role.ADMIN and viewer.user_id not in offered:
        raise DialogNotYours(f"dialog {dialog.id} is not offered to you")
    spec = (await channel_specs(session, {dialog.channel_id}))[dialog.channel_id]
    await _ensure_capacity(session, viewer.user_id, dialog.channel_id, spec.max_open_dialogs,
                           spec.limit_excludes)  # fmt: skip
    taken = await session.execute(
        update(DialogRow)
        .where(DialogRow.id == dialog.id, DialogRow.state == "new",
               DialogRow.assignee_id.is_(None))
        .values(state="assigned", assignee_id=viewer.user_id, assigned_at=now,
                first_assigned_at=func.coalesce(DialogRow.first_assigned_at, now),
                idle_deadline=_deadline(now, spec.idle_seconds))
        .execution_options(synchronize_session=False)
    )  # fmt: skip
    if taken.rowcount != 1:  # type: ignore[attr-defined]
        raise DialogTaken(f"dialog {dialog.id} was taken by someone else")
    await session.execute(delete(DialogOfferRow).where(DialogOfferRow.dialog_id == dialog.id))
    await session.refresh(dialog)


async def _ensure_capacity(
    session: AsyncSession, agent: int, channel_id: int, max_open: int | None,
    excludes: frozenset[Any],
) -> None:  # fmt: skip
    await lock_agents(session, [agent])
    loads = await open_dialog_loads(session, [agent])
    total = sum(sum(states.values()) for states in loads.values())
    if total >= HARD_CAP:
        raise DialogLimitReached(f"user {agent} holds {total} open dialogs, the most allowed")
    if (
        max_open is not None
        and counted_open(loads.get((agent, channel_id), {}), excludes) >= max_open
    ):
        raise DialogLimitReached(f"user {agent} is at the channel's limit of {max_open} dialogs")


async def _forward_to_agent(
    session: AsyncSession, dialog: DialogRow, user_id: int, now: datetime
) -> None:
    if user_id == dialog.assignee_id:
        raise InvalidForward("the dialog is theirs already", field="user_id")
    user = await session.get(User, user_id)
    if user is None or not user.active:
        raise InvalidForward(f"no active user with id {user_id}", field="user_id")
    await _ensure_capacity(session, user_id, dialog.channel_id, None, frozenset())
    spec = (await channel_specs(session, {dialog.channel_id}))[dialog.channel_id]
    dialog.assignee_id = user_id
    dialog.state = "assigned"
    dialog.assigned_at = now
    dialog.first_assigned_at = dialog.first_assigned_at or now
    dialog.idle_deadline = (
        _deadline(now, spec.idle_seconds) if dialog.first_response_at is None else None
    )
    dialog.tried = []
    await session.execute(delete(DialogOfferRow).where(DialogOfferRow.dialog_id == dialog.id))


async def _forward_to_channel(
    session: AsyncSession, dialog: DialogRow, channel_id: int, now: datetime
) -> None:
    if channel_id == dialog.channel_id:
        raise InvalidForward("the dialog is in that channel already", field="channel_id")
    if await session.get(ChannelRow, channel_id) is None:
        raise InvalidForward(f"channel {channel_id} does not exist", field="channel_id")
    dialog.channel_id = channel_id
    dialog.state = "new"
    dialog.assignee_id = None
    dialog.queued_at = now
    dialog.idle_deadline = None
    dialog.tried = []
    await session.execute(delete(DialogOfferRow).where(DialogOfferRow.dialog_id == dialog.id))


async def _send(
    session: AsyncSession, dialog: DialogRow, reply_url: str | None, text: str,
    author_id: int | None, now: datetime,
) -> ChatMessageRow:  # fmt: skip
    message = ChatMessageRow(dialog_id=dialog.id, direction="out", author_id=author_id,
                             text=text, created_at=now)  # fmt: skip
    session.add(message)
    await session.flush()
    if reply_url:
        queue_delivery(session, message, now)
    dialog.last_message_at = now
    return message


async def _name_of(session: AsyncSession, user_id: int | None) -> str | None:
    if user_id is None:
        return None
    user = await session.get(User, user_id)
    return user.name if user is not None else None


def _deadline(now: datetime, idle_seconds: int) -> datetime | None:
    return now + timedelta(seconds=idle_seconds) if idle_seconds > 0 else None


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None
