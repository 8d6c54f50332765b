"""Per-status forwarding of direct calls to a user's extension (pure decision + its SQL).

Rules map a presence status, or `busy` (on a call) or `no_answer` (rang out, busy or
unreachable), to a destination: another extension, an external number, a voicemail box, or
`hangup` (reject).
DND rejects direct calls unless a rule for dnd says where they go.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy.ext.asyncio import AsyncSession

from acd.models import ForwardingRow
from acd.presence import Presence, Status
from core.context import ServiceContext
from core.db import utcnow
from core.errors import InvalidInput
from destinations.checks import check_destination
from destinations.destination import Destination
from extensions.models import Extension
from extensions.namespace import user_extension
from extensions.users import load_user

BUSY = "busy"
NO_ANSWER = "no_answer"
RULE_KEYS = frozenset({*(s.value for s in Status), BUSY, NO_ANSWER})
FORWARD_TYPES = frozenset({"extension", "number", "voicemail", "hangup"})
_destination: TypeAdapter[Destination] = TypeAdapter(Destination)

Rules = dict[str, Destination]


class Action(Enum):
    RING = "ring"
    FORWARD = "forward"
    REJECT = "reject"


@dataclass(frozen=True)
class Decision:
    action: Action
    destination: Destination | None = None


def decide(presence: Presence, rules: Rules) -> Decision:
    """What a direct call to this user does before any phone rings."""
    rule = rules.get(presence.status.value)
    if rule is None and presence.busy:
        rule = rules.get(BUSY)
    if rule is not None:
        return Decision(Action.REJECT) if rule.type == "hangup" else Decision(Action.FORWARD, rule)
    if presence.status is Status.DND:
        return Decision(Action.REJECT)
    return Decision(Action.RING)


def after_no_answer(rules: Rules) -> Decision | None:
    rule = rules.get(NO_ANSWER)
    if rule is None:
        return None
    return Decision(Action.REJECT) if rule.type == "hangup" else Decision(Action.FORWARD, rule)


class InvalidForwarding(InvalidInput):
    code = "invalid_forwarding"


async def get_rules(ctx: ServiceContext, user_id: int) -> tuple[Rules, datetime | None]:
    async with ctx.sessions() as session:
        await load_user(session, user_id)
        row = await session.get(ForwardingRow, user_id)
    if row is None:
        return {}, None
    return _parse(row.rules), row.updated_at


async def rules_for_call(ctx: ServiceContext, user_id: int) -> Rules:
    async with ctx.sessions() as session:
        row = await session.get(ForwardingRow, user_id)
    return _parse(row.rules) if row is not None else {}


async def set_rules(ctx: ServiceContext, user_id: int, rules: Rules) -> datetime:
    async with ctx.sessions.begin() as session:
        await load_user(session, user_id)
        own = await user_extension(session, user_id)
        for key, destination in rules.items():
            await _check(session, key, destination, own)
        row = await session.get(ForwardingRow, user_id)
        data = {key: destination.model_dump() for key, destination in sorted(rules.items())}
        if row is None:
            row = ForwardingRow(user_id=user_id, rules=data)
            session.add(row)
        row.rules = data
        row.updated_at = utcnow()
        event = await ctx.events.stage(
            session, "forwarding_changed", {"user_id": user_id, "rules": data}
        )
    await ctx.events.publish(event)
    return row.updated_at


async def _check(
    session: AsyncSession, key: str, destination: Destination, own: str | None
) -> None:
    field = f"rules.{key}"
    if key not in RULE_KEYS:
        allowed = ", ".join(sorted(RULE_KEYS))
        raise InvalidForwarding(f"{key!r} is not a status, busy or no_answer ({allowed})",
                                field=field)  # fmt: skip
    if destination.type not in FORWARD_TYPES:
        raise InvalidForwarding(f"calls cannot be forwarded to a {destination.type} yet",
                                field=f"{field}.type")  # fmt: skip
    if destination.type == "voicemail":
        await check_destination(session, destination, field)
    if destination.type == "extension":
        if destination.extension == own:
            raise InvalidForwarding("a user cannot forward to their own extension",
                                    field=f"{field}.extension")  # fmt: skip
        if await session.get(Extension, destination.extension) is None:
            raise InvalidForwarding(f"extension {destination.extension} does not exist",
                                    field=f"{field}.extension")  # fmt: skip


def _parse(data: dict[str, Any]) -> Rules:
    return {key: _destination.validate_python(value) for key, value in data.items()}
