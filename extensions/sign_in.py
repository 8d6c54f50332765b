"""Signing in with email and password: the lockout guard first, then the password, then a new
session; failures are counted, slowed down and recorded. A person changing their password
proves the current one under the same guard."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, NoReturn

import structlog
from sqlalchemy import func, select

from core.context import ServiceContext
from core.errors import TooManyRequests, Unauthorized
from core.settings import SignInSettings
from extensions import passwords
from extensions.lockout import FailureVerdict, LockoutPolicy, retry_after
from extensions.models import User
from extensions.namespace import user_extension
from extensions.passwords import (
    WrongPassword,
    hash_password,
    needs_rehash,
    password_matches,
    spend_a_verification,
)
from extensions.sessions import csrf_token_for, start_session
from extensions.sign_in_guard import Counted, SignInGuard, normalized_email
from extensions.users import UserRecord, load_user, user_record

log = structlog.get_logger(__name__)


class BadCredentials(Unauthorized):
    """No active user with this email and password; which of the two is wrong is not said."""

    code = "bad_credentials"


class SignInLocked(TooManyRequests):
    code = "locked"


@dataclass(frozen=True)
class SignedInPerson:
    session_id: int
    # The cookie's value; only its hash is stored.
    token: str
    csrf_token: str
    user: UserRecord


def lockout_policy(settings: SignInSettings) -> LockoutPolicy:
    return LockoutPolicy(
        max_failures=settings.max_failures,
        max_failures_per_address=settings.max_failures_per_address,
        lock_seconds=settings.lock_seconds,
        failure_delay_seconds=settings.failure_delay_seconds,
        max_failure_delay_seconds=settings.max_failure_delay_seconds,
    )


async def sign_in(ctx: ServiceContext, email: str, password: str, address: str) -> SignedInPerson:
    guard = SignInGuard(ctx.redis, lockout_policy(ctx.settings.sign_in))
    left = await guard.locked_for(email, address)
    if left is not None:
        ctx.metrics.sign_ins.labels(outcome="locked").inc()
        raise _locked(retry_after(left))
    candidates = await _people_with_email(ctx, email)
    matched = None
    for user_id, password_hash in candidates:
        if await password_matches(password_hash, password):
            matched = (user_id, password_hash)
            break
    if not candidates:
        await spend_a_verification(password)
    if matched is None:
        await _failed(ctx, guard, email, address, [user_id for user_id, _ in candidates])
    user_id, password_hash = matched
    await guard.clear_email(email)
    new_hash = await hash_password(password) if needs_rehash(password_hash) else None
    async with ctx.sessions.begin() as session:
        user = await load_user(session, user_id)
        if not user.active or user.password_hash != password_hash:
            # Dismissed, or given a new password, while this password was being checked: a
            # session started now would outlive the revocation that came with that change.
            raise BadCredentials("the email or the password is wrong")
        if new_hash is not None:
            user.password_hash = new_hash
        started = await start_session(session, ctx.events, user_id, address)
        record = user_record(user, await user_extension(session, user_id))
    await ctx.events.publish(started.event)
    ctx.metrics.sign_ins.labels(outcome="success").inc()
    log.info("session_started", session_id=started.id, user_id=user_id, address=address)
    return SignedInPerson(
        session_id=started.id,
        token=started.token,
        csrf_token=csrf_token_for(started.token),
        user=record,
    )


async def _people_with_email(ctx: ServiceContext, email: str) -> list[tuple[int, str]]:
    """(id, password hash) of the active users with this email who have a password. Emails
    are not unique among users, so each is tried, oldest first."""
    async with ctx.sessions() as session:
        rows = await session.execute(
            select(User.id, User.password_hash)
            .where(
                func.lower(User.email) == normalized_email(email),
                User.active.is_(True),
                User.password_hash.is_not(None),
            )
            .order_by(User.id)
        )
        return [(user_id, password_hash) for user_id, password_hash in rows if password_hash]


async def change_own_password(
    ctx: ServiceContext,
    user_id: int,
    current: str,
    new: str,
    *,
    session_id: int | None,
    address: str,
) -> None:
    """passwords.change_own_password behind the sign-in guard: a wrong current password counts
    as a failed sign-in for the person's email and the address. Otherwise a stolen session
    (or an unlocked screen) could guess the password without limit, and the password opens
    every other way in."""
    async with ctx.sessions() as session:
        email = (await load_user(session, user_id)).email or f"user-{user_id}"
    guard = SignInGuard(ctx.redis, lockout_policy(ctx.settings.sign_in))
    left = await guard.locked_for(email, address)
    if left is not None:
        raise _locked(retry_after(left))
    try:
        await passwords.change_own_password(ctx, user_id, current, new, session_id=session_id)
    except WrongPassword:
        verdict = await _count_failure(ctx, guard, email, address, [user_id], "password_change")
        await asyncio.sleep(verdict.delay_seconds)
        if verdict.lock_email or verdict.lock_address:
            raise _locked(ctx.settings.sign_in.lock_seconds) from None
        raise


async def _failed(
    ctx: ServiceContext, guard: SignInGuard, email: str, address: str, user_ids: list[int]
) -> NoReturn:
    """Count the failure, record it, wait the verdict's delay, and refuse: 429 when it locked
    something, 401 otherwise."""
    verdict = await _count_failure(ctx, guard, email, address, user_ids, "sign_in")
    await asyncio.sleep(verdict.delay_seconds)
    if verdict.lock_email or verdict.lock_address:
        ctx.metrics.sign_ins.labels(outcome="locked").inc()
        raise _locked(ctx.settings.sign_in.lock_seconds)
    ctx.metrics.sign_ins.labels(outcome="bad_credentials").inc()
    raise BadCredentials("the email or the password is wrong")


async def _count_failure(
    ctx: ServiceContext,
    guard: SignInGuard,
    email: str,
    address: str,
    user_ids: list[int],
    attempt: str,
) -> FailureVerdict:
    """Count a wrong password (`attempt`: sign_in or password_change), record it and log it."""
    counted = await guard.count_failure(email, address)
    lock_seconds = ctx.settings.sign_in.lock_seconds
    async with ctx.sessions.begin() as session:
        events = [
            await ctx.events.stage(
                session,
                "sign_in_failed",
                {
                    "email": email, "address": address, "user_ids": user_ids,
                    "attempt": attempt, "email_failures": counted.email_failures,
                    "address_failures": counted.address_failures,
                },
            ),
            *[
                await ctx.events.stage(session, type_, data)
                for type_, data in _lock_events(counted, email, address, user_ids, lock_seconds)
            ],
        ]  # fmt: skip
    await ctx.events.publish(*events)
    verdict = counted.verdict
    for scope, locked in (("email", verdict.lock_email), ("address", verdict.lock_address)):
        if locked:
            ctx.metrics.sign_in_locks.labels(scope=scope).inc()
            log.warning("sign_in_locked", scope=scope, address=address, user_ids=user_ids)
    log.info("sign_in_failed", address=address, user_ids=user_ids, attempt=attempt)
    return verdict


def _lock_events(
    counted: Counted, email: str, address: str, user_ids: list[int], seconds: int
) -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if counted.verdict.lock_email:
        found.append(("user_locked", {"email": email, "user_ids": user_ids, "seconds": seconds}))
    if counted.verdict.lock_address:
        found.append(("address_locked", {"address": address, "seconds": seconds}))
    return found


def _locked(seconds: int) -> SignInLocked:
    return SignInLocked(
        f"too many failed sign-ins: locked, try again in {seconds} s", retry_after=seconds
    )
