"""Agent presence in Redis: one key per agent, changed only by compare-and-set.

Every change is a pure transition (acd.presence) of the value last seen, written only if Redis
still holds that value (a Lua script), so two writers racing for one agent (two queues
offering, the agent pressing a feature code, the API) never both win: the loser gets the
current value back and its transition decides again (e.g. NotOfferable).

The store remembers the value it last saw of each agent, so a change costs one round trip
(the script) instead of three (WATCH, GET, MULTI/EXEC): the agent-free path makes two changes
before the next caller's INVITE. Memory is only a first guess: the script checks it, and a
transition refusing a remembered value is tried again on the stored one before its refusal
counts.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, replace
from typing import Any

from redis.asyncio import Redis

from acd.presence import Activity, Presence, Status, stamped

KEY_PREFIX = "pbx:presence:"
AGENTS_KEY = "pbx:presence:agents"

Transition = Callable[[Presence], Presence]


# KEYS: the agent's key, AGENTS_KEY; ARGV: the value the change was decided on ("" for none),
# the new value, the agent's id. Returns [1] when written, else [0, the value stored now].
_COMPARE_AND_SET = """
local stored = redis.call('GET', KEYS[1])
if (stored or '') ~= ARGV[1] then
    return {0, stored}
end
if ARGV[2] ~= ARGV[1] then
    redis.call('SET', KEYS[1], ARGV[2])
    redis.call('SADD', KEYS[2], ARGV[3])
end
return {1}
"""


def _key(user_id: int) -> str:
    return f"{KEY_PREFIX}{user_id}"


class PresenceStore:
    def __init__(
        self, redis: Redis, clock: Callable[[], float] = time.time,
        remembered: dict[int, str | None] | None = None,
    ) -> None:  # fmt: skip
        """`remembered`: the last value seen per agent, shared by the stores of one process."""
        self._redis = redis
        self._clock = clock
        self._remembered = remembered if remembered is not None else {}
        self._compare_and_set = redis.register_script(_COMPARE_AND_SET)

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
        remembered = self._remembered
        fresh = user_id not in remembered
        raw = await self._redis.get(key) if fresh else remembered[user_id]
        while True:
            before = decode(raw)
            try:
                after = stamped(before, change(before), self.now())
            except Exception:
                if fresh:
                    raise
                # Decided on memory: the refusal counts only if the stored value refuses too.
                raw, fresh = await self._redis.get(key), True
                remembered[user_id] = _text(raw)
                continue
            new = raw if after == before else encode(after)
            answer = await self._compare_and_set(
                keys=[key, AGENTS_KEY], args=[raw or "", new or "", str(user_id)]
            )
            if answer[0] == 1:
                remembered[user_id] = _text(new)
                return before, after
            # Changed meanwhile (another writer, or memory was behind): decide again.
            raw, fresh = _text(answer[1]), True
            remembered[user_id] = raw

    async def forget(self, user_id: int) -> None:
        self._remembered.pop(user_id, None)
        await self._redis.delete(_key(user_id))
        await self._redis.srem(AGENTS_KEY, str(user_id))


def _text(raw: bytes | str | None) -> str | None:
    return raw.decode() if isinstance(raw, bytes) else raw


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
