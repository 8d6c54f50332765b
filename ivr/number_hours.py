"""Business hours of an inbound number: stored per number, validated (ivr.business_hours),
and decided when a call arrives with the clock the call flow passes in."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import structlog
from pydantic import TypeAdapter
from sqlalchemy import JSON, ForeignKey, String
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from core.context import ServiceContext
from core.db import Base, UtcDateTime, utcnow
from core.errors import NotFound
from destinations.checks import check_destination
from destinations.destination import Destination
from ivr.business_hours import build_schedule, is_open
from ivr.numbers import NumberRow
from ivr.prompt_refs import PromptRef, prepare_prompt, prompt_path

log = structlog.get_logger(__name__)
_destination: TypeAdapter[Destination] = TypeAdapter(Destination)


class NumberHoursRow(Base):
    __tablename__ = "number_hours"

    number_id: Mapped[int] = mapped_column(
        ForeignKey("numbers.id", ondelete="CASCADE"), primary_key=True
    )
    time_zone: Mapped[str] = mapped_column(String(64))
    # {"mon": [{"from": "09:00", "to": "17:00"}], ...}
    weekly: Mapped[dict[str, Any]] = mapped_column(JSON)
    # [{"date": "2026-12-25", "name": "Christmas"}]
    holidays: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    off_hours_prompt_text: Mapped[str | None] = mapped_column(String(2000), default=None)
    off_hours_prompt_id: Mapped[int | None] = mapped_column(
        ForeignKey("prompts.id"), default=None, index=True
    )
    off_hours_destination: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


@dataclass(frozen=True)
class Holiday:
    date: date
    name: str = ""


@dataclass(frozen=True)
class HoursSpec:
    time_zone: str
    weekly: dict[str, list[tuple[str, str]]]
    holidays: list[Holiday]
    off_hours_prompt: PromptRef | None
    off_hours_destination: Destination


@dataclass(frozen=True)
class OffHours:
    """Closed: what the caller hears, then where the call goes."""

    prompt: Path | None
    destination: Destination


async def set_hours(ctx: ServiceContext, number_id: int, spec: HoursSpec) -> HoursSpec:
    """Create or replace the number's hours (PUT semantics)."""
    build_schedule(spec.time_zone, spec.weekly, [h.date for h in spec.holidays])
    await prepare_prompt(ctx, spec.off_hours_prompt, "off_hours_prompt")
    async with ctx.sessions.begin() as session:
        number = await _number(session, number_id)
        await check_destination(session, spec.off_hours_destination, "off_hours_destination")
        row = await session.get(NumberHoursRow, number_id)
        if row is None:
            row = NumberHoursRow(number_id=number_id)
            session.add(row)
        for column, value in _columns(spec).items():
            setattr(row, column, value)
        row.updated_at = utcnow()
        await session.flush()
        event = await ctx.events.stage(
            session, "business_hours_set", {"number_id": number_id, "number": number.number,
                                            **_columns(spec)}
        )  # fmt: skip
    await ctx.events.publish(event)
    log.info("business_hours_set", number_id=number_id, time_zone=spec.time_zone)
    return spec


async def get_hours(ctx: ServiceContext, number_id: int) -> HoursSpec:
    async with ctx.sessions() as session:
        await _number(session, number_id)
        row = await session.get(NumberHoursRow, number_id)
    if row is None:
        raise NotFound(f"number {number_id} has no business hours (always open)")
    return _spec(row)


async def remove_hours(ctx: ServiceContext, number_id: int) -> None:
    async with ctx.sessions.begin() as session:
        number = await _number(session, number_id)
        row = await session.get(NumberHoursRow, number_id)
        if row is None:
            raise NotFound(f"number {number_id} has no business hours")
        await session.delete(row)
        event = await ctx.events.stage(
            session, "business_hours_removed", {"number_id": number_id, "number": number.number}
        )
    await ctx.events.publish(event)


async def off_hours_route(ctx: ServiceContext, number_id: int, now: datetime) -> OffHours | None:
    """None while the number is open (or has no hours); else the off-hours route."""
    async with ctx.sessions() as session:
        row = await session.get(NumberHoursRow, number_id)
    if row is None:
        return None
    spec = _spec(row)
    schedule = build_schedule(spec.time_zone, spec.weekly, [h.date for h in spec.holidays])
    open_now = is_open(schedule, now)
    ctx.metrics.business_hours_checks.labels(state="open" if open_now else "closed").inc()
    if open_now:
        return None
    log.info("number_closed", number_id=number_id, at=now.isoformat())
    prompt = await prompt_path(ctx, spec.off_hours_prompt) if spec.off_hours_prompt else None
    return OffHours(prompt=prompt, destination=spec.off_hours_destination)


async def _number(session: AsyncSession, number_id: int) -> NumberRow:
    number = await session.get(NumberRow, number_id)
    if number is None:
        raise NotFound(f"number {number_id} does not exist")
    return number


def _columns(spec: HoursSpec) -> dict[str, Any]:
    prompt = spec.off_hours_prompt or PromptRef()
    return {
        "time_zone": spec.time_zone,
        "weekly": {
            day: [{"from": start, "to": end} for start, end in spans]
            for day, spans in spec.weekly.items()
        },
        "holidays": [{"date": h.date.isoformat(), "name": h.name} for h in spec.holidays],
        "off_hours_prompt_text": prompt.text,
        "off_hours_prompt_id": prompt.prompt_id,
        "off_hours_destination": spec.off_hours_destination.model_dump(),
    }


def _spec(row: NumberHoursRow) -> HoursSpec:
    return HoursSpec(
        time_zone=row.time_zone,
        weekly={
            day: [(span["from"], span["to"]) for span in spans] for day, spans in row.weekly.items()
        },
        holidays=[Holiday(date.fromisoformat(h["date"]), h.get("name", "")) for h in row.holidays],
        off_hours_prompt=PromptRef.of(row.off_hours_prompt_text, row.off_hours_prompt_id),
        off_hours_destination=_destination.validate_python(row.off_hours_destination),
    )
