"""The shared extension namespace inside a transaction: who holds a number, take it, free it."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core.errors import Conflict
from extensions.models import Extension, Location, Subscriber
from extensions.numbering import OwnerType


class ExtensionTaken(Conflict):
    code = "extension_taken"


async def take_extension(
    session: AsyncSession, number: str, owner_type: OwnerType, owner_id: int
) -> None:
    """Take `number` for the owner, or raise ExtensionTaken naming who holds it.

    The primary key on `extensions.number` decides, not a look-up first: two requests racing
    for one number (PostgreSQL runs them side by side) cannot both win, and the loser gets
    the same 409 as a request that came later. The insert runs in a savepoint, so the
    failure leaves the caller's transaction usable for nothing but raising."""
    try:
        async with session.begin_nested():
            session.add(Extension(number=number, owner_type=owner_type.value, owner_id=owner_id))
            await session.flush()
    except IntegrityError:
        holder = await session.scalar(
            select(Extension)
            .where(Extension.number == number)
            .execution_options(populate_existing=True)
        )
        if holder is None:  # the owner had another number: (owner_type, owner_id) is unique
            raise ExtensionTaken(f"the {owner_type.value} has an extension already",
                                 field="extension") from None  # fmt: skip
        raise ExtensionTaken(
            f"extension {number} is taken by a {holder.owner_type}",
            field="extension",
            details={"holder": {"type": holder.owner_type, "id": holder.owner_id}},
        ) from None


async def user_extension(session: AsyncSession, user_id: int) -> str | None:
    number: str | None = await session.scalar(
        select(Extension.number).where(
            Extension.owner_type == OwnerType.USER.value, Extension.owner_id == user_id
        )
    )
    return number


async def free_extension(session: AsyncSession, number: str) -> None:
    """Release a number and any SIP account on it: the phone's credentials stop working."""
    await retire_credentials(session, number)
    await session.execute(delete(Extension).where(Extension.number == number))


async def retire_credentials(session: AsyncSession, number: str) -> None:
    """Delete the SIP account on a number and the registrations made with it.

    Kamailio keeps registrations in the `location` table so that they outlive a restart; the
    rows go in this transaction, so a restart can never bring back a phone whose credentials
    are gone, even if telling the running edge (ul.rm, afterwards) fails.
    """
    await session.execute(delete(Subscriber).where(Subscriber.username == number))
    await session.execute(delete(Location).where(Location.username == number))
