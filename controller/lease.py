"""The active controller's lease in Redis: one key holding the active node's name with a
time to live. The holder renews it every third of its term; a node that finds it gone takes
it (SET NX). Redis decides who holds it; each node decides from its own clock how long it
may still act (`still_held`), so that a holder cut off from Redis steps down before the
others may take over.
"""

from __future__ import annotations

import asyncio
import contextlib
from enum import Enum

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


def acting_deadline(renewed_at: float, term_s: float) -> float:
    """Until when a holder whose last renewal was sent at `renewed_at` (its monotonic clock)
    may act: the key lives `term_s` from when Redis handled that renewal, which was after it
    was sent; the holder stops a renewal interval before that, to be still by then."""
    return renewed_at + term_s - term_s / RENEWALS_PER_TERM


class Renewal(Enum):
    RENEWED = "renewed"
    LOST = "lost"  # the key is gone or another node's: step down at once
    UNKNOWN = "unknown"  # Redis did not answer in time: held until the acting deadline


class RedisLease:
    """Acquire, renew and release the lease for `node`. Every call is bounded by a third of
    the term (its own connection, not the pool the service shares, so a busy pool cannot
    hold a renewal up); a call that fails or times out is UNKNOWN, not an exception."""

    def __init__(self, redis_url: str, node: str, term_s: float) -> None:
        self._wait_s = term_s / RENEWALS_PER_TERM
        self._redis = Redis.from_url(
            redis_url, socket_timeout=self._wait_s, socket_connect_timeout=self._wait_s
        )
        self._node = node
        self._term_ms = max(1, round(term_s * 1000))

    async def close(self) -> None:
        await self._redis.aclose()

    async def acquire(self) -> Renewal:
        """Take the lease if nobody holds it, or renew it if we do."""
        try:
            async with asyncio.timeout(self._wait_s):
                taken = await self._redis.set(LEASE_KEY, self._node, nx=True, px=self._term_ms)
        except (RedisError, OSError, TimeoutError):
            return Renewal.UNKNOWN
        return Renewal.RENEWED if taken else await self.renew()

    async def renew(self) -> Renewal:
        try:
            async with asyncio.timeout(self._wait_s):
                renewed = await self._redis.eval(_RENEW, 1, LEASE_KEY, self._node, self._term_ms)
        except (RedisError, OSError, TimeoutError):
            return Renewal.UNKNOWN
        return Renewal.RENEWED if renewed else Renewal.LOST

    async def release(self) -> None:
        with contextlib.suppress(RedisError, OSError, TimeoutError):  # else it runs out
            async with asyncio.timeout(self._wait_s):
                await self._redis.eval(_RELEASE, 1, LEASE_KEY, self._node)

    async def holder(self) -> str | None:
        """The active node's name, None when none is (or Redis cannot tell)."""
        try:
            async with asyncio.timeout(self._wait_s):
                value = await self._redis.get(LEASE_KEY)
        except (RedisError, OSError, TimeoutError):
            return None
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)
