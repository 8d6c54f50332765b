"""ACD benchmark. Prints figures; asserts nothing.

    .venv/bin/python -m bench.acd [--agents 50] [--callers 200] [--fair-calls 1000]
                                  [--ready-runs 30]

1. Agent becomes ready -> INVITE to their phone for the longest waiting caller (p50/p99): a SIPp
   caller waits in a queue through the real edge and a media worker; a registered PJSUA2 phone's
   user turns ready; the time until the phone sees the INVITE.
2. Calls distributed per second: `--callers` waiting callers and `--agents` agents in one
   queue, offers claimed through Redis by the service's own dispatcher, each agent answering
   at once (the dispatcher and presence are real; the calls are not, so this is the ACD's own
   ceiling, not the media's).
3. Fairness of `evenly`: `--fair-calls` calls over the agents, the spread of calls per agent.

Everything runs on 127.0.0.1 with free ports and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
from collections import Counter
from pathlib import Path

from aiohttp.test_utils import TestServer

from acd import agents
from acd.dispatcher import Dispatcher, Entry
from acd.presence import Presence, answered, call_ended
from acd.queues import QueueSpec, create_queue
from acd.strategies import Strategy
from api.app import create_app
from api.routing import CONTEXT_KEY, CONTROLLER_KEY
from bench.calls import percentile
from bench.service import bench_settings
from core.context import ServiceContext
from core.redis_server import ManagedRedis
from destinations.destination import QueueDestination
from extensions.phones import assign_extension
from extensions.roles import Role
from extensions.users import create_user
from ivr.numbers import NumberSpec, create_number
from migrations import upgrade_database
from pbx.kamailio import KamailioProcess
from tests.support.phone import TestPhone
from tests.support.sipp import call_number

COMPANY_NUMBER = "4930123999"


async def new_agent(ctx: ServiceContext, name: str, extension: str) -> tuple[int, str]:
    user = await create_user(ctx, name=name, email=None, role=Role.OPERATOR)
    account = await assign_extension(ctx, user.id, extension)
    assert account.password is not None
    return user.id, account.password


async def ready_to_invite(ctx: ServiceContext, dispatcher: Dispatcher, folder: Path,
                          runs: int) -> list[float]:  # fmt: skip
    sip = ctx.settings.sip
    user_id, password = await new_agent(ctx, "Ready Agent", "1999")
    phone = TestPhone(auto_answer=200)
    assert await phone.register("1999", password, sip.domain, sip.host, sip.port) == 200
    queue = await create_queue(ctx, QueueSpec(name="Ready bench", members=(user_id,),
                                              wrap_up_time=0, announce_interval=0))  # fmt: skip
    await create_number(ctx, NumberSpec(
        number=COMPANY_NUMBER, name="", greeting_text="Hi.", greeting_prompt_id=None,
        extension_dialing=False, default_destination=QueueDestination(id=queue.id),
        no_answer_destination=None,
    ))  # fmt: skip
    latencies = []
    for run in range(runs):
        await agents.choose(ctx, user_id, "not_ready", reason="break", message=None, by="bench")
        caller = asyncio.create_task(call_number(folder, sip.port, COMPANY_NUMBER, stay_s=2.0))
        async with asyncio.timeout(10):
            while not dispatcher.waiting(queue.id):  # noqa: ASYNC110  (polls the service)
                await asyncio.sleep(0.005)
        started = time.perf_counter()
        await agents.choose(ctx, user_id, "ready", reason=None, message=None, by="bench")
        await phone.next_incoming(timeout=10)
        latencies.append(time.perf_counter() - started)
        assert (await caller).succeeded, f"run {run}: the SIPp caller failed"
        async with asyncio.timeout(10):
            while not (await agents.store(ctx).get(user_id)).takes_acd_work:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
    phone.close()
    return latencies


async def distribute(
    ctx: ServiceContext, dispatcher: Dispatcher, queue_id: int, callers: int
) -> tuple[float, list[float], Counter[int]]:
    """`callers` wait at once; every agent answers each offer at once. Returns the elapsed
    time, each caller's wait until its offer, and the calls per agent."""
    waits: list[float] = []
    per_agent: Counter[int] = Counter()

    async def caller(entry: Entry) -> None:
        offer = await entry.offers.get()
        waits.append(entry.waited())
        agent = offer.agents[0].user_id
        per_agent[agent] += 1
        await agents.change_presence(ctx, agent, answered, "bench")
        await dispatcher.leave(entry)
        await agents.change_presence(
            ctx, agent, lambda p: call_ended(p, acd=True, wrap_up_seconds=0, now=0.0), "bench"
        )

    started = time.perf_counter()
    entries = [dispatcher.join(queue_id, 1_000_000 + i) for i in range(callers)]
    await asyncio.gather(*(caller(entry) for entry in entries))
    return time.perf_counter() - started, waits, per_agent


async def run(agent_count: int, callers: int, fair_calls: int, ready_runs: int) -> None:
    settings = bench_settings("pbx-bench-acd-", 2)
    folder = settings.data_dir.parent  # SIPp scenarios and traces go next to the data
    await asyncio.to_thread(upgrade_database, settings.database_url)
    redis = ManagedRedis(settings.redis.host, settings.redis.port, settings.data_dir / "redis")
    kamailio = KamailioProcess(settings)
    server = TestServer(create_app(settings), host="127.0.0.1", port=settings.api.port)
    await redis.start()
    try:
        await kamailio.start()
        await server.start_server()
        ctx = server.app[CONTEXT_KEY]
        dispatcher = server.app[CONTROLLER_KEY].dispatcher

        print(f"1. agent ready -> INVITE to the phone, {ready_runs} runs ...", flush=True)
        latencies = await ready_to_invite(ctx, dispatcher, folder, ready_runs)
        print(f"   p50 {percentile(latencies, 0.5) * 1000:.1f} ms, "
              f"p99 {percentile(latencies, 0.99) * 1000:.1f} ms")  # fmt: skip

        team = []
        for i in range(agent_count):
            user_id, _ = await new_agent(ctx, f"Bench Agent {i}", str(3000 + i))
            await agents.choose(ctx, user_id, "ready", reason=None, message=None, by="bench")
            team.append(user_id)
        spec = QueueSpec(name="Distribution bench", members=tuple(team),
                         strategy=Strategy.EVENLY, wrap_up_time=0)  # fmt: skip
        queue = await create_queue(ctx, spec)

        print(f"2. {callers} waiting callers, {agent_count} agents ...", flush=True)
        elapsed, waits, _ = await distribute(ctx, dispatcher, queue.id, callers)
        print(f"   {callers / elapsed:.0f} calls distributed/s; wait for an offer "
              f"p50 {percentile(waits, 0.5) * 1000:.0f} ms, "
              f"p99 {percentile(waits, 0.99) * 1000:.0f} ms")  # fmt: skip

        print(f"3. fairness of evenly over {fair_calls} calls ...", flush=True)
        total: Counter[int] = Counter()
        for start in range(0, fair_calls, callers):
            _, _, per_agent = await distribute(
                ctx, dispatcher, queue.id, min(callers, fair_calls - start)
            )
            total.update(per_agent)
        counts = [total.get(agent, 0) for agent in team]
        spread = f"mean {statistics.mean(counts):.1f}, stdev {statistics.pstdev(counts):.2f}"
        print(f"   calls per agent: min {min(counts)}, max {max(counts)}, {spread}")
        for user_id in team:
            await agents.change_presence(ctx, user_id, lambda _p: Presence(), "bench over")
    finally:
        with contextlib.suppress(Exception):
            await server.close()
        await kamailio.stop()
        await redis.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--callers", type=int, default=200)
    parser.add_argument("--fair-calls", type=int, default=1000)
    parser.add_argument("--ready-runs", type=int, default=30)
    args = parser.parse_args()
    asyncio.run(run(args.agents, args.callers, args.fair_calls, args.ready_runs))


if __name__ == "__main__":
    main()
