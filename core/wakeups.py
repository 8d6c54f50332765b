"""In-process wake-ups: the service's own background work hears of each published event type
directly from the EventBus, at publish time, without going through Redis.

Why not a queue per consumer fed from the Redis subscription (as the WebSocket hub does)?
The consumers (the ACD dispatcher, chat assignment, reply delivery) only need to know that
*something* of a kind happened so they run their next pass early; they re-read the state
themselves. A bounded queue of every event overflows in a burst, and then the consumer is
either dropped or must block the publisher; an unbounded one grows without limit. Calling
each listener synchronously with the event type has neither problem: the listener decides
at once whether the type concerns it and sets its own coalescing flag (an asyncio.Event), so
a burst of any size costs a few function calls and can never lose the next wake-up.

Every event is published by this process (the controller is the only one with an EventBus;
the media workers report to it over their pipes), so nothing is missed by not listening to
Redis here. Redis pub/sub remains the path for the WebSocket event stream and other processes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

# Called with the type of each event published in this process, right after its transaction
# committed. It runs inside EventBus.publish: it must be quick and must not raise.
Listener = Callable[[str], None]
# Called with a changed value of one topic (e.g. an agent's presence right after its Redis
# write): for state the controller mirrors in memory and must see before any SQL or event.
# Each topic's owner wraps watch/changed in typed functions; the value's type is theirs.
Watcher = Callable[[Any], None]


class Published(Protocol):
    """What an event listener sees of an event (core.events.Event)."""

    @property
    def id(self) -> int: ...
    @property
    def type(self) -> str: ...
    @property
    def data(self) -> dict[str, Any]: ...


# Called with each whole event, for state kept in memory from the events themselves (the chat
# assigner's view of dialogs and channels). Same rules as a Listener: quick, never raises.
EventListener = Callable[[Published], None]


class Wakeups:
    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self._watchers: dict[str, list[Watcher]] = {}
        self._event_listeners: list[EventListener] = []

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        self._listeners.remove(listener)

    def notify(self, event_type: str) -> None:
        for listener in self._listeners:
            listener(event_type)

    def watch(self, topic: str, watcher: Watcher) -> None:
        self._watchers.setdefault(topic, []).append(watcher)

    def unwatch(self, topic: str, watcher: Watcher) -> None:
        self._watchers[topic].remove(watcher)

    def changed(self, topic: str, value: Any) -> None:
        for watcher in self._watchers.get(topic, ()):
            watcher(value)

    def add_event_listener(self, listener: EventListener) -> None:
        self._event_listeners.append(listener)

    def remove_event_listener(self, listener: EventListener) -> None:
        self._event_listeners.remove(listener)

    def notify_event(self, event: Published) -> None:
        for listener in self._event_listeners:
            listener(event)
