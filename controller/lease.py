"""The active controller's lease in Redis: one key holding the active node's name with a
time to live. The holder renews it every third of its term; a node that finds it gone takes
it (SET NX). Redis decides who holds it; each node decides from its own clock how long it
may still act (`still_held`), so that a holder cut off from Redis steps down before the
others may take over.
"""

from __future__ import annotations

import contextlib

from redis.asyncio import Redis
from redis.exceptions import RedisError

LEASE_KEY = "pbx:cluster:controller"
# Renewed every third of the term: two renewals may fail before it runs out.
RENEWALS_PER_TERM = 3

# Extend (or delete) the key only while it holds our name: a lease that ran out and was taken
# by another node is not touched.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


def still_held(now: float, renewed_at: float, term_s: float) -> bool:
    """Whether a holder whose last renewal was sent at `renewed_at` (its monotonic clock)
    may still act at `now`: the key lives `term_s` from when Redis handled that renewal,
    which was after it was sent."""
    return now < renewed_at + term_s


class RedisLease:
    """Acquire, renew and release the lease for `node` (False, not an exception, when Redis
    cannot be reached: a node that cannot renew is no longer sure it holds it)."""

    def __init__(self, redis: Redis, node: str, term_s: float) -> None:
        self._redis = redis
        self._node = node
        self._term_ms = max(1, round(term_s * 1000))

    async def acquire(self) -> bool:
        """Take the lease if nobody holds it, or renew it if we do."""
        try:
            if await self._redis.set(LEASE_KEY, self._node, nx=True, px=self._term_ms):
                return True
        except (RedisError, OSError):
            return False
        return await self.renew()

    async def renew(self) -> bool:
        try:
            renewed = await self._redis.eval(_RENEW, 1, LEASE_KEY, self._node, self._term_ms)
        except (RedisError, OSError):
            return False
        return bool(renewed)

    async def release(self) -> None:
        with contextlib.suppress(RedisError, OSError):  # else it runs out by itself
            await self._redis.eval(_RELEASE, 1, LEASE_KEY, self._node)

    async def holder(self) -> str | None:
        """The active node's name, None when none is (or Redis cannot tell)."""
        try:
            value = await self._redis.get(LEASE_KEY)
        except (RedisError, OSError):
            return None
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)
