"""Who points at a destination: numbers (default, no-answer and off-hours routes), menus
(options and final destinations), queues (overflow) and users' forwarding rules. Deleting a
menu, a voicemail box or a queue that is referenced is refused with 409 naming these."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import JSON, Integer, String, column, select, table
from sqlalchemy.ext.asyncio import AsyncSession

# The tables as far as this module needs them: the modules that own them import this one.
_numbers = table(
    "numbers",
    column("id", Integer),
    column("number", String),
    column("default_destination", JSON),
    column("no_answer_destination", JSON),
)
_hours = table("number_hours", column("number_id", Integer), column("off_hours_destination", JSON))
_menus = table(
    "menus", column("id", Integer), column("options", JSON), column("final_destination", JSON)
)
_queues = table("queues", column("id", Integer), column("overflow", JSON))
_forwarding = table("forwarding", column("user_id", Integer), column("rules", JSON))

# A destination as stored (JSON) -> whether it is the thing being deleted.
Matcher = Callable[[dict[str, Any]], bool]


@dataclass
class References:
    numbers: list[str] = field(default_factory=list)
    # Numbers whose off-hours route goes there.
    business_hours: list[str] = field(default_factory=list)
    menus: list[int] = field(default_factory=list)
    # Queues overflowing there; users forwarding there.
    queues: list[int] = field(default_factory=list)
    forwarding: list[int] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(
            self.numbers or self.business_hours or self.menus or self.queues or self.forwarding
        )

    def describe(self) -> str:
        parts = []
        if self.numbers:
            parts.append("numbers " + ", ".join(self.numbers))
        if self.business_hours:
            parts.append("off-hours routes of " + ", ".join(self.business_hours))
        if self.menus:
            parts.append("menus " + ", ".join(str(m) for m in self.menus))
        if self.queues:
            parts.append("overflow of queues " + ", ".join(str(q) for q in self.queues))
        if self.forwarding:
            parts.append("forwarding of users " + ", ".join(str(u) for u in self.forwarding))
        return "; ".join(parts)

    def details(self) -> dict[str, Any]:
        return {
            "references": {
                "numbers": self.numbers,
                "business_hours": self.business_hours,
                "menus": self.menus,
                "queues": self.queues,
                "forwarding": self.forwarding,
            }
        }


async def references_to(
    session: AsyncSession,
    matches: Matcher,
    *,
    except_menu: int | None = None,
    except_queue: int | None = None,
) -> References:
    found = References()
    number_names: dict[int, str] = {}
    for number_id, number, default, no_answer in await session.execute(select(_numbers)):
        number_names[number_id] = number
        if any(d is not None and matches(d) for d in (default, no_answer)):
            found.numbers.append(number)
    for number_id, off_hours in await session.execute(select(_hours)):
        if matches(off_hours):
            found.business_hours.append(number_names.get(number_id, str(number_id)))
    for menu_id, options, final in await session.execute(select(_menus).order_by(_menus.c.id)):
        if menu_id == except_menu:
            continue
        if matches(final) or any(matches(option) for option in options.values()):
            found.menus.append(menu_id)
    for queue_id, overflow in await session.execute(select(_queues).order_by(_queues.c.id)):
        if queue_id != except_queue and matches(overflow):
            found.queues.append(queue_id)
    for user_id, rules in await session.execute(select(_forwarding)):
        if any(matches(rule) for rule in rules.values()):
            found.forwarding.append(user_id)
    return found


def is_menu(menu_id: int, extension: str | None) -> Matcher:
    def matches(destination: dict[str, Any]) -> bool:
        kind = destination.get("type")
        return (kind == "menu" and destination.get("id") == menu_id) or (
            extension is not None
            and kind == "extension"
            and destination.get("extension") == extension
        )

    return matches


def is_voicemail_box(box_id: int) -> Matcher:
    def matches(destination: dict[str, Any]) -> bool:
        return destination.get("type") == "voicemail" and destination.get("box") == box_id

    return matches
