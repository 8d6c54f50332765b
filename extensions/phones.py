"""Extensions and SIP credentials of users, kept in step with Kamailio's subscriber table."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import structlog
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core.context import ServiceContext
from core.errors import Conflict, InvalidInput, NotFound
from core.events import Event
from core.settings import SipSettings
from extensions.credentials import digest_ha1, generate_sip_password
from extensions.models import Extension, Subscriber, User
from extensions.namespace import (
    free_extension,
    retire_credentials,
    take_extension,
    user_extension,
)
from extensions.numbering import OwnerType, is_valid_extension
from extensions.users import drop_phone_registrations, load_user

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class SipAccount:
    username: str
    # The clear password exists only in this answer; only its ha1 digest is stored.
    password: str | None
    domain: str
    registrar: str


@dataclass(frozen=True)
class ExtensionRecord:
    extension: str
    holder_type: OwnerType
    holder_id: int
    holder_name: str | None


class UserInactive(Conflict):
    code = "user_inactive"


async def assign_extension(ctx: ServiceContext, user_id: int, number: str) -> SipAccount:
    """Give a user an extension with fresh SIP credentials; moving frees the old number."""
    if not is_valid_extension(number):
        raise InvalidInput("an extension is 1 to 4 digits (0-9)", field="extension")
    events: list[Event] = []
    try:
        async with ctx.sessions.begin() as session:
            user = await load_user(session, user_id)
            if not user.active:
                raise UserInactive(f"user {user_id} is dismissed", details={"user_id": user_id})
            current = await user_extension(session, user_id)
            if current == number:
                return _account(ctx.settings.sip, number, password=None)
            if current is not None:
                await free_extension(session, current)
                events.append(await _stage_released(ctx, session, current, user_id))
            await take_extension(session, number, OwnerType.USER, user_id)
            password = generate_sip_password()
            session.add(_subscriber(ctx.settings.sip, number, password))
            await session.flush()
            events.append(
                await ctx.events.stage(
                    session,
                    "extension_assigned",
                    {"extension": number, "holder": {"type": "user", "id": user_id}},
                )
            )
    except IntegrityError:
        # Lost a race against a concurrent change of this user's extension.
        raise Conflict("the user's extension changed concurrently; retry") from None
    if current is not None:
        await drop_phone_registrations(ctx, current)
    await ctx.events.publish(*events)
    log.info("extension_assigned", user_id=user_id, extension=number, previous=current)
    return _account(ctx.settings.sip, number, password)


async def release_extension(ctx: ServiceContext, user_id: int) -> str:
    async with ctx.sessions.begin() as session:
        await load_user(session, user_id)
        number = await user_extension(session, user_id)
        if number is None:
            raise NotFound(f"user {user_id} has no extension", details={"user_id": user_id})
        await free_extension(session, number)
        event = await _stage_released(ctx, session, number, user_id)
    await drop_phone_registrations(ctx, number)
    await ctx.events.publish(event)
    log.info("extension_released", user_id=user_id, extension=number)
    return number


async def reset_sip_password(ctx: ServiceContext, user_id: int) -> SipAccount:
    """A new password; the old one fails from the next REGISTER on, and the phone is logged out."""
    async with ctx.sessions.begin() as session:
        await load_user(session, user_id)
        number = await user_extension(session, user_id)
        if number is None:
            raise NotFound(f"user {user_id} has no extension", details={"user_id": user_id})
        password = generate_sip_password()
        await retire_credentials(session, number)
        session.add(_subscriber(ctx.settings.sip, number, password))
        event = await ctx.events.stage(
            session, "sip_password_reset", {"extension": number, "user_id": user_id}
        )
    await drop_phone_registrations(ctx, number)
    await ctx.events.publish(event)
    log.info("sip_password_reset", user_id=user_id, extension=number)
    return _account(ctx.settings.sip, number, password)


async def get_sip_account(ctx: ServiceContext, user_id: int) -> SipAccount:
    async with ctx.sessions() as session:
        await load_user(session, user_id)
        number = await user_extension(session, user_id)
    if number is None:
        raise NotFound(f"user {user_id} has no extension", details={"user_id": user_id})
    return _account(ctx.settings.sip, number, password=None)


async def held_extension(ctx: ServiceContext, user_id: int) -> tuple[str, datetime] | None:
    """The user's extension and since when they hold it (an operator's event stream)."""
    query = select(Extension.number, Extension.created_at).where(
        Extension.owner_type == OwnerType.USER.value, Extension.owner_id == user_id
    )
    async with ctx.sessions() as session:
        row = (await session.execute(query)).first()
    return (row[0], row[1]) if row is not None else None


async def list_extensions(ctx: ServiceContext) -> list[ExtensionRecord]:
    query = (
        select(Extension, User.name)
        .outerjoin(
            User, (Extension.owner_type == OwnerType.USER.value) & (Extension.owner_id == User.id)
        )
        .order_by(func.length(Extension.number), Extension.number)
    )
    async with ctx.sessions() as session:
        rows = await session.execute(query)
        return [
            ExtensionRecord(
                extension=ext.number,
                holder_type=OwnerType(ext.owner_type),
                holder_id=ext.owner_id,
                holder_name=name,
            )
            for ext, name in rows
        ]


async def count_extensions_by_holder(ctx: ServiceContext) -> dict[str, int]:
    async with ctx.sessions() as session:
        rows = await session.execute(
            select(Extension.owner_type, func.count()).group_by(Extension.owner_type)
        )
        return {owner: count for owner, count in rows}


async def _stage_released(
    ctx: ServiceContext, session: AsyncSession, number: str, user_id: int
) -> Event:
    return await ctx.events.stage(
        session,
        "extension_released",
        {"extension": number, "holder": {"type": "user", "id": user_id}},
    )


def _subscriber(sip: SipSettings, number: str, password: str) -> Subscriber:
    return Subscriber(
        username=number,
        domain=sip.domain,
        ha1=digest_ha1(number, sip.domain, password),
        # ha1b serves phones that send "user@domain" as their digest username.
        ha1b=digest_ha1(f"{number}@{sip.domain}", sip.domain, password),
    )


def _account(sip: SipSettings, number: str, password: str | None) -> SipAccount:
    return SipAccount(
        username=number,
        password=password,
        domain=sip.domain,
        registrar=f"sip:{sip.host}:{sip.port}",
    )


@dataclass(frozen=True)
class Reachable:
    """An extension a call can ring: an active user's phone."""

    extension: str
    user_id: int
    name: str
    role: str = "operator"


async def reachable_user(ctx: ServiceContext, number: str) -> Reachable | None:
    query = (
        select(User.id, User.name, User.role)
        .join(
            Extension,
            (Extension.owner_type == OwnerType.USER.value) & (Extension.owner_id == User.id),
        )
        .where(Extension.number == number, User.active.is_(True))
    )
    async with ctx.sessions() as session:
        row = (await session.execute(query)).first()
    if row is None:
        return None
    return Reachable(extension=number, user_id=row.id, name=row.name, role=row.role)


async def dialable_extensions(ctx: ServiceContext) -> frozenset[str]:
    """Every number a caller may dial in the shared namespace (users now; queues, menus later)."""
    async with ctx.sessions() as session:
        return frozenset(await session.scalars(select(Extension.number)))
