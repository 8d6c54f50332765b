"""Background work is woken by events published in the service's own process, and no burst
can take that away (it used to: more than the WebSocket backlog in one burst and the ACD and
chat assignment silently fell back to 1 s polling until a restart)."""

from __future__ import annotations

import asyncio

from aiohttp.test_utils import TestServer

from api.routing import CONTEXT_KEY
from core.background import PassLoop
from tests.support.events import unpersisted_events

BURST = 5000


async def test_after_a_burst_the_next_event_still_wakes_a_pass_loop(
    api_server: TestServer,
) -> None:
    ctx = api_server.app[CONTEXT_KEY]
    started: asyncio.Queue[int] = asyncio.Queue()  # each pass's number as it starts
    burst_over = asyncio.Event()
    passes = 0

    async def run_pass() -> float:
        nonlocal passes
        passes += 1
        started.put_nowait(passes)
        if passes == 1:
            await burst_over.wait()  # busy while the burst is published
        return 60  # within the test's timeouts only a wake-up starts another pass

    async def next_pass() -> int:
        async with asyncio.timeout(5):
            return await started.get()

    # Woken like the ACD dispatcher (which wakes on these as well, harmlessly).
    loop = PassLoop("burst-test", run_pass, wakes_on=lambda kind: kind.startswith("queue_"),
                    retry_s=60)  # fmt: skip
    loop.start(ctx.wakeups)
    try:
        assert await next_pass() == 1
        await ctx.events.publish(*unpersisted_events("queue_burst_test", BURST))
        burst_over.set()
        assert await next_pass() == 2  # the whole burst: one more pass
        await ctx.events.publish(*unpersisted_events("queue_burst_test", 1))
        assert await next_pass() == 3
    finally:
        await loop.stop()
