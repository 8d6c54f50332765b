"""Agent presence in Redis: one key per agent, changed only by optimistic transactions.

Every change is a pure transition (acd.presence) applied inside WATCH/MULTI, so two writers
racing for one agent (two queues offering, the agent pressing a feature code, the API) never
both win: the loser re-reads and its transition decides again (e.g. NotOfferable).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, replace
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import WatchError

from acd.presence import Activity, Presence, Status, stamped

KEY_PREFIX = "pbx:presence:"
AGENTS_KEY = "pbx:presence:agents"

Transition = Callable[[Presence], Presence]


def _key(user_id: int) -> str:
    return f"{KEY_PREFIX}{user_id}"


class PresenceStore:
    def __init__(self, redis: Redis, clock: Callable[[], float] = time.time) -> None:
        self._redis = redis
        self._clock = clock

    def now(self) -> float:
        return self._clock()

    async def get(self, user_id: int) -> Presence:
        return decode(await self._redis.get(_key(user_id)))

    async def get_many(self, user_ids: Iterable[int]) -> dict[int, Presence]:
        ids = list(user_ids)
        if not ids:
            return {}
        raws = await self._redis.mget([_key(i) for i in ids])
        return {user_id: decode(raw) for user_id, raw in zip(ids, raws, strict=True)}

    async def known_agents(self) -> list[int]:
        return sorted(int(member) for member in await self._redis.smembers(AGENTS_KEY))

    async def update(self, user_id: int, change: Transition) -> tuple[Presence, Presence]:
        """Apply `change` atomically; returns (before, after). Exceptions from `change` pass
        through with nothing written."""
        key = _key(user_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    before = decode(await pipe.get(key))
                    after = stamped(before, change(before), self.now())
                    if after == before:
                        await pipe.unwatch()  # type: ignore[no-untyped-call]
                        return before, after
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.set(key, encode(after))
                    pipe.sadd(AGENTS_KEY, str(user_id))
                    await pipe.execute()
                    return before, after
                except WatchError:
                    continue  # someone else changed this agent meanwhile: decide again

    async def forget(self, user_id: int) -> None:
        await self._redis.delete(_key(user_id))
        await self._redis.srem(AGENTS_KEY, str(user_id))


def encode(presence: Presence) -> str:
    return json.dumps(asdict(presence))


def decode(raw: bytes | str | None) -> Presence:
    if raw is None:
        return Presence()
    return _from_dict(json.loads(raw))


def _from_dict(data: dict[str, Any]) -> Presence:
    pending = data.pop("pending", None)
    presence = Presence(**data)
    return replace(
        presence,
        status=Status(presence.status),
        activity=Activity(presence.activity),
        pending=_from_dict(pending) if pending is not None else None,
    )
