"""The active controller's lease in Redis: one key holding the active node's name with a
time to live. The holder renews it every third of its term; a node that finds it gone takes
it (SET NX). Redis decides who holds it; each node decides from its own clock how long it
may still act (`still_held`), so that a holder cut off from Redis steps down before the
others may take over.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from enum import Enum

from redis.asyncio import Redis
from redis.exceptions import RedisError

TERM_KEY = "pbx:cluster:term"
LEASE_KEY = "pbx:cluster:controller"
MEMBER_KEY_PREFIX = "pbx:cluster:member:"
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

    async def next_term(self) -> int:
        """A number above every earlier holder's (a fencing token): what a controller shows
        the media hosts, which serve no older one. Raises on a Redis failure."""
        async with asyncio.timeout(self._wait_s):
            return int(await self._redis.incr(TERM_KEY))

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


class NodeInUse(Exception):
    """Another live process of the cluster has this node's name or index."""


class Membership:
    """This process's claim on its node's name and index, kept like the lease (renewed by
    the same rounds, run out with it): two live nodes of one name would hold the lease at
    once, two of one index would hand out the same ids."""

    def __init__(self, redis_url: str, node: str, index: int, term_s: float) -> None:
        self._wait_s = term_s / RENEWALS_PER_TERM
        self._term_s = term_s
        self._redis = Redis.from_url(
            redis_url, socket_timeout=self._wait_s, socket_connect_timeout=self._wait_s
        )
        self._token = uuid.uuid4().hex
        self._keys = [f"{MEMBER_KEY_PREFIX}node:{node}", f"{MEMBER_KEY_PREFIX}index:{index}"]
        self._term_ms = max(1, round(term_s * 1000))

    async def claim(self) -> None:
        """Claim both, waiting a little longer than a term for those of a process that has
        just died to run out; NodeInUse when another holds one after that."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._term_s * 1.5
        while True:
            held = [key for key in self._keys if await self._take(key)]
            if len(held) == len(self._keys):
                return
            if loop.time() > deadline:
                await self.release()
                taken = sorted(set(self._keys) - set(held))
                raise NodeInUse(f"another live node holds {', '.join(taken)}: give each node "
                                "its own [cluster] node and node_index")  # fmt: skip
            await asyncio.sleep(self._wait_s)

    async def renew(self) -> None:
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            async with asyncio.timeout(self._wait_s):
                for key in self._keys:
                    await self._redis.eval(_RENEW, 1, key, self._token, self._term_ms)

    async def release(self) -> None:
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            async with asyncio.timeout(self._wait_s):
                for key in self._keys:
                    await self._redis.eval(_RELEASE, 1, key, self._token)
        await self._redis.aclose()

    async def _take(self, key: str) -> bool:
        try:
            async with asyncio.timeout(self._wait_s):
                if await self._redis.set(key, self._token, nx=True, px=self._term_ms):
                    return True
                return bool(await self._redis.eval(_RENEW, 1, key, self._token, self._term_ms))
        except (RedisError, OSError, TimeoutError):
            return False
