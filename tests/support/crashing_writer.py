"""A process that writes call records behind calls and dies before its writer commits them:
`python -m tests.support.crashing_writer DATABASE_URL REDIS_URL JOURNAL_FOLDER`.

One call is ended and flushed; then one caller waits in a queue and one talks to an agent,
and the process exits at once (no await after those steps, so the writer never ran). It
prints the three call ids as JSON."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from redis.asyncio import Redis

from acd.agents import register_writes as register_presence_writes
from acd.queue_log import QueueEvent, record
from acd.queue_log import register_writes as register_queue_log_writes
from core.context import ServiceContext
from core.db import create_engine, create_session_factory
from core.events import EventBus
from core.metrics import Metrics
from core.settings import Settings, load_settings
from core.wakeups import Wakeups
from core.write_behind import WriteBehind
from ivr.cdr import CallLog, Direction, Disposition
from ivr.cdr import register_writes as register_call_writes

QUEUE_ID = 77
EMPTY_CONFIG = Path(__file__).parent / "empty-config.toml"


class NoEdge:
    async def drop_registrations(self, username: str) -> None:
        return None


def service_context(settings: Settings, database_url: str, folder: Path) -> ServiceContext:
    """What the service's call path needs to write records behind calls, and nothing else."""
    metrics = Metrics()
    sessions = create_session_factory(create_engine(database_url))
    redis = Redis.from_url(settings.redis_url)
    wakeups = Wakeups()
    events = EventBus(redis, metrics.events_published, wakeups)
    writes = WriteBehind(folder, sessions, events, metrics)
    register_call_writes(writes)
    register_queue_log_writes(writes)
    register_presence_writes(writes)
    return ServiceContext(
        settings=settings,
        sessions=sessions,
        redis=redis,
        events=events,
        wakeups=wakeups,
        metrics=metrics,
        registrations=NoEdge(),
        writes=writes,
    )


async def main(database_url: str, redis_url: str, folder: Path) -> None:
    environ = {"PBX_DATA__DIR": str(folder), "PBX_REDIS__URL": redis_url,
               "PBX_REDIS__MANAGED": "false"}  # fmt: skip
    ctx = service_context(load_settings(EMPTY_CONFIG, environ), database_url, folder)
    writes = ctx.writes
    await writes.start()

    done = CallLog.open(ctx, direction=Direction.INTERNAL, caller="201", called="202", worker_id=0)
    done.add_leg("leg-1", "caller", "sip-1")
    done.answered("202")
    done.ended(Disposition.ANSWERED, "caller")
    await writes.flush()

    waiting = CallLog.open(
        ctx, direction=Direction.INBOUND, caller="4930111", called="4930555", worker_id=1
    )
    waiting.add_leg("leg-2", "caller", "sip-2")
    waiting.system_answered()
    record(ctx, QUEUE_ID, waiting.id, QueueEvent.ENTER, position=1)
    record(ctx, QUEUE_ID, waiting.id, QueueEvent.OFFER, user_id=5, wait_seconds=0.5)

    talking = CallLog.open(
        ctx, direction=Direction.INBOUND, caller="4930222", called="4930555", worker_id=1
    )
    talking.system_answered()
    record(ctx, QUEUE_ID, talking.id, QueueEvent.ENTER, position=2)
    talking.answered("203", 6)
    record(ctx, QUEUE_ID, talking.id, QueueEvent.CONNECT, user_id=6, wait_seconds=1.0)

    print(json.dumps({"done": done.id, "waiting": waiting.id, "talking": talking.id}))
    sys.stdout.flush()
    os._exit(3)  # a crash: no stop(), no flush, no clean-up of any kind


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], Path(sys.argv[3])))
