"""People's passwords for the web console: Argon2id hashes (argon2-cffi), the length rule, an
admin setting one and a person changing their own. A new password ends the user's sessions."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import structlog
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from core.context import ServiceContext
from core.errors import Forbidden, InvalidInput
from extensions.phones import UserInactive
from extensions.sessions import revoke_sessions
from extensions.users import load_user

log = structlog.get_logger(__name__)

# argon2-cffi's defaults: Argon2id with RFC 9106's low-memory profile, a random salt each.
_HASHER = PasswordHasher()
# One hash takes 64 MiB and tens of milliseconds of a core: at most two at a time, and off the
# event loop, so a burst of sign-ins neither starves other requests nor runs the memory out.
_HASHING_THREADS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="argon2")
# Bounds the work one request can ask for; no person types more.
MAX_PASSWORD_LENGTH = 1024


class WeakPassword(InvalidInput):
    code = "weak_password"


class WrongPassword(Forbidden):
    code = "wrong_password"


def check_password_rule(password: str, min_length: int, field: str = "password") -> None:
    if len(password) < min_length:
        raise WeakPassword(f"a password needs at least {min_length} characters", field=field)
    if len(password) > MAX_PASSWORD_LENGTH:
        raise WeakPassword(f"a password has at most {MAX_PASSWORD_LENGTH} characters", field=field)


async def hash_password(password: str) -> str:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_HASHING_THREADS, _HASHER.hash, password)


async def password_matches(password_hash: str, password: str) -> bool:
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(
            _HASHING_THREADS, partial(_HASHER.verify, password_hash, password)
        )
    except (VerificationError, InvalidHashError):
        return False


_nobody_hash: str | None = None


async def spend_a_verification(password: str) -> None:
    """As long as checking a password takes, for an email with no password: the answer's
    timing must not tell which emails can sign in."""
    global _nobody_hash
    if _nobody_hash is None:
        _nobody_hash = await hash_password("no such person")
    await password_matches(_nobody_hash, password)


def needs_rehash(password_hash: str) -> bool:
    """A hash made with weaker parameters than today's (re-hashed at the next sign-in)."""
    try:
        return _HASHER.check_needs_rehash(password_hash)
    except InvalidHashError:
        return True


async def set_password(
    ctx: ServiceContext,
    user_id: int,
    password: str,
    *,
    keep_session_id: int | None = None,
    by_self: bool = False,
) -> None:
    """Give the user this password; every session of theirs ends but `keep_session_id` (the
    one that changed it). For the API and the command line alike."""
    check_password_rule(password, ctx.settings.sign_in.min_password_length)
    password_hash = await hash_password(password)
    async with ctx.sessions.begin() as session:
        user = await load_user(session, user_id)
        if not user.active:
            raise UserInactive(f"user {user_id} is dismissed", details={"user_id": user_id})
        user.password_hash = password_hash
        ended = await revoke_sessions(
            session, ctx.events, user_id, reason="password_changed", keep=keep_session_id
        )
        event = await ctx.events.stage(
            session,
            "user_password_set",
            {"user_id": user_id, "by_self": by_self, "sessions_ended": len(ended)},
        )
    await ctx.events.publish(event, *ended)
    log.info("user_password_set", user_id=user_id, by_self=by_self, sessions_ended=len(ended))


async def change_own_password(
    ctx: ServiceContext, user_id: int, current: str, new: str, *, session_id: int | None
) -> None:
    """A person replaces their password, proving the current one; their other sessions end."""
    async with ctx.sessions() as session:
        stored = (await load_user(session, user_id)).password_hash
    if stored is None or not await password_matches(stored, current):
        raise WrongPassword("the current password is wrong", field="current_password")
    check_password_rule(new, ctx.settings.sign_in.min_password_length, field="new_password")
    await set_password(ctx, user_id, new, keep_session_id=session_id, by_self=True)
