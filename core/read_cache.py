"""Read-through caches for the call path, emptied by the events of the changes they depend on.

A caller must hear the 200 without waiting for SQL: the company number a call is for and
whether its caller is blocklisted are read once and then served from memory. Every change to
that data publishes an event in this process (core.events), and `core.wakeups` hands each
event's type to the caches at once, so the next call reads the new state.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from core.wakeups import Wakeups

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ReadCache(Generic[K, V]):
    """`get(key)` loads through `load` once, until an event whose type starts with one of
    `emptied_by` is published; at most `size` keys, least recently used first out."""

    def __init__(
        self,
        load: Callable[[K], Awaitable[V]],
        *,
        emptied_by: tuple[str, ...],
        wakeups: Wakeups,
        size: int = 10_000,
    ) -> None:
        self._load = load
        self._emptied_by = emptied_by
        self._size = size
        self._values: OrderedDict[K, V] = OrderedDict()
        # Bumped when emptied: a load that started before a change must not be kept after it.
        self._generation = 0
        wakeups.add_listener(self._on_event)

    async def get(self, key: K) -> V:
        if key in self._values:
            self._values.move_to_end(key)
            return self._values[key]
        generation = self._generation
        value = await self._load(key)
        if generation == self._generation:
            self._values[key] = value
            if len(self._values) > self._size:
                self._values.popitem(last=False)
        return value

    def _on_event(self, event_type: str) -> None:
        if event_type.startswith(self._emptied_by):
            self._values.clear()
            self._generation += 1
