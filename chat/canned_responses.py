"""Canned responses: shared reply texts in categories, with placeholders filled per dialog."""

from __future__ import annotations

import string
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from chat.models import CannedResponseRow
from core.context import ServiceContext
from core.db import utcnow
from core.errors import InvalidInput, NotFound

PLACEHOLDERS = frozenset({"customer_name", "agent_name"})
# What a placeholder becomes when the dialog does not know the value.
_FALLBACK = {"customer_name": "there", "agent_name": "your agent"}


class InvalidPlaceholder(InvalidInput):
    code = "invalid_placeholder"


class UnknownCannedResponse(InvalidInput):
    code = "unknown_canned_response"


@dataclass(frozen=True)
class CannedResponse:
    id: int
    category: str
    title: str
    text: str
    created_at: datetime
    updated_at: datetime


def check_placeholders(text: str) -> None:
    """Only {customer_name} and {agent_name}; braces otherwise come doubled ({{ and }})."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(text) if name is not None]
    except ValueError as exc:
        raise InvalidPlaceholder(f"text: {exc}", field="text") from None
    unknown = sorted(set(names) - PLACEHOLDERS)
    if unknown:
        allowed = ", ".join("{" + p + "}" for p in sorted(PLACEHOLDERS))
        raise InvalidPlaceholder(f"unknown placeholder {{{unknown[0]}}}; use {allowed}",
                                 field="text")  # fmt: skip


def fill(text: str, *, customer_name: str | None, agent_name: str | None) -> str:
    values = {"customer_name": customer_name, "agent_name": agent_name}
    return text.format(**{k: v or _FALLBACK[k] for k, v in values.items()})


async def render_canned_response(
    session: AsyncSession, response_id: int, *, customer_name: str | None, agent_name: str | None
) -> str:
    row = await session.get(CannedResponseRow, response_id)
    if row is None:
        raise UnknownCannedResponse(f"canned response {response_id} does not exist",
                                    field="canned_response_id")  # fmt: skip
    return fill(row.text, customer_name=customer_name, agent_name=agent_name)


async def create(ctx: ServiceContext, category: str, title: str, text: str) -> CannedResponse:
    check_placeholders(text)
    async with ctx.sessions.begin() as session:
        row = CannedResponseRow(category=category, title=title, text=text, created_at=utcnow(),
                                updated_at=utcnow())  # fmt: skip
        session.add(row)
        await session.flush()
        made = _of(row)
        event = await ctx.events.stage(session, "canned_response_created", data(made))
    await ctx.events.publish(event)
    return made


async def update(ctx: ServiceContext, response_id: int, changes: dict[str, str]) -> CannedResponse:
    if "text" in changes:
        check_placeholders(changes["text"])
    async with ctx.sessions.begin() as session:
        row = await _load(session, response_id)
        for name, value in changes.items():
            setattr(row, name, value)
        row.updated_at = utcnow()
        changed = _of(row)
        event = await ctx.events.stage(session, "canned_response_updated", data(changed))
    await ctx.events.publish(event)
    return changed


async def remove(ctx: ServiceContext, response_id: int) -> None:
    async with ctx.sessions.begin() as session:
        row = await _load(session, response_id)
        removed = _of(row)
        await session.delete(row)
        event = await ctx.events.stage(session, "canned_response_deleted", data(removed))
    await ctx.events.publish(event)


async def list_all(ctx: ServiceContext, category: str | None) -> list[CannedResponse]:
    query = select(CannedResponseRow).order_by(CannedResponseRow.category, CannedResponseRow.id)
    if category is not None:
        query = query.where(CannedResponseRow.category == category)
    async with ctx.sessions() as session:
        return [_of(r) for r in await session.scalars(query)]


async def get(ctx: ServiceContext, response_id: int) -> CannedResponse:
    async with ctx.sessions() as session:
        return _of(await _load(session, response_id))


def data(response: CannedResponse) -> dict[str, Any]:
    return {"id": response.id, "category": response.category, "title": response.title,
            "text": response.text}  # fmt: skip


async def _load(session: AsyncSession, response_id: int) -> CannedResponseRow:
    row = await session.get(CannedResponseRow, response_id)
    if row is None:
        raise NotFound(f"canned response {response_id} does not exist")
    return row


def _of(row: CannedResponseRow) -> CannedResponse:
    return CannedResponse(row.id, row.category, row.title, row.text, row.created_at,
                          row.updated_at)  # fmt: skip
