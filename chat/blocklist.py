"""The blocklist: numbers, addresses and whole domains (`@example.com`) whose messages and
calls are refused or marked spam. Entries are normalised once, so a lookup is one IN query."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from chat.models import BlocklistRow
from core.context import ServiceContext
from core.db import utcnow
from core.errors import Conflict, InvalidInput, NotFound

log = structlog.get_logger(__name__)

_NUMBER = re.compile(r"^\+?[0-9]{3,20}$")
_NUMBER_PUNCTUATION = re.compile(r"[\s\-().]")
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_LOCAL_PART = re.compile(r"^[a-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}$")


class Action(StrEnum):
    REFUSE = "refuse"  # the message or call is turned away
    SPAM = "spam"  # a message is kept in a closed dialog marked spam; calls go through


class InvalidEntry(InvalidInput):
    code = "invalid_blocklist_entry"


class EntryExists(Conflict):
    code = "blocklist_entry_exists"


@dataclass(frozen=True)
class BlocklistEntry:
    id: int
    entry: str
    action: Action
    note: str | None
    created_at: datetime


def normalised_entry(raw: str) -> str:
    """`+49 30 1234-5` -> `+493012345`, `Ann@Example.COM` -> `ann@example.com`,
    `@Example.com` -> `@example.com`; anything else is InvalidEntry."""
    value = raw.strip().lower()
    if value.startswith("@"):
        if not _DOMAIN.match(value[1:]):
            raise InvalidEntry(f"{raw!r} is not a domain like @example.com", field="entry")
        return value
    if "@" in value:
        local, _, domain = value.rpartition("@")
        if not (_LOCAL_PART.match(local) and _DOMAIN.match(domain)):
            raise InvalidEntry(f"{raw!r} is not an address like name@example.com", field="entry")
        return value
    number = _NUMBER_PUNCTUATION.sub("", value)
    if not _NUMBER.match(number):
        raise InvalidEntry(
            f"{raw!r} is not a number (3-20 digits, optional +), address or @domain",
            field="entry",
        )
    return number


def entries_matching(identity: str) -> list[str]:
    """The entries that would block `identity` (a customer id, address or calling number)."""
    value = identity.strip().lower()
    if "@" in value:
        return [value, "@" + value.rpartition("@")[2]]
    number = _NUMBER_PUNCTUATION.sub("", value)
    if not _NUMBER.match(number):
        return []
    digits = number.lstrip("+")
    return [digits, "+" + digits]


def strongest(actions: list[Action]) -> Action | None:
    if Action.REFUSE in actions:
        return Action.REFUSE
    return Action.SPAM if actions else None


async def action_for(session: AsyncSession, identity: str) -> Action | None:
    candidates = entries_matching(identity)
    if not candidates:
        return None
    found = await session.scalars(
        select(BlocklistRow.action).where(BlocklistRow.entry.in_(candidates))
    )
    return strongest([Action(a) for a in found])


async def add_entry(
    ctx: ServiceContext, raw: str, action: Action, note: str | None
) -> BlocklistEntry:
    entry = normalised_entry(raw)
    try:
        async with ctx.sessions.begin() as session:
            row = BlocklistRow(entry=entry, action=action.value, note=note, created_at=utcnow())
            session.add(row)
            await session.flush()
            added = _entry(row)
            event = await ctx.events.stage(session, "blocklist_added", entry_data(added))
    except IntegrityError:
        raise EntryExists(f"{entry} is on the blocklist already", field="entry") from None
    await ctx.events.publish(event)
    log.info("blocklist_added", entry=entry, action=action.value)
    return added


async def list_entries(ctx: ServiceContext) -> list[BlocklistEntry]:
    async with ctx.sessions() as session:
        rows = await session.scalars(select(BlocklistRow).order_by(BlocklistRow.id))
        return [_entry(r) for r in rows]


async def remove_entry(ctx: ServiceContext, entry_id: int) -> None:
    async with ctx.sessions.begin() as session:
        row = await session.get(BlocklistRow, entry_id)
        if row is None:
            raise NotFound(f"blocklist entry {entry_id} does not exist")
        removed = _entry(row)
        await session.delete(row)
        event = await ctx.events.stage(session, "blocklist_removed", entry_data(removed))
    await ctx.events.publish(event)


async def all_actions(ctx: ServiceContext) -> dict[str, Action]:
    """The whole blocklist, entry -> action (small: read once, matched in memory by calls)."""
    async with ctx.sessions() as session:
        rows = await session.execute(select(BlocklistRow.entry, BlocklistRow.action))
    return {entry: Action(action) for entry, action in rows}


def calling_number_refused(actions: Mapping[str, Action], number: str) -> bool:
    """Whether a call from `number` is refused, by the strongest entry matching it."""
    return action_in(actions, number) is Action.REFUSE


def action_in(actions: Mapping[str, Action], identity: str) -> Action | None:
    """The strongest entry of the whole blocklist (`all_actions`) matching `identity`."""
    return strongest([actions[entry] for entry in entries_matching(identity) if entry in actions])


def entry_data(entry: BlocklistEntry) -> dict[str, Any]:
    return {"id": entry.id, "entry": entry.entry, "action": entry.action.value,
            "note": entry.note}  # fmt: skip


def _entry(row: BlocklistRow) -> BlocklistEntry:
    return BlocklistEntry(row.id, row.entry, Action(row.action), row.note, row.created_at)
