"""Inbound numbers: what the provider sends to, the greeting callers hear, where calls go."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog
from pydantic import TypeAdapter
from sqlalchemy import JSON, ForeignKey, Integer, String, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from core.context import ServiceContext
from core.db import Base, UtcDateTime, utcnow
from core.errors import Conflict, InvalidInput, NotFound
from destinations.checks import check_destination
from destinations.destination import Destination
from ivr.prompt_library import get_prompt, prompt_file
from ivr.prompt_refs import UnknownPrompt
from ivr.prompts import spoken

log = structlog.get_logger(__name__)
_destination: TypeAdapter[Destination] = TypeAdapter(Destination)


class NumberRow(Base):
    __tablename__ = "numbers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Kamailio looks this up (sqlops) to let the provider's INVITE in without auth.
    number: Mapped[str] = mapped_column(String(21), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    # One of the two: a text spoken with espeak-ng, or a prompt of the library.
    greeting_text: Mapped[str | None] = mapped_column(String(2000), default=None)
    greeting_prompt_id: Mapped[int | None] = mapped_column(
        ForeignKey("prompts.id"), default=None, index=True
    )
    extension_dialing: Mapped[bool] = mapped_column(default=True)
    # Calls to this number are recorded once connected (flows.recording).
    record_calls: Mapped[bool] = mapped_column(default=False)
    default_destination: Mapped[dict[str, Any]] = mapped_column(JSON)
    no_answer_destination: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


@dataclass(frozen=True)
class NumberSpec:
    number: str
    name: str
    greeting_text: str | None
    greeting_prompt_id: int | None
    extension_dialing: bool
    default_destination: Destination
    no_answer_destination: Destination | None
    record_calls: bool = False


@dataclass(frozen=True)
class InboundNumber:
    """A number as a call flow needs it: its greeting is already a WAV on disk."""

    id: int
    number: str
    greeting_path: Path
    extension_dialing: bool
    default_destination: Destination
    # Where a rung extension that does not answer sends the caller.
    no_answer_destination: Destination
    record_calls: bool = False


class NumberTaken(Conflict):
    code = "number_taken"


async def create_number(ctx: ServiceContext, spec: NumberSpec) -> NumberRow:
    await _prepare_greeting(ctx, spec)
    try:
        async with ctx.sessions.begin() as session:
            await _check_destinations(session, spec)
            if await session.scalar(select(NumberRow.id).where(NumberRow.number == spec.number)):
                raise NumberTaken(f"number {spec.number} is configured already", field="number")
            row = NumberRow(**_columns(spec), created_at=utcnow(), updated_at=utcnow())
            session.add(row)
            await session.flush()
            event = await ctx.events.stage(session, "number_created", number_data(row))
    except IntegrityError:
        raise NumberTaken(f"number {spec.number} is configured already", field="number") from None
    await ctx.events.publish(event)
    log.info("number_created", number=spec.number, number_id=row.id)
    return row


async def update_number(ctx: ServiceContext, number_id: int, changes: dict[str, Any]) -> NumberRow:
    """`changes` holds only the fields sent, destinations already validated in shape."""
    async with ctx.sessions() as session:
        current = await _load(session, number_id)
        spec = _spec(current)
    merged = NumberSpec(**{**spec.__dict__, **changes})
    await _prepare_greeting(ctx, merged)
    try:
        async with ctx.sessions.begin() as session:
            row = await _load(session, number_id)
            # Only what changes is checked: a released extension in an untouched destination
            # must not block renaming the number.
            await _check_destinations(session, merged, only=set(changes))
            for column, value in _columns(merged).items():
                setattr(row, column, value)
            row.updated_at = utcnow()
            await session.flush()
            event = await ctx.events.stage(session, "number_updated", number_data(row))
    except IntegrityError:
        raise NumberTaken(f"number {merged.number} is configured already", field="number") from None
    await ctx.events.publish(event)
    return row


async def delete_number(ctx: ServiceContext, number_id: int) -> None:
    async with ctx.sessions.begin() as session:
        row = await _load(session, number_id)
        data = number_data(row)
        await session.delete(row)
        event = await ctx.events.stage(session, "number_deleted", data)
    await ctx.events.publish(event)


async def get_number(ctx: ServiceContext, number_id: int) -> NumberRow:
    async with ctx.sessions() as session:
        return await _load(session, number_id)


async def list_numbers(ctx: ServiceContext) -> list[NumberRow]:
    async with ctx.sessions() as session:
        return list(await session.scalars(select(NumberRow).order_by(NumberRow.id)))


async def number_for_call(ctx: ServiceContext, dialled: str) -> InboundNumber | None:
    async with ctx.sessions() as session:
        row = await session.scalar(select(NumberRow).where(NumberRow.number == dialled))
    if row is None:
        return None
    spec = _spec(row)
    return InboundNumber(
        id=row.id,
        number=row.number,
        greeting_path=await _greeting_path(ctx, row),
        extension_dialing=row.extension_dialing,
        default_destination=spec.default_destination,
        no_answer_destination=spec.no_answer_destination or spec.default_destination,
        record_calls=row.record_calls,
    )


def number_data(row: NumberRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "number": row.number,
        "name": row.name,
        "extension_dialing": row.extension_dialing,
        "record_calls": row.record_calls,
        "default_destination": row.default_destination,
        "no_answer_destination": row.no_answer_destination,
    }


async def _prepare_greeting(ctx: ServiceContext, spec: NumberSpec) -> None:
    """Speak a text greeting now, not while a caller waits; check a prompt greeting exists."""
    if spec.greeting_prompt_id is not None:
        try:
            await get_prompt(ctx, spec.greeting_prompt_id)
        except NotFound:
            raise UnknownPrompt(
                f"prompt {spec.greeting_prompt_id} does not exist", field="greeting.prompt_id"
            ) from None
    elif spec.greeting_text is not None:
        await spoken(ctx, spec.greeting_text)
    else:
        raise InvalidInput("a greeting needs a text or a prompt_id", field="greeting")


async def _greeting_path(ctx: ServiceContext, row: NumberRow) -> Path:
    if row.greeting_prompt_id is not None:
        return prompt_file(ctx, await get_prompt(ctx, row.greeting_prompt_id))
    assert row.greeting_text is not None
    return await spoken(ctx, row.greeting_text)


async def _check_destinations(
    session: AsyncSession, spec: NumberSpec, only: set[str] | None = None
) -> None:
    fields = {
        "default_destination": spec.default_destination,
        "no_answer_destination": spec.no_answer_destination,
    }
    for field, destination in fields.items():
        if destination is None or (only is not None and field not in only):
            continue
        await check_destination(session, destination, field)


async def _load(session: AsyncSession, number_id: int) -> NumberRow:
    row = await session.get(NumberRow, number_id)
    if row is None:
        raise NotFound(f"number {number_id} does not exist")
    return row


def _columns(spec: NumberSpec) -> dict[str, Any]:
    return {
        "number": spec.number,
        "name": spec.name,
        "greeting_text": spec.greeting_text,
        "greeting_prompt_id": spec.greeting_prompt_id,
        "extension_dialing": spec.extension_dialing,
        "record_calls": spec.record_calls,
        "default_destination": spec.default_destination.model_dump(),
        "no_answer_destination": (
            spec.no_answer_destination.model_dump() if spec.no_answer_destination else None
        ),
    }


def _spec(row: NumberRow) -> NumberSpec:
    return NumberSpec(
        number=row.number,
        name=row.name,
        greeting_text=row.greeting_text,
        greeting_prompt_id=row.greeting_prompt_id,
        extension_dialing=row.extension_dialing,
        record_calls=row.record_calls,
        default_destination=_destination.validate_python(row.default_destination),
        no_answer_destination=(
            _destination.validate_python(row.no_answer_destination)
            if row.no_answer_destination
            else None
        ),
    )
