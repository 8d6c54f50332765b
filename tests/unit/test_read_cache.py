"""The call path's read-through cache: loads once, forgets on the events named for it."""

from __future__ import annotations

import asyncio

from core.read_cache import ReadCache
from core.wakeups import Wakeups


class Source:
    def __init__(self) -> None:
        self.values = {"4930": "sales"}
        self.loads: list[str] = []
        self.gate: asyncio.Event | None = None

    async def load(self, key: str) -> str | None:
        self.loads.append(key)
        if self.gate is not None:
            await self.gate.wait()
        return self.values.get(key)


async def test_a_value_is_loaded_once_and_forgotten_on_a_named_event() -> None:
    source, wakeups = Source(), Wakeups()
    cache = ReadCache(source.load, emptied_by=("number_",), wakeups=wakeups)
    assert [await cache.get("4930"), await cache.get("4930"), await cache.get("4931")] == [
        "sales", "sales", None,
    ]  # fmt: skip
    assert source.loads == ["4930", "4931"]
    wakeups.notify("queue_updated")  # not its business
    await cache.get("4930")
    assert source.loads == ["4930", "4931"]
    source.values["4930"] = "support"
    wakeups.notify("number_updated")
    assert await cache.get("4930") == "support"
    assert source.loads == ["4930", "4931", "4930"]


async def test_a_load_that_raced_a_change_is_not_kept() -> None:
    source, wakeups = Source(), Wakeups()
    cache = ReadCache(source.load, emptied_by=("number_",), wakeups=wakeups)
    source.gate = asyncio.Event()
    stale = asyncio.create_task(cache.get("4930"))
    await asyncio.sleep(0)  # the load has read the old row
    wakeups.notify("number_deleted")
    source.gate.set()
    assert await stale == "sales"
    del source.values["4930"]
    assert await cache.get("4930") is None  # loaded again, not the stale answer


async def test_the_least_recently_used_key_goes_first() -> None:
    source, wakeups = Source(), Wakeups()
    source.values.update({"a": "1", "b": "2", "c": "3"})
    cache = ReadCache(source.load, emptied_by=("number_",), wakeups=wakeups, size=2)
    for key in ("a", "b", "a", "c", "a", "b"):
        await cache.get(key)
    assert source.loads == ["a", "b", "c", "b"]
