"""The small set of collaborators every service function gets, passed explicitly."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis

from core.db import SessionFactory
from core.events import EventBus
from core.metrics import Metrics
from core.settings import Settings
from core.wakeups import Wakeups
from core.write_behind import WriteBehind


class EdgeUnavailable(Exception):
    """The SIP edge did not answer a control request."""


class PhoneRegistrations(Protocol):
    """The SIP edge's registration table (Kamailio's usrloc); raises EdgeUnavailable."""

    async def drop_registrations(self, username: str) -> None: ...


class PhoneContacts(Protocol):
    """Where the edge reaches a phone: the Contacts registered for an extension (Kamailio's
    usrloc); raises EdgeUnavailable."""

    async def registered_contacts(self, username: str) -> list[str]: ...


@dataclass(frozen=True)
class ServiceContext:
    settings: Settings
    sessions: SessionFactory
    redis: Redis
    events: EventBus
    # The same Wakeups the EventBus notifies: background work listens here for event types.
    wakeups: Wakeups
    metrics: Metrics
    registrations: PhoneRegistrations
    # Call records and queue-log rows: journaled and committed in batches, never awaited.
    writes: WriteBehind
