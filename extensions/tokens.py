"""API bearer tokens: minted for a user and a role, stored as SHA-256, revoked with the user."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

import structlog
from sqlalchemy import select

from core.context import ServiceContext
from core.errors import Conflict
from extensions.models import ApiToken, User
from extensions.roles import Role
from extensions.users import create_user, load_user

log = structlog.get_logger(__name__)

TOKEN_PREFIX = "pbx_"
BOOTSTRAP_ADMIN_NAME = "Administrator"
BOOTSTRAP_TOKEN_LABEL = "bootstrap admin (pbx run)"


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user's token, the operator-supplied PBX_ADMIN_TOKEN (user_id None), or
    a person signed in to the web console (session_id, the user's role)."""

    role: Role
    user_id: int | None
    token_id: int | None
    session_id: int | None = None


@dataclass(frozen=True)
class IssuedToken:
    id: int
    token: str
    user_id: int
    role: Role
    label: str


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def issue_token(
    ctx: ServiceContext, *, user_id: int, role: Role | None, label: str
) -> IssuedToken:
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    async with ctx.sessions.begin() as session:
        user = await load_user(session, user_id)
        if not user.active:
            raise Conflict(f"user {user_id} is dismissed", details={"user_id": user_id})
        row = ApiToken(
            user_id=user_id,
            role=(role or Role(user.role)).value,
            token_hash=_hash(token),
            label=label,
        )
        session.add(row)
        await session.flush()
        event = await ctx.events.stage(
            session,
            "token_issued",
            {"token_id": row.id, "user_id": user_id, "role": row.role, "label": label},
        )
    await ctx.events.publish(event)
    log.info("token_issued", token_id=row.id, user_id=user_id, role=row.role)
    return IssuedToken(id=row.id, token=token, user_id=user_id, role=Role(row.role), label=label)


async def authenticate(ctx: ServiceContext, token: str) -> Principal | None:
    admin_token = ctx.settings.admin_token
    if admin_token is not None and hmac.compare_digest(token.encode(), admin_token.encode()):
        return Principal(role=Role.ADMIN, user_id=None, token_id=None)
    async with ctx.sessions() as session:
        row = await session.execute(
            select(ApiToken.id, ApiToken.role, ApiToken.user_id)
            .join(User, User.id == ApiToken.user_id)
            .where(
                ApiToken.token_hash == _hash(token),
                ApiToken.revoked_at.is_(None),
                User.active.is_(True),
            )
        )
        found = row.first()
    if found is None:
        return None
    return Principal(role=Role(found.role), user_id=found.user_id, token_id=found.id)


async def ensure_bootstrap_admin_token(ctx: ServiceContext, kept: str | None) -> str:
    """The admin token `pbx run` prints: the kept one while it still works, else a new one."""
    if kept is not None:
        principal = await authenticate(ctx, kept)
        if principal is not None and principal.role is Role.ADMIN:
            return kept
        log.warning("bootstrap_token_no_longer_valid_issuing_new")
    async with ctx.sessions() as session:
        admin_id = await session.scalar(
            select(User.id)
            .where(User.role == Role.ADMIN.value, User.active.is_(True))
            .order_by(User.id)
            .limit(1)
        )
    if admin_id is None:
        admin = await create_user(ctx, name=BOOTSTRAP_ADMIN_NAME, email=None, role=Role.ADMIN)
        admin_id = admin.id
    issued = await issue_token(ctx, user_id=admin_id, role=Role.ADMIN, label=BOOTSTRAP_TOKEN_LABEL)
    return issued.token
