"""Media-host capacity: do two media hosts carry twice one host's callers? (#16's target.)

    .venv/bin/python -m bench.media_hosts [--workers-per-host 25] [--rate 25] [--stay 40]
                                          [--json PATH] [--keep]

For one, then two media hosts (`pbx media` on 127.0.0.11, 127.0.0.12, each with at most
--workers-per-host workers), a node (`pbx run`, started as bench.capacity starts it, plus
`[cluster] media_hosts` and a secret) takes 2 x 2 x --workers-per-host SIPp callers: the
callers two hosts can hold (a worker holds 2 callers: 4 legs, one kept for each caller's
agent). They wait in the greeting and queue as in `bench.capacity greeting`. Printed per
run: callers answered and in progress at the plateau, failures (one host: the half it has
no room for, answered 503 by the edge), and CPU over the plateau of each media host's
process tree (the host and its workers) and of the node, per 100 callers in progress.
On one machine both hosts share its cores, so "twice the callers" is read as: twice the
callers held, at the same media CPU per caller.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.capacity import (
    ANSWER_TIMEOUT_MS,
    PBX,
    REPO,
    BenchError,
    CpuWindow,
    Service,
    SippRun,
    caller_scenario,
    create_company_number,
)
from tests.support.ports import free_port, free_port_block

SECRET = "bench-media-hosts-secret"
ADDRESSES = ("127.0.0.11", "127.0.0.12")
CALLERS_PER_WORKER = 2
RTP_PORTS_PER_WORKER = 40
LINK_WAIT_S = 120.0


@dataclass
class HostsRun:
    hosts: int
    callers: int
    answered: int = 0
    failed: int = 0
    in_progress_at_plateau: int = 0
    media_cpu_percent: list[float] = field(default_factory=list)
    node_cpu_percent: float = 0.0
    media_cpu_per_100_callers: float | None = None
    problems: list[str] = field(default_factory=list)


class MediaHost:
    """One `pbx media`, configured through PBX_* variables only."""

    def __init__(self, folder: Path, address: str, ports: dict[str, int], workers: int) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.address = address
        self.link = f"{address}:{ports['link']}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PBX_")}
        env.update({
            "PBX_WORKERS__HOST": address, "PBX_WORKERS__MAX_WORKERS": str(workers),
            "PBX_WORKERS__FIRST_SIP_PORT": str(ports["sip"]),
            "PBX_WORKERS__FIRST_RTP_PORT": str(ports["rtp"]),
            "PBX_WORKERS__RTP_PORTS_PER_WORKER": str(RTP_PORTS_PER_WORKER),
            "PBX_MEDIA__PORT": str(ports["link"]), "PBX_CLUSTER__SECRET": SECRET,
            # Its /metrics on its own address: the default 127.0.0.1:7071 is one per machine.
            "PBX_MEDIA__METRICS_HOST": address,
        })  # fmt: skip
        with (folder / "media.log").open("wb") as log:
            self.process = subprocess.Popen(
                [str(PBX), "media"], cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def stop(self) -> None:
        for sig in (signal.SIGINT, signal.SIGKILL):
            if self.process.poll() is not None:
                return
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(15)


class NodeWithHosts(Service):
    """`pbx run` as bench.capacity starts it, its workers on the given media hosts."""

    def __init__(self, folder: Path, hosts: list[MediaHost], ports: dict[str, int],
                 workers: int) -> None:  # fmt: skip
        self._extra = {
            "PBX_CLUSTER__SECRET": SECRET,
            "PBX_CLUSTER__MEDIA_HOSTS": json.dumps([host.link for host in hosts]),
            "PBX_WORKERS__MAX_WORKERS": str(workers),
            "PBX_WORKERS__FIRST_SIP_PORT": str(ports["sip"]),
            "PBX_WORKERS__FIRST_RTP_PORT": str(ports["rtp"]),
            "PBX_WORKERS__RTP_PORTS_PER_WORKER": str(RTP_PORTS_PER_WORKER),
        }
        folder.mkdir(parents=True, exist_ok=True)
        super().__init__(folder)

    def _choose_ports(self) -> None:
        super()._choose_ports()
        self.environ.update(self._extra)

    def until_linked(self, hosts: int) -> None:
        deadline = time.monotonic() + LINK_WAIT_S
        while time.monotonic() < deadline:
            checks = self.api("GET", "/api/v1/health")["checks"]
            if list(checks["media_hosts"].values()).count("ok") == hosts:
                return
            time.sleep(0.5)
        raise BenchError(f"media hosts not linked after {LINK_WAIT_S:g} s:\n" + self.log_tail())


def measure(folder: Path, hosts: int, args: argparse.Namespace) -> HostsRun:
    callers = CALLERS_PER_WORKER * args.workers_per_host * len(ADDRESSES)
    run = HostsRun(hosts, callers)
    ports = {"sip": free_port_block(args.workers_per_host), "link": free_port(),
             "rtp": free_port_block(args.workers_per_host * RTP_PORTS_PER_WORKER)}  # fmt: skip
    media = [MediaHost(folder / f"media-{i}", ADDRESSES[i], ports, args.workers_per_host)
             for i in range(hosts)]  # fmt: skip
    node = NodeWithHosts(folder / "node", media, ports, args.workers_per_host)
    try:
        node.start()
        node.until_linked(hosts)
        create_company_number(node)
        arrival_s = (callers - 1) / args.rate
        plateau_from, plateau_to = arrival_s + 3.0, args.stay - 1.0
        if plateau_to - plateau_from < 2.0:
            raise BenchError(f"--stay {args.stay:g} leaves no plateau; use > {arrival_s + 6:.0f}")
        sipp = SippRun(
            folder / "sipp", caller_scenario(folder, args.stay), node.sip_port,
            rate=args.rate, calls=callers, limit=callers,
            timeout_s=arrival_s + args.stay + ANSWER_TIMEOUT_MS / 1000 + 30,
        )  # fmt: skip
        windows = [CpuWindow(host.process.pid) for host in media] + [CpuWindow(node.pid)]
        sipp.start()
        try:
            _sleep_until(sipp, plateau_from)
            for window in windows:
                window.start()
            _sleep_until(sipp, (plateau_from + plateau_to) / 2)
            run.in_progress_at_plateau = sipp.current_calls() or 0
            _sleep_until(sipp, plateau_to)
            cpus = [window.stop()[0] for window in windows]
            outcome = sipp.wait()
        finally:
            sipp.kill()
        run.media_cpu_percent, run.node_cpu_percent = cpus[:-1], cpus[-1]
        run.answered = len(outcome.latencies_ms)
        run.failed = outcome.failed + max(0, callers - outcome.created)
        run.problems = outcome.errors[:3]
        if run.in_progress_at_plateau:
            run.media_cpu_per_100_callers = (
                100.0 * sum(run.media_cpu_percent) / run.in_progress_at_plateau
            )
    finally:
        node.stop()
        for host in media:
            host.stop()
    return run


def _sleep_until(sipp: SippRun, offset_s: float) -> None:
    time.sleep(max(0.0, sipp.began + offset_s - time.monotonic()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench.media_hosts", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--workers-per-host", type=int, default=25)
    parser.add_argument("--rate", type=float, default=25.0)
    parser.add_argument("--stay", type=float, default=40.0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the run folder")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="pbx-bench-media-"))
    runs: list[HostsRun] = []
    try:
        for hosts in (1, 2):
            print(f"{hosts} media host(s): {CALLERS_PER_WORKER * args.workers_per_host * 2} "
                  "callers ...", flush=True)  # fmt: skip
            runs.append(measure(folder / f"hosts-{hosts}", hosts, args))
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    print(f"\n{'hosts':>5} {'callers':>7} {'answered':>8} {'failed':>6} {'held':>5} "
          f"{'media cpu % per host':>22} {'node cpu %':>10} "
          f"{'media cpu/100 held':>18}")  # fmt: skip
    for run in runs:
        per_host = " + ".join(f"{cpu:.1f}" for cpu in run.media_cpu_percent)
        per_100 = f"{run.media_cpu_per_100_callers:.1f}" if run.media_cpu_per_100_callers else "-"
        print(f"{run.hosts:>5} {run.callers:>7} {run.answered:>8} {run.failed:>6} "
              f"{run.in_progress_at_plateau:>5} {per_host:>22} {run.node_cpu_percent:>10.1f} "
              f"{per_100:>18}")  # fmt: skip
        for problem in run.problems:
            print(f"      {problem}")
    load = os.getloadavg()
    result: dict[str, Any] = {"runs": [asdict(run) for run in runs], "cpus": os.cpu_count(),
                              "loadavg": load}  # fmt: skip
    print(
        f"machine: {os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    print(json.dumps(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    one, two = runs
    return (
        0 if two.failed == 0 and two.in_progress_at_plateau >= 2 * one.in_progress_at_plateau else 1
    )


if __name__ == "__main__":
    sys.exit(main())
