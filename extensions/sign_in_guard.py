"""Failed sign-ins counted per email and per client address, and the locks they lead to.

Kept in Redis, not SQL: a count expires by itself (no clean-up job), INCR is atomic across
processes, and a flood of wrong guesses reads and counts without queueing for the one SQL
writer. The managed Redis keeps an append-only file, so counts and locks survive a restart.
Emails and addresses appear in the keys only as SHA-256, so Redis holds no list of them."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from redis.asyncio import Redis

from extensions.lockout import FailureVerdict, LockoutPolicy, after_failure

_KEY = "pbx:sign_in:{kind}:{scope}:{subject}"


@dataclass(frozen=True)
class Counted:
    verdict: FailureVerdict
    email_failures: int
    address_failures: int


def normalized_email(email: str) -> str:
    """Emails are matched without regard to case or surrounding blanks."""
    return email.strip().lower()


def _key(kind: str, scope: str, subject: str) -> str:
    digest = hashlib.sha256(subject.encode("utf-8", "surrogatepass")).hexdigest()
    return _KEY.format(kind=kind, scope=scope, subject=digest)


class SignInGuard:
    def __init__(self, redis: Redis, policy: LockoutPolicy) -> None:
        self._redis = redis
        self._policy = policy

    async def locked_for(self, email: str, address: str) -> float | None:
        """Seconds left of the longer lock on this email or address; None: neither is locked."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.pttl(_key("locked", "email", normalized_email(email)))
            pipe.pttl(_key("locked", "address", address))
            left_ms: list[int] = await pipe.execute()
        # PTTL: -2 for no key; a lock is always set with an expiry.
        longest = max(left_ms)
        return longest / 1000 if longest > 0 else None

    async def count_failure(self, email: str, address: str) -> Counted:
        """Count one failure and lock what reached its limit (its count then starts anew)."""
        email_key = _key("failures", "email", normalized_email(email))
        address_key = _key("failures", "address", address)
        window = self._policy.lock_seconds
        async with self._redis.pipeline(transaction=True) as pipe:
            # Each count runs for lock_seconds from its first failure.
            pipe.incr(email_key)
            pipe.expire(email_key, window, nx=True)
            pipe.incr(address_key)
            pipe.expire(address_key, window, nx=True)
            email_failures, _, address_failures, _ = await pipe.execute()
        verdict = after_failure(
            self._policy, email_failures=email_failures, address_failures=address_failures
        )
        async with self._redis.pipeline(transaction=True) as pipe:
            if verdict.lock_email:
                pipe.set(_key("locked", "email", normalized_email(email)), 1, ex=window)
                pipe.delete(email_key)
            if verdict.lock_address:
                pipe.set(_key("locked", "address", address), 1, ex=window)
                pipe.delete(address_key)
            await pipe.execute()
        return Counted(verdict, email_failures, address_failures)

    async def clear_email(self, email: str) -> None:
        """A success forgets the email's failures. Not the address's: an attacker holding one
        account could otherwise sign in to it between guesses at others."""
        await self._redis.delete(_key("failures", "email", normalized_email(email)))
