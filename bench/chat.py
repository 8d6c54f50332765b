"""Chat benchmark: customers post messages at a fixed rate (open loop) to 10 channels while the
service assigns each new dialog to one of 200 ready agents. Prints figures; asserts nothing.

    .venv/bin/python -m bench.chat [--rate 200] [--seconds 20] [--agents 200] [--channels 10]
                                   [--distribution evenly] [--max-open N]

Message -> assigned runs from just before a customer's POST .../inbound to the moment its
dialog's `dialog_assigned` event reaches a Redis subscriber of `pbx:events` (what the
WebSocket stream relays), so it covers HTTP, SQL, the assigner's wake-up and the event's
publication. Posts are sent on a schedule (message i at start + i/rate), each on its own,
whatever the answers to earlier ones: a slow service makes the answers late, never the posts
(open loop; a closed loop of N posters would send less as the service slows down).

The service runs in a child process (`python -m bench.chat serve`: the API without media
workers, its own Redis and SQLite file in a fresh folder, free loopback ports, warning-level
logs), so this process's clients and subscriber take nothing from its CPU. Everything is set
up over the REST API with an admin token. Load: `os.getloadavg()` before and after, and the
service's own CPU (user + system of its process, from /proc) over the posting window.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from redis.asyncio import Redis

from core.events import EVENTS_CHANNEL
from tests.support.ports import free_port

REPO = Path(__file__).resolve().parents[1]
# Set by --profile: the service runs under cProfile and writes its stats there.
PROFILE_ENV = "BENCH_CHAT_PROFILE"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def ms(values: list[float]) -> str:
    if not values:
        return "none"
    return (
        f"p50 {percentile(values, 0.5) * 1000:.1f} ms, p99 {percentile(values, 0.99) * 1000:.1f}"
        f" ms, max {max(values) * 1000:.1f} ms"
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


# -- the service, in its own process -----------------------------------------------------------


def serve() -> None:
    """`python -m bench.chat serve`: the API only, settings from PBX_* variables."""
    import gc

    from aiohttp import web

    from api.app import create_app
    from core.logging import configure_logging
    from core.redis_server import ManagedRedis
    from core.settings import LogSettings, load_settings
    from migrations import upgrade_database

    async def main() -> None:
        settings = load_settings(Path(os.environ["PBX_CONFIG"]), dict(os.environ))
        configure_logging(LogSettings(level="warning"))
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(upgrade_database, settings.database_url)
        redis = ManagedRedis(settings.redis.host, settings.redis.port, settings.data_dir / "redis")
        await redis.start()
        runner = web.AppRunner(create_app(settings, media_workers=False), access_log=None)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            await runner.setup()
            await web.TCPSite(runner, settings.api.host, settings.api.port).start()
            # As `pbx run` does once started (api/cli.py).
            gc.freeze()
            print("serving", flush=True)
            await stop.wait()
        finally:
            await runner.cleanup()
            await redis.stop()

    profile = os.environ.get(PROFILE_ENV)
    if not profile:
        asyncio.run(main())
        return
    import cProfile

    with cProfile.Profile() as profiler:
        asyncio.run(main())
    profiler.dump_stats(profile)


@dataclass
class Service:
    folder: Path
    api_port: int
    redis_port: int
    token: str
    profile: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.api_port}/api/v1"

    def start(self) -> None:
        config = self.folder / "config.toml"
        config.write_text("# every setting comes from PBX_* variables\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PBX_")}
        env.update({
            "PBX_CONFIG": str(config), "PBX_ADMIN_TOKEN": self.token,
            "PBX_DATA__DIR": str(self.folder / "data"), "PBX_API__PORT": str(self.api_port),
            "PBX_REDIS__PORT": str(self.redis_port), "PBX_SIP__RPC_PORT": str(free_port()),
        })  # fmt: skip
        if self.profile is not None:
            env[PROFILE_ENV] = str(self.profile)
        log = (self.folder / "service.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.chat", "serve"], cwd=REPO, env=env,
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    async def wait_ready(self, session: aiohttp.ClientSession) -> None:
        async with asyncio.timeout(60):
            while True:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise RuntimeError((self.folder / "service.log").read_text())
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{self.base}/health") as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.2)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# -- the customers -----------------------------------------------------------------------------


@dataclass
class Figures:
    # dialog id -> perf_counter just before its POST
    sent_at: dict[int, float] = field(default_factory=dict)
    # dialog id -> perf_counter when its dialog_assigned event arrived
    assigned_at: dict[int, float] = field(default_factory=dict)
    post_latency: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    # How late each post left against its schedule (the client's own lag).
    send_lag: list[float] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def all_assigned(self) -> None:
        while any(d not in self.assigned_at for d in self.sent_at):
            self.changed.clear()
            await self.changed.wait()


async def admin_call(
    session: aiohttp.ClientSession, service: Service, method: str, path: str, body: Any = None
) -> Any:
    headers = {"Authorization": f"Bearer {service.token}"}
    async with session.request(method, service.base + path, json=body, headers=headers) as r:
        if r.status >= 300:
            raise RuntimeError(f"{method} {path}: {r.status} {await r.text()}")
        return await r.json()


async def set_up(
    session: aiohttp.ClientSession, service: Service, agents: int, channels: int,
    distribution: str, max_open: int | None,
) -> list[dict[str, Any]]:  # fmt: skip
    team = []
    for i in range(agents):
        user = await admin_call(session, service, "POST", "/users", {"name": f"Agent {i}"})
        await admin_call(session, service, "PUT", f"/users/{user['id']}/presence",
                         {"status": "ready"})  # fmt: skip
        team.append(user["id"])
    per_channel = agents // channels
    return [
        await admin_call(session, service, "POST", "/channels", {
            "name": f"Bench {c}", "members": team[c * per_channel:(c + 1) * per_channel],
            "distribution": distribution, "max_open_dialogs": max_open,
        })
        for c in range(channels)
    ]  # fmt: skip


async def watch_assignments(redis: Redis, figures: Figures, ready: asyncio.Event) -> None:
    pubsub = redis.pubsub()
    await pubsub.subscribe(EVENTS_CHANNEL)
    ready.set()
    try:
        async for item in pubsub.listen():
            if item["type"] != "message":
                continue
            arrived = time.perf_counter()
            envelope = json.loads(item["data"])
            if envelope["type"] == "dialog_assigned":
                figures.assigned_at.setdefault(envelope["data"]["id"], arrived)
                figures.changed.set()
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]


async def post_messages(
    session: aiohttp.ClientSession, service: Service, channels: list[dict[str, Any]],
    rate: float, seconds: float, figures: Figures, run: str,
) -> None:  # fmt: skip
    count = int(rate * seconds)
    posts: set[asyncio.Task[None]] = set()

    async def post(n: int, due: float) -> None:
        channel = channels[n % len(channels)]
        started = time.perf_counter()
        figures.send_lag.append(started - due)
        try:
            async with session.post(
                f"{service.base}/channels/{channel['id']}/inbound",
                json={"customer": {"id": f"{run}-customer-{n}"}, "text": "hello"},
                headers={"X-Channel-Secret": channel["inbound_secret"]},
            ) as response:
                body = await response.json()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            figures.statuses[type(exc).__name__] += 1
            return
        figures.post_latency.append(time.perf_counter() - started)
        figures.statuses[str(status)] += 1
        if 200 <= status < 300:
            figures.sent_at[body["dialog_id"]] = started

    began = time.perf_counter()
    for n in range(count):
        due = began + n / rate
        wait = due - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        task = asyncio.create_task(post(n, due))
        posts.add(task)
        task.add_done_callback(posts.discard)
    if posts:
        await asyncio.gather(*posts)


async def run(args: argparse.Namespace) -> None:
    folder = Path(tempfile.mkdtemp(prefix="pbx-bench-chat-"))
    service = Service(folder, free_port(), free_port(), "bench-" + secrets.token_urlsafe(24),
                      profile=args.profile)  # fmt: skip
    load_before = os.getloadavg()
    service.start()
    redis = Redis(host="127.0.0.1", port=service.redis_port)
    # No pool limit: an open loop must never queue its own posts behind a connection cap.
    connector = aiohttp.TCPConnector(limit=0)
    try:
        async with aiohttp.ClientSession(connector=connector) as session:
            await service.wait_ready(session)
            channels = await set_up(session, service, args.agents, args.channels,
                                    args.distribution, args.max_open)  # fmt: skip
            figures = Figures()
            subscribed = asyncio.Event()
            watcher = asyncio.create_task(watch_assignments(redis, figures, subscribed))
            await subscribed.wait()
            # A short warm-up at the same rate, not counted (imports, caches, connections).
            await post_messages(session, service, channels, args.rate, args.warmup,
                                Figures(), "warmup")  # fmt: skip
            await asyncio.sleep(1)
            assert service.process is not None
            print(f"posting for {args.seconds:g} s (service pid {service.process.pid})",
                  flush=True)  # fmt: skip
            cpu_before = cpu_seconds(service.process.pid)
            began = time.perf_counter()
            await post_messages(session, service, channels, args.rate, args.seconds, figures,
                                "run")  # fmt: skip
            posted = time.perf_counter()
            cpu = cpu_seconds(service.process.pid) - cpu_before
            # The last assignments may still be on their way.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(figures.all_assigned(), timeout=30)
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
    finally:
        await redis.aclose()
        service.stop()
    load_after = os.getloadavg()
    latency = [figures.assigned_at[d] - figures.sent_at[d] for d in figures.sent_at
               if d in figures.assigned_at]  # fmt: skip
    accepted = len(figures.sent_at)
    answers = sum(figures.statuses.values())
    not_2xx = {k: v for k, v in figures.statuses.items() if not k.startswith("2")}
    print(f"agents {args.agents}, channels {args.channels} ({args.distribution}), "
          f"rate {args.rate:g} msg/s for {args.seconds:g} s, {os.cpu_count()} CPUs")  # fmt: skip
    print(f"posted                {answers} in {posted - began:.2f} s "
          f"= {answers / (posted - began):.0f} msg/s; send lag {ms(figures.send_lag)}")  # fmt: skip
    print(f"answers               2xx {accepted}, not 2xx {sum(not_2xx.values())} "
          f"{dict(sorted(not_2xx.items()))}")  # fmt: skip
    print(f"assigned              {len(latency)} of {accepted}")
    print(f"message -> assigned   {ms(latency)}")
    print(f"inbound POST          {ms(figures.post_latency)}")
    print(f"service CPU           {cpu / (posted - began) * 100:.0f} % of one core while posting")
    print("load average          before {:.2f} {:.2f} {:.2f}, after {:.2f} {:.2f} {:.2f}".format(
        *load_before, *load_after))  # fmt: skip
    print(f"service folder        {folder}")


def main() -> None:
    if sys.argv[1:2] == ["serve"]:
        serve()
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--rate", type=float, default=200, help="messages per second")
    parser.add_argument("--seconds", type=float, default=20, help="how long to post")
    parser.add_argument("--warmup", type=float, default=2, help="seconds posted first, uncounted")
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--channels", type=int, default=10)
    parser.add_argument("--distribution", default="evenly",
                        choices=["evenly", "in_order"])  # fmt: skip
    parser.add_argument("--max-open", type=int, default=None, help="channel max_open_dialogs")
    parser.add_argument("--profile", type=Path, default=None,
                        help="run the service under cProfile, stats to this file")  # fmt: skip
    args = parser.parse_args()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
