"""Chat benchmark: customers post messages to 10 channels over HTTP while the service assigns
the new dialogs to 200 ready agents. Prints figures; asserts nothing.

    .venv/bin/python -m bench.chat [--messages 2000] [--concurrency 20] [--agents 200]
                                   [--channels 10] [--postgresql]

Assignment latency runs from just before the inbound POST to the moment its dialog_assigned
event reaches a Redis subscriber, so it covers HTTP, SQL, the assigner's wake-up and the
event publication. Everything runs on 127.0.0.1 (API only, its own Redis and SQLite file;
with --postgresql a PostgreSQL server of its own instead, fsync on, as tests/support starts).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from acd import agents
from api.app import create_app
from api.routing import CONTEXT_KEY
from chat.assignment import Distribution
from chat.channels import ChannelSpec, create_channel
from core.events import EVENTS_CHANNEL
from core.logging import configure_logging
from core.redis_server import ManagedRedis
from core.settings import LogSettings, load_settings
from extensions.roles import Role
from extensions.users import create_user
from migrations import upgrade_database
from tests.support.ports import free_port
from tests.support.postgres import PostgresServer


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def run(
    messages: int, concurrency: int, agent_count: int, channel_count: int, database_url: str = ""
) -> None:
    folder = Path(tempfile.mkdtemp(prefix="pbx-bench-chat-"))
    api_port = free_port()
    environ = {
        "PBX_DATA__DIR": str(folder / "data"),
        "PBX_REDIS__PORT": str(free_port()),
        "PBX_SIP__RPC_PORT": str(free_port()),
        "PBX_API__PORT": str(api_port),
        "PBX_DATABASE__URL": database_url,
    }
    config = folder / "config.toml"
    config.write_text("# every setting comes from PBX_* variables\n")
    settings = load_settings(config, environ)
    configure_logging(LogSettings(level="warning"))
    settings.data_dir.mkdir(parents=True)
    await asyncio.to_thread(upgrade_database, settings.database_url)
    redis = ManagedRedis(settings.redis.host, settings.redis.port, settings.data_dir / "redis")
    app = create_app(settings, media_workers=False)
    runner = web.AppRunner(app, access_log=None)
    await redis.start()
    try:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", api_port).start()
        ctx = app[CONTEXT_KEY]
        team = []
        for i in range(agent_count):
            user = await create_user(ctx, name=f"Agent {i}", email=None, role=Role.OPERATOR)
            await agents.choose(ctx, user.id, "ready", reason=None, message=None, by="bench")
            team.append(user.id)
        per_channel = agent_count // channel_count
        channels = [
            await create_channel(ctx, ChannelSpec(
                name=f"Bench {c}", members=tuple(team[c * per_channel:(c + 1) * per_channel]),
                distribution=Distribution.EVENLY,
            ))
            for c in range(channel_count)
        ]  # fmt: skip

        sent_at: dict[int, float] = {}
        assigned_at: dict[int, float] = {}
        all_assigned = asyncio.Event()
        pubsub = ctx.redis.pubsub()
        await pubsub.subscribe(EVENTS_CHANNEL)

        async def watch() -> None:
            async for item in pubsub.listen():
                if item["type"] != "message":
                    continue
                envelope = json.loads(item["data"])
                if envelope["type"] == "dialog_assigned":
                    assigned_at.setdefault(envelope["data"]["id"], time.perf_counter())
                    if len(assigned_at) >= messages:
                        all_assigned.set()

        watcher = asyncio.create_task(watch())
        base = f"http://127.0.0.1:{api_port}/api/v1"
        http_latency: list[float] = []
        failures = 0
        queue: asyncio.Queue[int] = asyncio.Queue()
        for n in range(messages):
            queue.put_nowait(n)

        async def customer(session: aiohttp.ClientSession) -> None:
            nonlocal failures
            while not queue.empty():
                n = queue.get_nowait()
                channel = channels[n % channel_count]
                started = time.perf_counter()
                async with session.post(
                    f"{base}/channels/{channel.id}/inbound",
                    json={"customer": {"id": f"customer-{n}"}, "text": "hello"},
                    headers={"X-Channel-Secret": channel.secret},
                ) as response:
                    body = await response.json()
                http_latency.append(time.perf_counter() - started)
                if response.status != 201:
                    failures += 1
                    continue
                sent_at[body["dialog_id"]] = started

        began = time.perf_counter()
        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*(customer(session) for _ in range(concurrency)))
        posted = time.perf_counter()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_assigned.wait(), timeout=60)
        finished = max(assigned_at.values(), default=posted)
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await pubsub.aclose()  # type: ignore[no-untyped-call]

        latency = [assigned_at[d] - sent_at[d] for d in sent_at if d in assigned_at]
        print(f"agents {agent_count}, channels {channel_count}, messages {messages}, "
              f"concurrency {concurrency}")  # fmt: skip
        print(f"inbound accepted      {len(sent_at)} ({failures} failed) in {posted - began:.2f} s "
              f"= {len(sent_at) / (posted - began):.0f} msg/s")  # fmt: skip
        print(f"dialogs assigned      {len(latency)} in {finished - began:.2f} s "
              f"= {len(latency) / (finished - began):.0f} msg/s")  # fmt: skip
        if latency:
            print(f"assignment latency    p50 {percentile(latency, 0.5) * 1000:.1f} ms, "
                  f"p99 {percentile(latency, 0.99) * 1000:.1f} ms, "
                  f"mean {statistics.mean(latency) * 1000:.1f} ms")  # fmt: skip
        print(f"inbound POST latency  p50 {percentile(http_latency, 0.5) * 1000:.1f} ms, "
              f"p99 {percentile(http_latency, 0.99) * 1000:.1f} ms")  # fmt: skip
    finally:
        await runner.cleanup()
        await redis.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=20, help="customers posting at once")
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--channels", type=int, default=10)
    parser.add_argument("--postgresql", action="store_true", help="on PostgreSQL, not SQLite")
    args = parser.parse_args()
    server = PostgresServer(durable=True) if args.postgresql else None
    try:
        url = ""
        if server is not None:
            server.start()
            url = server.new_database()
        asyncio.run(run(args.messages, args.concurrency, args.agents, args.channels, url))
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
