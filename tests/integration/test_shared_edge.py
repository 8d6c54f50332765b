"""The worker list shared between a cluster's edges (controller.shared_edge) through the real
Redis: a standby's edge follows what the active node's pool tells its own, a dead worker's
calls end there too, a node of an older term can neither overwrite its successor's list nor
end calls there, and a new active node's list replaces the old one at once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis

from controller.shared_edge import STATE_KEY, EdgeFollower, EdgeState, SharedEdge
from core.metrics import Metrics
from core.redis_server import ManagedRedis
from core.settings import Settings
from pbx.kamailio import WorkerSlot
from pbx.memory_worker import MemoryEdge

pytestmark = pytest.mark.no_sql

A, B, C = (WorkerSlot(f"sip:10.0.0.4:{port}", f"w{port}", 8) for port in (6000, 6001, 6002))


@pytest.fixture
async def redis(settings: Settings, redis_server: ManagedRedis) -> AsyncIterator[Redis]:
    client = Redis.from_url(settings.redis_url)
    await client.delete(STATE_KEY)
    yield client
    await client.delete(STATE_KEY)
    await client.aclose()


@contextlib.asynccontextmanager
async def following(redis: Redis) -> AsyncIterator[MemoryEdge]:
    """A standby's edge, followed inside the block."""
    edge = MemoryEdge()
    follower = EdgeFollower(edge, redis, Metrics())
    follower.start()
    try:
        yield edge
    finally:
        await follower.stop()


@pytest.fixture
async def standby(redis: Redis) -> AsyncIterator[MemoryEdge]:
    async with following(redis) as edge:
        yield edge


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not condition():
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def active(redis: Redis, term: int) -> AsyncIterator[tuple[SharedEdge, MemoryEdge, Metrics]]:
    """An active node's edge of `term`, writing its list inside the block."""
    own, metrics = MemoryEdge(), Metrics()
    shared = SharedEdge(own, redis, term, metrics)
    shared.start()
    try:
        yield shared, own, metrics
    finally:
        await shared.stop()


def updates(metrics: Metrics, kind: str) -> float:
    return metrics.shared_edge_updates.labels(kind=kind)._value.get()


async def test_a_standby_edge_follows_the_active_nodes_list(
    redis: Redis, standby: MemoryEdge
) -> None:
    async with active(redis, term=1) as (shared, own, _):
        await shared.install([A, B], ready=[A.uri])
        await until(lambda: standby.slots == [A, B] and standby.ready == {A.uri})
        await shared.set_ready(B.uri, True)
        await shared.set_ready(A.uri, False)
        await until(lambda: standby.ready == {B.uri})
        assert (own.ready, standby.installs) == ({B.uri}, 1), "one slot at a time, no reload"
        await shared.end_calls(A.uri)
        await until(lambda: standby.calls_ended_for == [A.uri])
        assert own.calls_ended_for == [A.uri]


async def test_a_newer_term_replaces_the_list_and_an_older_one_cannot_write(
    redis: Redis, standby: MemoryEdge
) -> None:
    async with active(redis, term=4) as (old, _, old_metrics):
        await old.install([A, B], ready=[A.uri, B.uri])
        await until(lambda: standby.ready == {A.uri, B.uri})
        async with active(redis, term=5) as (new, _, _):  # a takeover
            await new.install([A, B, C], ready=[C.uri])  # its own workers
            await until(lambda: standby.ready == {C.uri} and len(standby.slots) == 3)
            await old.set_ready(C.uri, True)  # the replaced node still talks
            await until(lambda: updates(old_metrics, "refused") == 1)
            written = EdgeState.model_validate_json(await redis.get(STATE_KEY) or b"")
            assert (written.term, written.ready) == (5, [C.uri])
            await new.set_ready(B.uri, True)
            await until(lambda: standby.ready == {B.uri, C.uri})


async def test_a_standby_started_later_takes_the_list_as_it_is(redis: Redis) -> None:
    async with active(redis, term=2) as (shared, _, _):
        await shared.install([A, B], ready=[B.uri])
        async with following(redis) as late:
            await until(lambda: late.slots == [A, B] and late.ready == {B.uri})


async def test_a_new_active_node_clears_the_old_list_before_its_workers_are_up(
    redis: Redis, standby: MemoryEdge
) -> None:
    async with active(redis, term=6) as (old, _, _):
        await old.install([A, B], ready=[A.uri, B.uri])
        await until(lambda: standby.ready == {A.uri, B.uri})
    # its node died
    async with active(redis, term=7):
        await until(lambda: not standby.slots and not standby.ready)


async def test_a_replaced_node_cannot_end_calls_on_its_successors_worker(
    redis: Redis, standby: MemoryEdge
) -> None:
    async with active(redis, term=8) as (old, _, _), active(redis, term=9) as (new, _, _):
        await new.install([A], ready=[A.uri])
        await until(lambda: standby.ready == {A.uri})
        await old.end_calls(A.uri)  # its link to the host was replaced: "its" worker died
        await new.end_calls(B.uri)
        await until(lambda: standby.calls_ended_for == [B.uri])
