"""Whether a destination can be used now: what it names exists.

One place for every resource that stores destinations (numbers, business hours, menus), so a
new destination type is one more branch here and one in the call flows' dispatch.
"""

from __future__ import annotations

from sqlalchemy import Integer, column, select, table
from sqlalchemy.ext.asyncio import AsyncSession

from core.errors import InvalidInput
from destinations.destination import Destination
from extensions.models import Extension

# The tables as far as this check needs them (their modules sit above this one).
_menus = table("menus", column("id", Integer))
_boxes = table("voicemail_boxes", column("id", Integer))
_queues = table("queues", column("id", Integer))


class UnknownExtension(InvalidInput):
    code = "unknown_extension"


class UnknownQueue(InvalidInput):
    code = "unknown_queue"


class UnknownMenu(InvalidInput):
    code = "unknown_menu"


class UnknownVoicemailBox(InvalidInput):
    code = "unknown_voicemail_box"


async def check_destination(session: AsyncSession, destination: Destination, field: str) -> None:
    """422 naming `field` unless `destination` can take calls now."""
    if destination.type == "extension":
        if await session.get(Extension, destination.extension) is None:
            raise UnknownExtension(
                f"extension {destination.extension} does not exist", field=f"{field}.extension"
            )
    elif destination.type == "queue":
        if not await session.scalar(select(_queues.c.id).where(_queues.c.id == destination.id)):
            raise UnknownQueue(f"queue {destination.id} does not exist", field=f"{field}.id")
    elif destination.type == "menu":
        if not await session.scalar(select(_menus.c.id).where(_menus.c.id == destination.id)):
            raise UnknownMenu(f"menu {destination.id} does not exist", field=f"{field}.id")
    elif destination.type == "voicemail" and not await session.scalar(
        select(_boxes.c.id).where(_boxes.c.id == destination.box)
    ):
        raise UnknownVoicemailBox(
            f"voicemail box {destination.box} does not exist", field=f"{field}.box"
        )
