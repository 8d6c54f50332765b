"""Users: create, read, update, and dismissal (phone off, extension freed, tokens revoked,
sessions ended)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.context import EdgeUnavailable, ServiceContext
from core.db import utcnow
from core.errors import Conflict, InvalidInput, NotFound
from core.events import Event
from extensions.models import ApiToken, Extension, User
from extensions.namespace import free_extension, user_extension
from extensions.numbering import OwnerType
from extensions.roles import Role
from extensions.sessions import revoke_sessions

log = structlog.get_logger(__name__)


class EmailTaken(Conflict):
    code = "email_taken"


@dataclass(frozen=True)
class UserRecord:
    id: int
    name: str
    email: str | None
    role: Role
    active: bool
    extension: str | None
    wrap_up_time: int | None
    record_calls: bool
    created_at: datetime
    updated_at: datetime
    dismissed_at: datetime | None

    def event_data(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "email": self.email,
            "role": self.role.value,
            "active": self.active,
            "extension": self.extension,
            "wrap_up_time": self.wrap_up_time,
            "record_calls": self.record_calls,
        }


@dataclass(frozen=True)
class UserChanges:
    """Fields a PATCH may set; None means "leave as is" (`clear_email`, `clear_wrap_up_time`
    set them back to none)."""

    name: str | None = None
    email: str | None = None
    clear_email: bool = False
    role: Role | None = None
    active: bool | None = None
    wrap_up_time: int | None = None
    clear_wrap_up_time: bool = False
    record_calls: bool | None = None


async def create_user(
    ctx: ServiceContext,
    *,
    name: str,
    email: str | None,
    role: Role,
    wrap_up_time: int | None = None,
    record_calls: bool = False,
) -> UserRecord:
    async with ctx.sessions.begin() as session:
        await _ensure_email_free(session, email, user_id=None)
        user = User(
            name=name, email=email, role=role.value, active=True, wrap_up_time=wrap_up_time,
            record_calls=record_calls,
        )  # fmt: skip
        session.add(user)
        await session.flush()
        record = user_record(user, extension=None)
        event = await ctx.events.stage(session, "user_created", record.event_data())
    await ctx.events.publish(event)
    log.info("user_created", user_id=record.id, role=record.role)
    return record


async def find_user_by_email(ctx: ServiceContext, email: str) -> UserRecord:
    """The user with this email (any case), the active one if a dismissed user had it too."""
    query = (
        select(User, Extension.number)
        .outerjoin(
            Extension,
            (Extension.owner_type == OwnerType.USER.value) & (Extension.owner_id == User.id),
        )
        .where(func.lower(User.email) == email.lower())
        .order_by(User.active.desc(), User.id.desc())
        .limit(1)
    )
    async with ctx.sessions() as session:
        row = (await session.execute(query)).first()
    if row is None:
        raise NotFound(f"no user has the email {email}", field="email")
    return user_record(row[0], row[1])


async def get_user(ctx: ServiceContext, user_id: int) -> UserRecord:
    async with ctx.sessions() as session:
        user = await load_user(session, user_id)
        return user_record(user, await user_extension(session, user_id))


async def list_users(
    ctx: ServiceContext, *, active: bool | None, limit: int, offset: int
) -> tuple[list[UserRecord], int]:
    query = select(User, Extension.number).outerjoin(
        Extension,
        (Extension.owner_type == OwnerType.USER.value) & (Extension.owner_id == User.id),
    )
    count = select(func.count()).select_from(User)
    if active is not None:
        query = query.where(User.active == active)
        count = count.where(User.active == active)
    async with ctx.sessions() as session:
        rows = await session.execute(query.order_by(User.id).limit(limit).offset(offset))
        total = await session.scalar(count)
        return [user_record(user, number) for user, number in rows], total or 0


# What a dismissal also changes in the packages above this one (queues, channels, dialogs),
# run inside the dismissal's transaction; returns the events it staged.
DismissalEffects = Callable[[AsyncSession, int], Awaitable[list[Event]]]


async def update_user(
    ctx: ServiceContext, user_id: int, changes: UserChanges,
    on_dismissal: DismissalEffects | None = None,
) -> UserRecord:  # fmt: skip
    """One transaction, a dismissal with everything `on_dismissal` changes included: it is
    all or nothing."""
    events: list[Event] = []
    released: str | None = None
    async with ctx.sessions.begin() as session:
        user = await load_user(session, user_id)
        if changes.name is not None:
            user.name = changes.name
        if changes.email is not None or changes.clear_email:
            user.email = changes.email
        if changes.role is not None:
            user.role = changes.role.value
        if changes.wrap_up_time is not None or changes.clear_wrap_up_time:
            user.wrap_up_time = changes.wrap_up_time
        if changes.record_calls is not None:
            user.record_calls = changes.record_calls
        dismissing = changes.active is False and user.active
        if changes.active is not None:
            user.active = changes.active
            user.dismissed_at = utcnow() if not changes.active else None
        if user.active and (changes.email is not None or changes.active):
            await _ensure_email_free(session, user.email, user_id=user_id)
        extension = await user_extension(session, user_id)
        if dismissing:
            released = extension
            await _dismiss(session, user_id, extension)
            extension = None
        user.updated_at = utcnow()
        await session.flush()
        record = user_record(user, extension)
        if released is not None:
            events.append(
                await ctx.events.stage(
                    session,
                    "extension_released",
                    {"extension": released, "holder": {"type": "user", "id": user_id}},
                )
            )
        kind = "user_dismissed" if dismissing else "user_updated"
        events.append(await ctx.events.stage(session, kind, record.event_data()))
        if dismissing:
            # Signed in to the web console: out at once, like the API tokens.
            events += await revoke_sessions(session, ctx.events, user_id, reason="user_dismissed")
        if dismissing and on_dismissal is not None:
            events += await on_dismissal(session, user_id)
    if released is not None:
        await drop_phone_registrations(ctx, released)
    await ctx.events.publish(*events)
    log.info(kind, user_id=user_id, released_extension=released)
    return record


async def _dismiss(session: AsyncSession, user_id: int, extension: str | None) -> None:
    """A dismissed user's phone stops working at once and their API tokens die with them."""
    if extension is not None:
        await free_extension(session, extension)
    await session.execute(
        update(ApiToken)
        .where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


async def drop_phone_registrations(ctx: ServiceContext, username: str) -> None:
    """Unregister a phone at the edge; its credentials are already gone from the database."""
    try:
        await ctx.registrations.drop_registrations(username)
    except EdgeUnavailable as exc:
        # The binding expires by itself; the phone can no longer re-register.
        ctx.metrics.registration_drop_failures.inc()
        log.error("registration_drop_failed", username=username, error=str(exc))


async def _ensure_email_free(
    session: AsyncSession, email: str | None, *, user_id: int | None
) -> None:
    """An email names one active user: people and scripts find users by it. (Checked, not
    constrained: two concurrent creations with one email may still both pass.)"""
    if email is None:
        return
    query = select(User.id).where(func.lower(User.email) == email.lower(), User.active.is_(True))
    if user_id is not None:
        query = query.where(User.id != user_id)
    if await session.scalar(query.limit(1)) is not None:
        raise EmailTaken(f"an active user has the email {email} already", field="email")


async def load_user(session: AsyncSession, user_id: int) -> User:
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound(f"user {user_id} does not exist", details={"user_id": user_id})
    return user


async def recording_users(ctx: ServiceContext) -> frozenset[int]:
    """The active users whose external calls are recorded (flows.recording)."""
    async with ctx.sessions() as session:
        ids = await session.scalars(
            select(User.id).where(User.active.is_(True), User.record_calls.is_(True))
        )
        return frozenset(ids)


def user_record(user: User, extension: str | None) -> UserRecord:
    return UserRecord(
        id=user.id,
        name=user.name,
        email=user.email,
        role=Role(user.role),
        active=user.active,
        extension=extension,
        wrap_up_time=user.wrap_up_time,
        record_calls=user.record_calls,
        created_at=user.created_at,
        updated_at=user.updated_at,
        dismissed_at=user.dismissed_at,
    )


class InvalidMembers(InvalidInput):
    code = "invalid_members"


async def check_members(session: AsyncSession, members: tuple[int, ...]) -> None:
    """Members of a queue or channel: active users, each once, in the order given."""
    if len(set(members)) != len(members):
        raise InvalidMembers("a user can be a member only once", field="members")
    if not members:
        return
    active = set(await session.scalars(
        select(User.id).where(User.id.in_(members), User.active.is_(True))
    ))  # fmt: skip
    missing = [m for m in members if m not in active]
    if missing:
        raise InvalidMembers(
            f"no active user with id {', '.join(map(str, missing))}",
            field="members", details={"user_ids": missing},
        )  # fmt: skip
