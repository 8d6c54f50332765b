"""Chat channels: configuration in SQL with ordered members, validated as a whole before
anything is written. Deleting a channel deletes its dialogs; nothing else ever does."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from chat.assignment import ChannelRule, Countable, Distribution
from chat.models import ChannelMemberRow, ChannelRow, DialogRow
from chat.working_hours import WorkingHours
from core.context import ServiceContext
from core.db import utcnow
from core.errors import Conflict, NotFound
from core.events import Event, EventBus
from extensions.users import check_members

log = structlog.get_logger(__name__)


class ChannelNameTaken(Conflict):
    code = "channel_name_taken"


@dataclass(frozen=True)
class ChannelSpec:
    name: str
    type: str = "webhook"
    members: tuple[int, ...] = ()
    distribution: Distribution = Distribution.EVENLY
    check_availability: bool = True
    max_open_dialogs: int | None = None
    limit_excludes: frozenset[Countable] = frozenset()
    idle_seconds: int = 180
    reply_url: str | None = None
    working_hours: WorkingHours | None = None
    off_hours_reply: str | None = None

    def rule(self) -> ChannelRule:
        return ChannelRule(
            self.distribution, self.members, self.check_availability, self.max_open_dialogs,
            self.limit_excludes,
        )  # fmt: skip


@dataclass(frozen=True)
class Channel:
    id: int
    spec: ChannelSpec
    secret: str
    created_at: datetime
    updated_at: datetime


async def create_channel(ctx: ServiceContext, spec: ChannelSpec) -> Channel:
    try:
        async with ctx.sessions.begin() as session:
            await _validate(session, spec, channel_id=None)
            row = ChannelRow(**_columns(spec), secret=_new_secret(), created_at=utcnow(),
                             updated_at=utcnow())  # fmt: skip
            session.add(row)
            await session.flush()
            await _write_members(session, row.id, spec.members)
            channel = _channel(row, spec)
            event = await ctx.events.stage(session, "channel_created", channel_data(channel))
    except IntegrityError:
        raise ChannelNameTaken(f"a channel named {spec.name!r} exists", field="name") from None
    await ctx.events.publish(event)
    log.info("channel_created", channel_id=channel.id, name=spec.name)
    return channel


async def update_channel(ctx: ServiceContext, channel_id: int, changes: dict[str, Any]) -> Channel:
    """`changes` holds only the fields sent; the merged channel is validated as a whole."""
    try:
        async with ctx.sessions.begin() as session:
            row = await load_channel_row(session, channel_id)
            merged = replace(await _spec(session, row), **changes)
            await _validate(session, merged, channel_id=channel_id)
            for column, value in _columns(merged).items():
                setattr(row, column, value)
            row.updated_at = utcnow()
            if "members" in changes:
                await session.execute(
                    delete(ChannelMemberRow).where(ChannelMemberRow.channel_id == channel_id)
                )
                await _write_members(session, channel_id, merged.members)
            await session.flush()
            channel = _channel(row, merged)
            event = await ctx.events.stage(session, "channel_updated", channel_data(channel))
    except IntegrityError:
        raise ChannelNameTaken("another channel has this name", field="name") from None
    await ctx.events.publish(event)
    return channel


async def new_secret(ctx: ServiceContext, channel_id: int) -> Channel:
    """A new inbound/signing secret; the old one stops working at once."""
    async with ctx.sessions.begin() as session:
        row = await load_channel_row(session, channel_id)
        row.secret = _new_secret()
        row.updated_at = utcnow()
        channel = _channel(row, await _spec(session, row))
        event = await ctx.events.stage(session, "channel_secret_changed", {"id": channel_id})
    await ctx.events.publish(event)
    return channel


async def delete_channel(ctx: ServiceContext, channel_id: int) -> int:
    """Deletes the channel with its dialogs, messages and outbox; returns the dialogs deleted."""
    async with ctx.sessions.begin() as session:
        row = await load_channel_row(session, channel_id)
        dialogs = await session.scalar(
            select(func.count()).select_from(DialogRow).where(DialogRow.channel_id == channel_id)
        ) or 0  # fmt: skip
        data = {**channel_data(_channel(row, await _spec(session, row))), "dialogs": dialogs}
        await session.delete(row)
        event = await ctx.events.stage(session, "channel_deleted", data)
    await ctx.events.publish(event)
    log.info("channel_deleted", channel_id=channel_id, dialogs=dialogs)
    return dialogs


async def get_channel(ctx: ServiceContext, channel_id: int) -> Channel:
    async with ctx.sessions() as session:
        row = await load_channel_row(session, channel_id)
        return _channel(row, await _spec(session, row))


async def list_channels(ctx: ServiceContext) -> list[Channel]:
    async with ctx.sessions() as session:
        rows = list(await session.scalars(select(ChannelRow).order_by(ChannelRow.id)))
        return [_channel(r, await _spec(session, r)) for r in rows]


async def channel_specs(session: AsyncSession, channel_ids: set[int]) -> dict[int, ChannelSpec]:
    rows = await session.scalars(select(ChannelRow).where(ChannelRow.id.in_(channel_ids)))
    members: dict[int, list[int]] = {}
    for channel_id, user_id in await session.execute(
        select(ChannelMemberRow.channel_id, ChannelMemberRow.user_id)
        .where(ChannelMemberRow.channel_id.in_(channel_ids))
        .order_by(ChannelMemberRow.channel_id, ChannelMemberRow.position)
    ):  # fmt: skip
        members.setdefault(channel_id, []).append(user_id)
    return {r.id: _spec_of(r, tuple(members.get(r.id, ()))) for r in rows}


async def leave_every_channel(session: AsyncSession, bus: EventBus, user_id: int) -> list[Event]:
    """A dismissed user leaves every channel, inside the caller's transaction (dismissal is
    one); returns the staged events to publish after its commit."""
    channel_ids = list(await session.scalars(
        select(ChannelMemberRow.channel_id).where(ChannelMemberRow.user_id == user_id)
    ))  # fmt: skip
    await session.execute(delete(ChannelMemberRow).where(ChannelMemberRow.user_id == user_id))
    specs = await channel_specs(session, set(channel_ids))
    events = []
    for channel_id in channel_ids:
        row = await load_channel_row(session, channel_id)
        channel = _channel(row, specs[channel_id])
        events.append(await bus.stage(session, "channel_updated", channel_data(channel)))
    return events


async def load_channel_row(session: AsyncSession, channel_id: int) -> ChannelRow:
    row = await session.get(ChannelRow, channel_id)
    if row is None:
        raise NotFound(f"channel {channel_id} does not exist")
    return row


def channel_data(channel: Channel) -> dict[str, Any]:
    """The channel as events and the API show it (never the secret)."""
    spec = channel.spec
    return {
        "id": channel.id,
        "name": spec.name,
        "type": spec.type,
        "members": list(spec.members),
        "distribution": spec.distribution.value,
        "check_availability": spec.check_availability,
        "max_open_dialogs": spec.max_open_dialogs,
        "limit_excludes": sorted(e.value for e in spec.limit_excludes),
        "idle_seconds": spec.idle_seconds,
        "reply_url": spec.reply_url,
        "working_hours": spec.working_hours.model_dump() if spec.working_hours else None,
        "off_hours_reply": spec.off_hours_reply,
    }


def spec_from_data(data: Mapping[str, Any]) -> ChannelSpec:
    """The spec back from `channel_data` (a channel_created or channel_updated event)."""
    hours = data["working_hours"]
    return ChannelSpec(
        name=data["name"],
        type=data["type"],
        members=tuple(data["members"]),
        distribution=Distribution(data["distribution"]),
        check_availability=data["check_availability"],
        max_open_dialogs=data["max_open_dialogs"],
        limit_excludes=frozenset(Countable(e) for e in data["limit_excludes"]),
        idle_seconds=data["idle_seconds"],
        reply_url=data["reply_url"],
        working_hours=WorkingHours.model_validate(hours) if hours else None,
        off_hours_reply=data["off_hours_reply"],
    )


async def all_channel_specs(session: AsyncSession) -> dict[int, ChannelSpec]:
    return await channel_specs(session, set(await session.scalars(select(ChannelRow.id))))


async def _validate(session: AsyncSession, spec: ChannelSpec, *, channel_id: int | None) -> None:
    taken = await session.scalar(select(ChannelRow.id).where(
        ChannelRow.name == spec.name, ChannelRow.id != (channel_id or 0)
    ))  # fmt: skip
    if taken:
        raise ChannelNameTaken(f"a channel named {spec.name!r} exists", field="name")
    await check_members(session, spec.members)


async def _write_members(session: AsyncSession, channel_id: int, members: tuple[int, ...]) -> None:
    session.add_all(
        ChannelMemberRow(channel_id=channel_id, user_id=user_id, position=position)
        for position, user_id in enumerate(members)
    )


async def _spec(session: AsyncSession, row: ChannelRow) -> ChannelSpec:
    return (await channel_specs(session, {row.id}))[row.id]


def _spec_of(row: ChannelRow, members: tuple[int, ...]) -> ChannelSpec:
    excludes = {Countable.ANSWERED} if row.exclude_answered else set()
    if row.exclude_waiting:
        excludes.add(Countable.WAITING)
    return ChannelSpec(
        name=row.name,
        type=row.type,
        members=members,
        distribution=Distribution(row.distribution),
        check_availability=row.check_availability,
        max_open_dialogs=row.max_open_dialogs,
        limit_excludes=frozenset(excludes),
        idle_seconds=row.idle_seconds,
        reply_url=row.reply_url,
        working_hours=(
            WorkingHours.model_validate(row.working_hours) if row.working_hours else None
        ),
        off_hours_reply=row.off_hours_reply,
    )


def _columns(spec: ChannelSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "type": spec.type,
        "distribution": spec.distribution.value,
        "check_availability": spec.check_availability,
        "max_open_dialogs": spec.max_open_dialogs,
        "exclude_answered": Countable.ANSWERED in spec.limit_excludes,
        "exclude_waiting": Countable.WAITING in spec.limit_excludes,
        "idle_seconds": spec.idle_seconds,
        "reply_url": spec.reply_url,
        "working_hours": spec.working_hours.model_dump() if spec.working_hours else None,
        "off_hours_reply": spec.off_hours_reply,
    }


def _channel(row: ChannelRow, spec: ChannelSpec) -> Channel:
    return Channel(row.id, spec, row.secret, row.created_at, row.updated_at)


def _new_secret() -> str:
    return secrets.token_urlsafe(32)
