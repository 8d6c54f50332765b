"""Each queue caller's place, kept in Redis while workers run on media hosts: from the moment
they join a queue until their call ends, through the talk with the agent who answered.

When the active controller dies, its media hosts keep the callers who were waiting and the
talks that were bridged (pbx worker Detach), and the next active controller takes their
workers over (pbx.pool adopts them). It finds here which queue each caller was in, since
when, with which priority and under which call record, and puts them back in line where they
were; or which agent they talk to, to record the talk's end as if nothing had happened
(flows.calls.adopted). The records of these calls stay open at the takeover
(flows.call_recovery); any not claimed within ADOPTION_WINDOW_S are closed then as
interrupted.
"""

from __future__ import annotations

import structlog
from pydantic import BaseModel, ConfigDict, ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError

log = structlog.get_logger(__name__)

PLACES_KEY = "pbx:acd:places"
# How long after a takeover a caller's place waits for their worker to be taken over: media
# hosts link within a second or two of the new controller's start, or after a few relink
# tries (up to 5 s apart) when the network hiccups.
ADOPTION_WINDOW_S = 30.0


class QueuePlace(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    call_id: int
    queue_id: int
    priority: int
    entered_at: float  # epoch seconds, as acd.dispatcher.Entry
    number_records: bool
    # Once an agent answered: who, their wrap-up after the call, and since when they talk.
    agent_user_id: int | None = None
    wrap_up_seconds: float = 0.0
    talk_started_at: float | None = None


class QueuePlaces:
    """The places of this controller's callers (`enabled`: with media hosts; without, the
    workers die with the controller and nobody could wait on), and those the last active
    controller left (take_left, then claim)."""

    def __init__(self, redis: Redis, *, enabled: bool) -> None:
        self._redis = redis
        self.enabled = enabled
        self._left: dict[str, QueuePlace] = {}
        # Legs whose places were given up (unclaimed): their calls were closed, their agents
        # freed; a worker holding them that is taken over later must not carry them on.
        self._given_up: set[str] = set()

    async def keep(self, leg_id: str, place: QueuePlace) -> None:
        """Best effort: Redis failing costs the caller their place after a takeover, never
        their call."""
        if self.enabled:
            try:
                await self._redis.hset(PLACES_KEY, leg_id, place.model_dump_json())
            except RedisError as exc:
                log.warning("queue_place_not_kept", leg=leg_id, error=str(exc))

    async def forget(self, *leg_ids: str) -> None:
        if self.enabled and leg_ids:
            try:
                await self._redis.hdel(PLACES_KEY, *leg_ids)
            except RedisError as exc:
                log.warning("queue_place_not_forgotten", legs=list(leg_ids), error=str(exc))

    async def take_left(self) -> list[QueuePlace]:
        """The places the last controller left. They stay in Redis until their caller's call
        ends or they are given up (unclaimed): a takeover that fails leaves them to the
        next."""
        if not self.enabled:
            return []
        self._left = _parse(await self._redis.hgetall(PLACES_KEY))
        if self._left:
            log.info("queue_places_left", callers=len(self._left))
        return list(self._left.values())

    def claim(self, leg_id: str) -> QueuePlace | None:
        """The place of a caller whose worker was taken over, once."""
        return self._left.pop(leg_id, None)

    def given_up(self, leg_id: str) -> bool:
        return leg_id in self._given_up

    def unclaimed(self) -> dict[str, QueuePlace]:
        """The places of callers not taken over, by leg: given up from now on (forget them
        once their calls are closed)."""
        left, self._left = self._left, {}
        self._given_up.update(left)
        return left


async def kept_calls(redis: Redis) -> set[int]:
    """The call records whose callers may be taken over (left open at a takeover)."""
    return {place.call_id for place in _parse(await redis.hgetall(PLACES_KEY)).values()}


def _parse(found: dict[bytes | str, bytes | str]) -> dict[str, QueuePlace]:
    places = {}
    for leg_id, text in found.items():
        key = leg_id.decode() if isinstance(leg_id, bytes) else leg_id
        try:
            places[key] = QueuePlace.model_validate_json(text)
        except ValidationError:
            log.warning("queue_place_unreadable", leg=key)
    return places
