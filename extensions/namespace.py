"""The shared extension namespace inside a transaction: who holds a number, take it, free it."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.errors import Conflict
from extensions.models import Extension, Subscriber
from extensions.numbering import OwnerType


class ExtensionTaken(Conflict):
    code = "extension_taken"


async def ensure_free(session: AsyncSession, number: str) -> None:
    holder = await session.get(Extension, number)
    if holder is not None:
        raise ExtensionTaken(
            f"extension {number} is taken by a {holder.owner_type}",
            field="extension",
            details={"holder": {"type": holder.owner_type, "id": holder.owner_id}},
        )


async def user_extension(session: AsyncSession, user_id: int) -> str | None:
    number: str | None = await session.scalar(
        select(Extension.number).where(
            Extension.owner_type == OwnerType.USER.value, Extension.owner_id == user_id
        )
    )
    return number


async def free_extension(session: AsyncSession, number: str) -> None:
    """Release a number and any SIP account on it: the phone's credentials stop working."""
    await session.execute(delete(Subscriber).where(Subscriber.username == number))
    await session.execute(delete(Extension).where(Extension.number == number))
