"""Voicemail boxes and their messages: a box belongs to an owner (a user or a queue), has its
own greeting and maximum length; messages are WAV files under <data>/voicemail/<box id>/,
listed, downloaded, marked heard and deleted through the API."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import (
    Float,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
    column,
    func,
    select,
    table,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from core.context import ServiceContext
from core.db import Base, UtcDateTime, utcnow
from core.errors import Conflict, InvalidInput, NotFound
from destinations.references import is_voicemail_box, references_to
from ivr.prompt_refs import PromptRef, prepare_prompt, prompt_path
from ivr.prompts import system_prompt

log = structlog.get_logger(__name__)

DEFAULT_MAX_SECONDS = 120.0


class VoicemailBoxRow(Base):
    __tablename__ = "voicemail_boxes"
    __table_args__ = (UniqueConstraint("owner_type", "owner_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_type: Mapped[str] = mapped_column(String(16))  # user | queue
    owner_id: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(200), default="")
    # None and None: the standard greeting.
    greeting_text: Mapped[str | None] = mapped_column(String(2000), default=None)
    greeting_prompt_id: Mapped[int | None] = mapped_column(
        ForeignKey("prompts.id"), default=None, index=True
    )
    max_seconds: Mapped[float] = mapped_column(Float, default=DEFAULT_MAX_SECONDS)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class VoicemailMessageRow(Base):
    __tablename__ = "voicemail_messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    box_id: Mapped[int] = mapped_column(
        ForeignKey("voicemail_boxes.id", ondelete="CASCADE"), index=True
    )
    caller: Mapped[str] = mapped_column(String(128))
    # The call detail record of the call that left it.
    call_id: Mapped[int | None] = mapped_column(Integer, default=None)
    file: Mapped[str] = mapped_column(String(100))
    seconds: Mapped[float] = mapped_column(Float)
    heard_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)


@dataclass(frozen=True)
class BoxSpec:
    owner_type: str
    owner_id: int
    name: str
    greeting: PromptRef | None
    max_seconds: float


@dataclass(frozen=True)
class BoxMedia:
    """What a call needs to take a message: the greeting WAV and the length limit."""

    id: int
    greeting: Path
    max_seconds: float
    folder: Path


class UnknownOwner(InvalidInput):
    code = "unknown_owner"


class BoxExists(Conflict):
    code = "voicemail_box_exists"


# The owners' tables as far as the check needs them (acd/ sits beside ivr/, not below it).
_users = table("users", column("id", Integer))
_queues = table("queues", column("id", Integer))


class BoxInUse(Conflict):
    code = "voicemail_box_in_use"


def voicemail_dir(ctx: ServiceContext, box_id: int) -> Path:
    return ctx.settings.data_dir / "voicemail" / str(box_id)


async def create_box(ctx: ServiceContext, spec: BoxSpec) -> VoicemailBoxRow:
    await prepare_prompt(ctx, spec.greeting, "greeting")
    try:
        async with ctx.sessions.begin() as session:
            owners = _users if spec.owner_type == "user" else _queues
            if not await session.scalar(select(owners.c.id).where(owners.c.id == spec.owner_id)):
                raise UnknownOwner(f"{spec.owner_type} {spec.owner_id} does not exist",
                                   field="owner.id")  # fmt: skip
            await _ensure_no_box(session, spec)
            row = VoicemailBoxRow(**_columns(spec), owner_type=spec.owner_type,
                                  owner_id=spec.owner_id, created_at=utcnow(),
                                  updated_at=utcnow())  # fmt: skip
            session.add(row)
            await session.flush()
            event = await ctx.events.stage(session, "voicemail_box_created", box_data(row))
    except IntegrityError:
        raise BoxExists(f"{spec.owner_type} {spec.owner_id} has a voicemail box already",
                        field="owner") from None  # fmt: skip
    await ctx.events.publish(event)
    log.info("voicemail_box_created", box_id=row.id, owner=f"{spec.owner_type}:{spec.owner_id}")
    return row


async def update_box(ctx: ServiceContext, box_id: int, changes: dict[str, Any]) -> VoicemailBoxRow:
    """`changes`: name, greeting (PromptRef or None for the standard one), max_seconds."""
    if "greeting" in changes:
        await prepare_prompt(ctx, changes["greeting"], "greeting")
    async with ctx.sessions.begin() as session:
        row = await _load_box(session, box_id)
        if "name" in changes:
            row.name = changes["name"]
        if "max_seconds" in changes:
            row.max_seconds = changes["max_seconds"]
        if "greeting" in changes:
            greeting = changes["greeting"] or PromptRef()
            row.greeting_text, row.greeting_prompt_id = greeting.text, greeting.prompt_id
        row.updated_at = utcnow()
        await session.flush()
        event = await ctx.events.stage(session, "voicemail_box_updated", box_data(row))
    await ctx.events.publish(event)
    return row


async def delete_box(ctx: ServiceContext, box_id: int) -> None:
    """Refused (409) while a number or menu sends callers there; deletes its messages."""
    async with ctx.sessions.begin() as session:
        row = await _load_box(session, box_id)
        found = await references_to(session, is_voicemail_box(box_id))
        if found:
            raise BoxInUse(
                f"voicemail box {box_id} is a destination of {found.describe()}",
                details=found.details(),
            )
        files = list(
            await session.scalars(
                select(VoicemailMessageRow.file).where(VoicemailMessageRow.box_id == box_id)
            )
        )
        data = box_data(row)
        await session.delete(row)
        event = await ctx.events.stage(session, "voicemail_box_deleted", data)
    folder = voicemail_dir(ctx, box_id)
    for name in files:
        await asyncio.to_thread((folder / name).unlink, missing_ok=True)
    await ctx.events.publish(event)


async def get_box(ctx: ServiceContext, box_id: int) -> VoicemailBoxRow:
    async with ctx.sessions() as session:
        return await _load_box(session, box_id)


async def list_boxes(ctx: ServiceContext, owner_user_id: int | None = None) -> list[BoxCounts]:
    query = select(VoicemailBoxRow).order_by(VoicemailBoxRow.id)
    if owner_user_id is not None:
        query = query.where(
            VoicemailBoxRow.owner_type == "user", VoicemailBoxRow.owner_id == owner_user_id
        )
    async with ctx.sessions() as session:
        boxes = list(await session.scalars(query))
        counts = await _message_counts(session)
    return [BoxCounts(box, *counts.get(box.id, (0, 0))) for box in boxes]


@dataclass(frozen=True)
class BoxCounts:
    box: VoicemailBoxRow
    messages: int
    unheard: int


async def box_counts(ctx: ServiceContext, box: VoicemailBoxRow) -> BoxCounts:
    async with ctx.sessions() as session:
        counts = await _message_counts(session, box.id)
    return BoxCounts(box, *counts.get(box.id, (0, 0)))


async def list_messages(
    ctx: ServiceContext, box_id: int, heard: bool | None = None
) -> list[VoicemailMessageRow]:
    query = select(VoicemailMessageRow).where(VoicemailMessageRow.box_id == box_id)
    if heard is not None:
        query = query.where(
            VoicemailMessageRow.heard_at.is_not(None)
            if heard
            else VoicemailMessageRow.heard_at.is_(None)
        )
    async with ctx.sessions() as session:
        await _load_box(session, box_id)
        return list(await session.scalars(query.order_by(VoicemailMessageRow.id.desc())))


async def get_message(ctx: ServiceContext, message_id: int) -> VoicemailMessageRow:
    async with ctx.sessions() as session:
        return await _load_message(session, message_id)


def message_file(ctx: ServiceContext, message: VoicemailMessageRow) -> Path:
    return voicemail_dir(ctx, message.box_id) / message.file


async def mark_heard(ctx: ServiceContext, message_id: int, heard: bool) -> VoicemailMessageRow:
    async with ctx.sessions.begin() as session:
        row = await _load_message(session, message_id)
        if (row.heard_at is not None) != heard:
            row.heard_at = utcnow() if heard else None
            await session.flush()
            kind = "voicemail_message_heard" if heard else "voicemail_message_unheard"
            event = await ctx.events.stage(session, kind, await _event_data(session, row))
        else:
            event = None
    if event is not None:
        await ctx.events.publish(event)
    return row


async def delete_message(ctx: ServiceContext, message_id: int) -> None:
    async with ctx.sessions.begin() as session:
        row = await _load_message(session, message_id)
        path = message_file(ctx, row)
        data = await _event_data(session, row)
        await session.delete(row)
        event = await ctx.events.stage(session, "voicemail_message_deleted", data)
    await asyncio.to_thread(path.unlink, missing_ok=True)
    await ctx.events.publish(event)


async def count_unheard(ctx: ServiceContext) -> int:
    async with ctx.sessions() as session:
        count = await session.scalar(
            select(func.count()).where(VoicemailMessageRow.heard_at.is_(None))
        )
    return int(count or 0)


# -- for the call flow ---------------------------------------------------------------------


async def box_for_call(ctx: ServiceContext, box_id: int) -> BoxMedia | None:
    async with ctx.sessions() as session:
        row = await session.get(VoicemailBoxRow, box_id)
    if row is None:
        return None
    greeting = PromptRef.of(row.greeting_text, row.greeting_prompt_id)
    return BoxMedia(
        id=row.id,
        greeting=await (
            prompt_path(ctx, greeting) if greeting else system_prompt(ctx, "voicemail_greeting")
        ),
        max_seconds=row.max_seconds,
        folder=voicemail_dir(ctx, row.id),
    )


def new_message_path(box: BoxMedia) -> Path:
    box.folder.mkdir(parents=True, exist_ok=True)
    return box.folder / f"msg-{secrets.token_hex(8)}.wav"


async def save_message(
    ctx: ServiceContext, box_id: int, *, caller: str, call_id: int | None, path: Path,
    seconds: float,
) -> VoicemailMessageRow | None:  # fmt: skip
    """Store a recorded message; None if its box was deleted meanwhile (the file goes)."""
    async with ctx.sessions.begin() as session:
        if await session.get(VoicemailBoxRow, box_id) is None:
            box_gone = True
        else:
            box_gone = False
            row = VoicemailMessageRow(box_id=box_id, caller=caller, call_id=call_id,
                                      file=path.name, seconds=round(seconds, 2),
                                      created_at=utcnow())  # fmt: skip
            session.add(row)
            await session.flush()
            event = await ctx.events.stage(
                session, "voicemail_message_left", await _event_data(session, row)
            )
    if box_gone:
        await asyncio.to_thread(path.unlink, missing_ok=True)
        return None
    await ctx.events.publish(event)
    ctx.metrics.voicemail_messages.labels(outcome="saved").inc()
    ctx.metrics.voicemail_message_seconds.observe(seconds)
    log.info("voicemail_message_left", box_id=box_id, message_id=row.id, seconds=seconds)
    return row


def box_data(row: VoicemailBoxRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "owner": {"type": row.owner_type, "id": row.owner_id},
        "name": row.name,
        "max_seconds": row.max_seconds,
    }


async def _event_data(session: AsyncSession, row: VoicemailMessageRow) -> dict[str, Any]:
    """The message and whose it is (`owner_user_id`: the box's user, so that the event stream
    gives a person their own voicemail events; null for another owner)."""
    box = await session.get(VoicemailBoxRow, row.box_id)
    owner = box.owner_id if box is not None and box.owner_type == "user" else None
    return message_data(row) | {"owner_user_id": owner}


def message_data(row: VoicemailMessageRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "box_id": row.box_id,
        "caller": row.caller,
        "call_id": row.call_id,
        "seconds": row.seconds,
        "heard": row.heard_at is not None,
    }


async def _ensure_no_box(session: AsyncSession, spec: BoxSpec) -> None:
    existing = await session.scalar(
        select(VoicemailBoxRow.id).where(
            VoicemailBoxRow.owner_type == spec.owner_type,
            VoicemailBoxRow.owner_id == spec.owner_id,
        )
    )
    if existing is not None:
        raise BoxExists(
            f"{spec.owner_type} {spec.owner_id} has voicemail box {existing} already",
            field="owner",
            details={"box_id": existing},
        )


async def _message_counts(
    session: AsyncSession, box_id: int | None = None
) -> dict[int, tuple[int, int]]:
    query = select(
        VoicemailMessageRow.box_id,
        func.count(),
        func.count().filter(VoicemailMessageRow.heard_at.is_(None)),
    ).group_by(VoicemailMessageRow.box_id)
    if box_id is not None:
        query = query.where(VoicemailMessageRow.box_id == box_id)
    return {box: (total, unheard) for box, total, unheard in await session.execute(query)}


async def _load_box(session: AsyncSession, box_id: int) -> VoicemailBoxRow:
    row = await session.get(VoicemailBoxRow, box_id)
    if row is None:
        raise NotFound(f"voicemail box {box_id} does not exist")
    return row


async def _load_message(session: AsyncSession, message_id: int) -> VoicemailMessageRow:
    row = await session.get(VoicemailMessageRow, message_id)
    if row is None:
        raise NotFound(f"voicemail message {message_id} does not exist")
    return row


def _columns(spec: BoxSpec) -> dict[str, Any]:
    greeting = spec.greeting or PromptRef()
    return {
        "name": spec.name,
        "greeting_text": greeting.text,
        "greeting_prompt_id": greeting.prompt_id,
        "max_seconds": spec.max_seconds,
    }
