"""Events for tests to publish through the service's EventBus without a transaction."""

from __future__ import annotations

import itertools

from core.db import utcnow
from core.events import Event

# Far above any persisted event's id, so they never collide with one.
_ids = itertools.count(10**12)


def unpersisted_events(type_: str, count: int, padding: int = 0) -> list[Event]:
    """`count` events of `type_` (data: `padding` characters): they go out live, to this
    process's listeners and over Redis, but ?since will not replay them."""
    data = {"padding": "x" * padding}
    return [Event(next(_ids), type_, utcnow(), data) for _ in range(count)]
