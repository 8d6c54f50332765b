"""Every node's edge takes calls for the active node's media workers, so that phones and
trunks may use any edge of the cluster. The active node's pool drives its own edge (through
`SharedEdge`), which also writes the worker list to Redis; each standby's `EdgeFollower`
brings its own edge to that list, and ends a dead worker's calls there too. Only with media
hosts: workers on a node die with it, and another edge could not reach them anyway.

The list is one key, written only by a node of the newest term (a Lua check), and a message
on a channel says when it changed; followers also read it every second, so a message lost
while Redis was away costs at most that.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection

import structlog
from pydantic import BaseModel, ValidationError
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from core.context import EdgeUnavailable
from core.metrics import Metrics
from pbx.edge_mirror import EdgeMirror, WorkerEdge
from pbx.kamailio import WorkerSlot

log = structlog.get_logger(__name__)

STATE_KEY = "pbx:cluster:edge"
CHANGES = "pbx:cluster:edge:changes"  # "state", or "end <term> <worker URI>"
FOLLOW_POLL_S = 1.0
REDIS_WAIT_S = 2.0
# A follower told to stop is given this long (a Redis call may swallow a cancellation).
STOP_WAIT_S = 5.0

# Written only when no newer term wrote it: a node stepping down cannot undo its successor.
_WRITE_STATE = """
local current = redis.call('GET', KEYS[1])
if current and cjson.decode(current)['term'] > tonumber(ARGV[2]) then
    return 0
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('PUBLISH', KEYS[2], 'state')
return 1
"""
_REDIS_DOWN = (RedisError, OSError, TimeoutError)


class EdgeState(BaseModel):
    term: int
    slots: list[WorkerSlot]
    ready: list[str]


class SharedEdge:
    """The active node's edge (a WorkerEdge for the pool), its state also written for the
    standbys. Neither Redis nor this node's Kamailio being away holds the other up: the
    standbys get the state the pool wants, the latest once Redis is back."""

    def __init__(self, local: WorkerEdge, redis: Redis, term: int, metrics: Metrics) -> None:
        self._local = local
        self._redis = redis
        self._term = term
        self._metrics = metrics
        # Nothing on until the pool says so: the list of an earlier term goes at once.
        self._state = EdgeState(term=term, slots=[], ready=[])
        self._changed = asyncio.Event()
        self._changed.set()
        self._writer: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._writer = asyncio.create_task(self._write_changes(), name="shared-edge")

    async def stop(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)

    async def install(self, slots: list[WorkerSlot], ready: Collection[str]) -> None:
        self._state = EdgeState(term=self._term, slots=slots, ready=sorted(ready))
        self._changed.set()
        await self._local.install(slots, ready)

    async def set_ready(self, uri: str, ready: bool) -> None:
        now = set(self._state.ready) - {uri} | ({uri} if ready else set())
        self._state = self._state.model_copy(update={"ready": sorted(now)})
        self._changed.set()
        await self._local.set_ready(uri, ready)

    async def end_calls(self, uri: str) -> int:
        try:
            return await self._local.end_calls(uri)
        finally:
            try:
                async with asyncio.timeout(REDIS_WAIT_S):
                    await self._redis.publish(CHANGES, f"end {self._term} {uri}")
            except _REDIS_DOWN as exc:
                # The standbys' edges keep those calls until their far ends or media end them.
                log.warning("shared_edge_end_not_published", worker=uri, error=str(exc))

    async def _write_changes(self) -> None:
        failing = False
        while True:
            await self._changed.wait()
            self._changed.clear()
            try:
                async with asyncio.timeout(REDIS_WAIT_S):
                    written = await self._redis.eval(
                        _WRITE_STATE, 2, STATE_KEY, CHANGES,
                        self._state.model_dump_json(), str(self._term),
                    )  # fmt: skip
            except _REDIS_DOWN as exc:
                if not failing:
                    log.warning("shared_edge_write_failed", error=str(exc))
                failing = True
                self._changed.set()
                await asyncio.sleep(FOLLOW_POLL_S)
                continue
            if failing:
                log.info("shared_edge_write_done")
                failing = False
            if written:
                self._metrics.shared_edge_updates.labels(kind="published").inc()
            else:
                self._metrics.shared_edge_updates.labels(kind="refused").inc()
                log.warning("shared_edge_newer_term", term=self._term)


class EdgeFollower:
    """A standby node's edge, kept to the active node's worker list between start and stop."""

    def __init__(self, local: WorkerEdge, redis: Redis, metrics: Metrics) -> None:
        self._local = local
        self._redis = redis
        self._metrics = metrics
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        # The newest term whose list this edge has (-1: none yet).
        self._term = -1
        self._mirror = EdgeMirror()

    def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._term = -1  # the pool drove the edge meanwhile: install again
            self._task = asyncio.create_task(self._run(), name="edge-follower")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=STOP_WAIT_S)
        if not done:
            log.error("shared_edge_follower_did_not_stop")

    async def _run(self) -> None:
        failing = False
        while not self._stopping:
            try:
                async with self._redis.pubsub() as changes:
                    await changes.subscribe(CHANGES)
                    while not self._stopping:
                        failing = await self._apply(await self._read(), failing)
                        await self._until_changed(changes)
            except _REDIS_DOWN as exc:
                if not failing:
                    log.warning("shared_edge_follow_failed", error=str(exc))
                failing = True
            except Exception:  # whatever it was, this edge must go on following
                log.exception("shared_edge_follow_crashed")
                failing = True
            await asyncio.sleep(FOLLOW_POLL_S)

    async def _apply(self, state: EdgeState | None, failing: bool) -> bool:
        """Bring the edge to `state`; whether it failed (Kamailio refused: the next read
        tries again, as each second), said once."""
        if state is None or state.term < self._term:
            return failing
        if state.term != self._term:
            self._mirror.forget()  # another active node: its own list
            self._term = state.term
        try:
            await self._mirror.bring(self._local, state.slots, state.ready)
        except EdgeUnavailable as exc:
            if not failing:
                log.warning("shared_edge_follow_failed", error=str(exc))
            return True
        self._metrics.shared_edge_updates.labels(kind="applied").inc()
        if failing:
            log.info("shared_edge_follow_done")
        return False

    async def _read(self) -> EdgeState | None:
        async with asyncio.timeout(REDIS_WAIT_S):
            raw = await self._redis.get(STATE_KEY)
        if raw is None:
            return None
        try:
            return EdgeState.model_validate_json(raw)
        except ValidationError:
            log.error("shared_edge_state_unreadable")
            return None

    async def _until_changed(self, changes: PubSub) -> None:
        """Until a state message or FOLLOW_POLL_S; ends a dead worker's calls on the way."""
        message = await changes.get_message(ignore_subscribe_messages=True,
                                            timeout=FOLLOW_POLL_S)  # fmt: skip
        while message is not None:
            data = message["data"]
            words = data.decode(errors="replace").split() if isinstance(data, bytes) else []
            if words == ["state"]:
                return
            if len(words) == 3 and words[0] == "end" and words[1].isdigit():
                await self._end_calls(int(words[1]), words[2])
            message = await changes.get_message(ignore_subscribe_messages=True, timeout=0)

    async def _end_calls(self, term: int, uri: str) -> None:
        if term < self._term:
            return  # a node stepping down: that URI may be its successor's worker now
        try:
            await self._local.end_calls(uri)
        except EdgeUnavailable as exc:
            log.warning("shared_edge_calls_not_ended", worker=uri, error=str(exc))
        else:
            self._metrics.shared_edge_updates.labels(kind="calls_ended").inc()
