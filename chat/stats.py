"""Chat statistics per channel and per agent, from the dialogs' own timestamps. The figures are
a pure fold over plain rows; only `dialog_rows` reads SQL."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from chat.models import ChannelRow, DialogRow
from core.context import ServiceContext
from extensions.models import User


@dataclass(frozen=True)
class DialogFacts:
    channel_id: int
    assignee_id: int | None
    created_at: datetime
    first_assigned_at: datetime | None
    first_response_at: datetime | None
    closed_at: datetime | None
    rating: int | None


@dataclass(frozen=True)
class Figures:
    # Dialogs opened by customers (spam left out).
    received: int
    # Of those, the ones no agent has replied to (yet).
    unanswered: int
    # Mean seconds from the customer's first message to the first reply.
    first_response_seconds: float | None
    # Mean seconds from the first assignment to closing.
    handling_seconds: float | None
    average_rating: float | None
    rated: int


def figures(dialogs: Iterable[DialogFacts]) -> Figures:
    rows = list(dialogs)
    responses = [
        (d.first_response_at - d.created_at).total_seconds()
        for d in rows
        if d.first_response_at is not None
    ]
    handling = [
        (d.closed_at - d.first_assigned_at).total_seconds()
        for d in rows
        if d.closed_at is not None and d.first_assigned_at is not None
    ]
    ratings = [d.rating for d in rows if d.rating is not None]
    return Figures(
        received=len(rows),
        unanswered=len(rows) - len(responses),
        first_response_seconds=_mean(responses),
        handling_seconds=_mean(handling),
        average_rating=_mean(ratings),
        rated=len(ratings),
    )


def figures_by(
    dialogs: Iterable[DialogFacts], key: Callable[[DialogFacts], int | None]
) -> dict[int, Figures]:
    """Figures per key (channel or agent id); dialogs whose key is None are left out."""
    groups: dict[int, list[DialogFacts]] = {}
    for dialog in dialogs:
        group = key(dialog)
        if group is not None:
            groups.setdefault(group, []).append(dialog)
    return {group: figures(rows) for group, rows in groups.items()}


async def dialog_rows(
    ctx: ServiceContext, since: datetime | None, until: datetime | None
) -> list[DialogFacts]:
    """Dialogs created in [since, until), spam left out."""
    query = select(
        DialogRow.channel_id, DialogRow.assignee_id, DialogRow.created_at,
        DialogRow.first_assigned_at, DialogRow.first_response_at, DialogRow.closed_at,
        DialogRow.rating,
    ).where(DialogRow.spam.is_(False))  # fmt: skip
    if since is not None:
        query = query.where(DialogRow.created_at >= since)
    if until is not None:
        query = query.where(DialogRow.created_at < until)
    async with ctx.sessions() as session:
        return [DialogFacts(*row) for row in await session.execute(query)]


async def channel_names(ctx: ServiceContext) -> dict[int, str]:
    async with ctx.sessions() as session:
        return dict(
            (i, n) for i, n in await session.execute(select(ChannelRow.id, ChannelRow.name))
        )


async def user_names(ctx: ServiceContext, user_ids: Iterable[int]) -> dict[int, str]:
    async with ctx.sessions() as session:
        rows = await session.execute(select(User.id, User.name).where(User.id.in_(list(user_ids))))
        return dict((i, n) for i, n in rows)


def _mean(values: list[float] | list[int]) -> float | None:
    return round(sum(values) / len(values), 3) if values else None
