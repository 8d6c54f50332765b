"""People's sessions in the web console: started by a sign-in, carried by a cookie, kept in SQL
so that signing out, a dismissal or a new password ends them at once."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.context import ServiceContext
from core.db import utcnow
from core.events import Event, EventBus
from extensions.models import PersonSession, User
from extensions.roles import Role

log = structlog.get_logger(__name__)

SESSION_COOKIE = "pbx_session"
CSRF_HEADER = "X-CSRF-Token"
# last_seen_at is written at most this often: one write a minute per active session, not one
# per request, and the idle limit is still kept to the minute.
_TOUCH_EVERY = timedelta(minutes=1)


@dataclass(frozen=True)
class SignedIn:
    """Who a valid session cookie belongs to; the role is the user's current one."""

    session_id: int
    user_id: int
    role: Role


@dataclass(frozen=True)
class NewSession:
    id: int
    token: str
    event: Event


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def csrf_token_for(token: str) -> str:
    """The session's CSRF token, derived from its secret cookie token (HMAC), so nothing more
    is stored: a page from another site can send the cookie but can neither read it nor this."""
    digest = hmac.new(token.encode(), b"pbx csrf", hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def csrf_token_matches(token: str, sent: str) -> bool:
    return hmac.compare_digest(csrf_token_for(token).encode(), sent.encode())


async def start_session(
    session: AsyncSession, bus: EventBus, user_id: int, address: str
) -> NewSession:
    """A new session for the user, inside the caller's transaction (its event staged)."""
    token = secrets.token_urlsafe(32)
    row = PersonSession(user_id=user_id, token_hash=_hash(token))
    session.add(row)
    await session.flush()
    event = await bus.stage(
        session, "session_started", {"session_id": row.id, "user_id": user_id, "address": address}
    )
    return NewSession(id=row.id, token=token, event=event)


async def signed_in(ctx: ServiceContext, token: str) -> SignedIn | None:
    """The live session this cookie token names (not revoked, not idle too long, its user
    active), or None."""
    now = utcnow()
    idle_limit = timedelta(seconds=ctx.settings.sign_in.session_idle_seconds)
    async with ctx.sessions() as session:
        found = (
            await session.execute(
                select(PersonSession.id, PersonSession.last_seen_at, User.id, User.role)
                .join(User, User.id == PersonSession.user_id)
                .where(
                    PersonSession.token_hash == _hash(token),
                    PersonSession.revoked_at.is_(None),
                    PersonSession.last_seen_at > now - idle_limit,
                    User.active.is_(True),
                )
            )
        ).first()
    if found is None:
        return None
    session_id, last_seen_at, user_id, role = found
    if now - last_seen_at >= _TOUCH_EVERY:
        async with ctx.sessions.begin() as session:
            await session.execute(
                update(PersonSession)
                .where(PersonSession.id == session_id, PersonSession.revoked_at.is_(None))
                .values(last_seen_at=now)
            )
    return SignedIn(session_id=session_id, user_id=user_id, role=Role(role))


async def end_session(ctx: ServiceContext, signed: SignedIn) -> None:
    """Signing out: the session is revoked, so its cookie is worthless even if kept."""
    async with ctx.sessions.begin() as session:
        ended = await revoke_sessions(
            session, ctx.events, signed.user_id, reason="signed_out", only=signed.session_id
        )
    await ctx.events.publish(*ended)
    log.info("session_ended", session_id=signed.session_id, user_id=signed.user_id)


async def revoke_sessions(
    session: AsyncSession,
    bus: EventBus,
    user_id: int,
    *,
    reason: str,
    only: int | None = None,
    keep: int | None = None,
) -> list[Event]:
    """Revoke the user's live sessions (`only` that one, or all but `keep`) inside the caller's
    transaction; one `session_ended` event each, staged."""
    query = (
        update(PersonSession)
        .where(PersonSession.user_id == user_id, PersonSession.revoked_at.is_(None))
        .values(revoked_at=utcnow())
        .returning(PersonSession.id)
    )
    if only is not None:
        query = query.where(PersonSession.id == only)
    if keep is not None:
        query = query.where(PersonSession.id != keep)
    ended = sorted(await session.scalars(query))
    return [
        await bus.stage(
            session, "session_ended", {"session_id": ended_id, "user_id": user_id, "reason": reason}
        )
        for ended_id in ended
    ]
