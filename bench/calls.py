"""Calls benchmark: SIPp callers ring a company number, dial an extension during the greeting,
talk to an auto-answering phone (a SIPp UAS) and hang up. Prints figures; asserts nothing.

    .venv/bin/python -m bench.calls [--rate 4] [--calls 60] [--talk 3] [--workers 10]
                                    [--greeting-callers 30]

Then, with --greeting-callers N: N callers arrive within a moment and stay in the greeting;
how many the service answers at once is its capacity for callers in the greeting.

Everything runs on 127.0.0.1 with free ports and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import statistics
import time
from pathlib import Path

from aiohttp import web
from prometheus_client import Histogram

from api.app import create_app
from api.routing import CONTEXT_KEY, CONTROLLER_KEY
from bench.service import bench_settings
from core.redis_server import ManagedRedis
from destinations.destination import HangupDestination
from extensions.phones import assign_extension
from extensions.roles import Role
from extensions.users import create_user
from ivr.numbers import NumberSpec, create_number
from migrations import upgrade_database
from pbx.kamailio import KamailioProcess, KamailioRpc
from tests.support.ports import free_port, sipp_media_port
from tests.support.sipp import render_caller_scenario

COMPANY_NUMBER = "4930123000"
EXTENSION = "1001"
# Callers per second when measuring the greeting's capacity: all in before the first leaves.
GREETING_RATE = 50.0


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def run(rate: float, calls: int, talk_s: float, workers: int, greeting_callers: int) -> None:
    settings = bench_settings("pbx-bench-", workers, PBX_CALLS__INTER_DIGIT_TIMEOUT="1.0")
    folder = settings.data_dir.parent  # SIPp scenarios and traces go next to the data
    await asyncio.to_thread(upgrade_database, settings.database_url)
    redis = ManagedRedis(settings.redis.host, settings.redis.port, settings.data_dir / "redis")
    kamailio = KamailioProcess(settings)
    runner = web.AppRunner(create_app(settings))
    uas: asyncio.subprocess.Process | None = None
    await redis.start()
    try:
        await kamailio.start()
        started = time.monotonic()
        await runner.setup()
        print(f"workers up: {workers} in {time.monotonic() - started:.1f} s")
        ctx = runner.app[CONTEXT_KEY]
        agent = await create_user(ctx, name="Bench Agent", email=None, role=Role.OPERATOR)
        await assign_extension(ctx, agent.id, EXTENSION)
        await create_number(
            ctx,
            NumberSpec(
                number=COMPANY_NUMBER, name="bench", greeting_text="Welcome to the benchmark.",
                greeting_prompt_id=None,
                extension_dialing=True, default_destination=HangupDestination(),
                no_answer_destination=None,
            ),
        )  # fmt: skip
        # The desk phone: a SIPp UAS that answers everything, put in the location table.
        # (SIPp's built-in uas drops Record-Route and answers the edge instead of the Via,
        # so a worker's BYE went unanswered and held its leg for the 32 s transaction.)
        uas_port = free_port()
        desk_phone = Path(__file__).with_name("desk_phone_uas.xml")
        uas = await asyncio.create_subprocess_exec(
            "sipp", "-sf", str(desk_phone), "-i", "127.0.0.1", "-p", str(uas_port),
            "-mi", "127.0.0.1", "-mp", str(sipp_media_port()), "-nostdin", "-trace_err",
            "-error_file", str(folder / "uas.err"),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, cwd=folder,
        )  # fmt: skip
        rpc = KamailioRpc("127.0.0.1", settings.sip.rpc_port)
        await rpc.call(
            "ul.add", "location", EXTENSION, f"sip:{EXTENSION}@127.0.0.1:{uas_port}",
            3600, 1.0, "", 0, 0, 0,
        )  # fmt: skip
        await rpc.close()
        scenario = render_caller_scenario(
            folder, COMPANY_NUMBER, digits=EXTENSION, digits_after_s=0.5, stay_s=talk_s
        )
        print(f"calling: {calls} calls at {rate}/s, {talk_s} s talk each")
        began = time.monotonic()
        caller = await asyncio.create_subprocess_exec(
            "sipp", f"127.0.0.1:{settings.sip.port}", "-sf", str(scenario),
            "-r", str(rate), "-m", str(calls), "-l", str(workers * 2),
            "-i", "127.0.0.1", "-p", str(free_port()), "-mi", "127.0.0.1",
            "-mp", str(sipp_media_port()), "-nostdin", "-timeout", "300s", "-timeout_error",
            "-trace_rtt", "-rtt_freq", "1", "-trace_stat", "-fd", "1",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, cwd=folder,
        )  # fmt: skip
        peak_rss: dict[int, float] = {}
        pool = runner.app[CONTROLLER_KEY].pool
        assert pool is not None
        while caller.returncode is None:
            for worker in pool.workers:
                if worker.pid:
                    peak_rss[worker.id] = max(peak_rss.get(worker.id, 0.0), rss_mb(worker.pid))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(caller.wait(), 0.5)
        elapsed = time.monotonic() - began
        report(folder, elapsed, calls, rate, peak_rss)
        print_dial_latency(ctx.metrics.extension_dial_latency)
        if greeting_callers:
            await greeting_capacity(folder / "greeting", settings.sip.port, greeting_callers)
    finally:
        if uas is not None:
            uas.terminate()
            await uas.wait()
        await runner.cleanup()
        await kamailio.stop()
        await redis.stop()


async def greeting_capacity(folder: Path, edge_port: int, callers: int) -> None:
    """Callers that all arrive within a moment and stay 3 s in the greeting (it and the wait
    after it last longer): the ones answered are what the service holds in its greeting."""
    scenario = greeting_scenario(folder)
    print(f"greeting: {callers} callers within {callers / GREETING_RATE:.1f} s, 3 s each")
    process = await asyncio.create_subprocess_exec(
        "sipp", f"127.0.0.1:{edge_port}", "-sf", str(scenario), "-r", str(GREETING_RATE),
        "-m", str(callers), "-l", str(callers), "-i", "127.0.0.1", "-p", str(free_port()),
        "-mi", "127.0.0.1", "-mp", str(sipp_media_port()), "-nostdin", "-timeout", "60s",
        "-timeout_error", "-trace_stat", "-fd", "1",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, cwd=folder,
    )  # fmt: skip
    await process.wait()
    answered, refused = sipp_outcome(folder)
    print(f"greeting: {answered} answered at once, {refused} refused (503 from the edge)")


def greeting_scenario(folder: Path) -> Path:
    folder.mkdir()
    return render_caller_scenario(folder, COMPANY_NUMBER, stay_s=3.0)


def sipp_outcome(folder: Path) -> tuple[int, int]:
    """(succeeded, failed) calls from the SIPp statistics files in `folder`."""
    stat_files = [f for f in sorted(folder.glob("caller-*.csv")) if not f.name.endswith("_rtt.csv")]
    stat_rows = [row for f in stat_files for row in csv.DictReader(f.open(), delimiter=";")]
    if not stat_rows:
        return -1, -1
    last = stat_rows[-1]
    return int(last["SuccessfulCall(C)"]), int(last["FailedCall(C)"])


def report(
    folder: Path, elapsed: float, calls: int, rate: float, peak_rss: dict[int, float]
) -> None:
    succeeded, failed = sipp_outcome(folder)
    rtts = [
        float(row["response_time_ms"])
        for f in folder.glob("caller-*_rtt.csv")
        for row in csv.DictReader(f.open(), delimiter=";")
    ]
    print(f"calls: {succeeded} succeeded, {failed} failed of {calls} offered at {rate}/s "
          f"(all done in {elapsed:.1f} s)")  # fmt: skip
    if rtts:
        print(f"INVITE -> 200 (greeting answered): p50 {statistics.median(rtts):.1f} ms, "
              f"p99 {percentile(rtts, 0.99):.1f} ms over {len(rtts)} calls")  # fmt: skip
    if peak_rss:
        values = list(peak_rss.values())
        print(f"worker RSS: peak {max(values):.1f} MB, mean of peaks "
              f"{statistics.mean(values):.1f} MB over {len(values)} workers")  # fmt: skip
    print(f"(SIPp files in {folder})")


def print_dial_latency(histogram: Histogram) -> None:
    """p50/p99 as the histogram bucket each falls in (upper bounds)."""
    buckets = [
        (sample.labels["le"], sample.value)
        for metric in histogram.collect()
        for sample in metric.samples
        if sample.name.endswith("_bucket")
    ]
    total = buckets[-1][1] if buckets else 0
    if not total:
        return

    def bound(fraction: float) -> str:
        return next(le for le, count in buckets if count >= fraction * total)

    print(f"last digit -> INVITE to the phone: p50 <= {float(bound(0.5)) * 1000:g} ms, "
          f"p99 <= {float(bound(0.99)) * 1000:g} ms over {int(total)} calls")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--rate", type=float, default=4.0, help="new calls per second")
    parser.add_argument("--calls", type=int, default=60)
    parser.add_argument("--talk", type=float, default=3.0, help="seconds bridged per call")
    parser.add_argument("--workers", type=int, default=10)
    parser.add_argument("--greeting-callers", type=int, default=0,
                        help="then: how many callers the greeting holds at once")  # fmt: skip
    args = parser.parse_args()
    asyncio.run(run(args.rate, args.calls, args.talk, args.workers, args.greeting_callers))


if __name__ == "__main__":
    main()
