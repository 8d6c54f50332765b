"""The plumbing the API and the controller share, opened and closed in one place: the SQL
engine, Redis, the event bus, the write-behind journal and the edge's control client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from redis.asyncio import BlockingConnectionPool, Redis

from acd.agents import register_writes as register_presence_writes
from acd.queue_log import register_writes as register_queue_log_writes
from core.context import PhoneRegistrations, ServiceContext
from core.db import create_engine, create_session_factory
from core.events import EventBus
from core.metrics import Metrics
from core.settings import MAX_NODES, Settings
from core.wakeups import Wakeups
from core.write_behind import WriteBehind
from flows.call_recovery import close_interrupted_calls
from ivr.cdr import register_writes as register_call_writes
from pbx.kamailio import KamailioRpc

# Under the data folder: the journal of call records and queue-log rows not yet in SQL.
WRITE_BEHIND_FOLDER = "write-behind"
# Connections to Redis at most, and how long a command waits for one when all are in use.
REDIS_CONNECTIONS = 100
REDIS_CONNECTION_WAIT_S = 5.0


@dataclass(frozen=True)
class Plumbing:
    ctx: ServiceContext
    edge: KamailioRpc


@asynccontextmanager
async def open_plumbing(
    settings: Settings, metrics: Metrics, registrations: PhoneRegistrations | None = None
) -> AsyncIterator[Plumbing]:
    """Before anything runs: what the last run journaled goes to SQL, and the calls it left
    open are closed as failed. On the way out the journal is committed after every producer
    of rows has stopped (the caller's job), before Redis and the engine close."""
    engine = create_engine(settings.database_url)
    sessions = create_session_factory(engine)
    # Blocking: a burst (hundreds of callers and agents at once) may want more connections
    # than the pool holds; the excess waits for one instead of failing (MaxConnectionsError).
    redis = Redis.from_pool(BlockingConnectionPool.from_url(
        settings.redis_url, max_connections=REDIS_CONNECTIONS, timeout=REDIS_CONNECTION_WAIT_S,
    ))  # fmt: skip
    edge = KamailioRpc("127.0.0.1", settings.sip.rpc_port)
    wakeups = Wakeups()
    events = EventBus(redis, metrics.events_published, wakeups)
    cluster = settings.cluster
    writes = WriteBehind(
        settings.data_dir / WRITE_BEHIND_FOLDER, sessions, events, metrics,
        # A cluster's nodes share the database: each hands out ids of its own residue.
        id_stride=MAX_NODES if cluster.node else 1, id_residue=cluster.node_index,
    )  # fmt: skip
    register_call_writes(writes)
    register_queue_log_writes(writes)
    register_presence_writes(writes)
    ctx = ServiceContext(
        settings=settings, sessions=sessions, redis=redis, events=events, wakeups=wakeups,
        metrics=metrics, registrations=registrations or edge, writes=writes,
    )  # fmt: skip
    try:
        await writes.start()
        if not cluster.node:  # in a cluster, the node taking over does it (controller.seat)
            await close_interrupted_calls(ctx)
        yield Plumbing(ctx, edge)
    finally:
        await writes.stop()
        await edge.close()
        await redis.aclose()
        await sessions.dispose()
        await engine.dispose()
