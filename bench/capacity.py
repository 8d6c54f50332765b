"""Capacity benchmark: the service as users run it (`pbx run`, default settings) under SIPp
callers; prints a table and a JSON object per run. The README's capacity figures come from it.

    .venv/bin/python -m bench.capacity idle [--seconds 30]
    .venv/bin/python -m bench.capacity greeting [--callers 50] [--rate 25] [--stay 30]
    .venv/bin/python -m bench.capacity cps [--rate 50] [--calls 500] [--talk 2]
    .venv/bin/python -m bench.capacity ramp [--greeting-steps 50,100,200,300]
                                            [--cps-steps 10,25,50,75,100] [--cps-seconds 20]
    common: [--json PATH] [--settle 10] [--idle-seconds 10] [--keep] [--sipp-messages]

What is measured
- The node: the `pbx run` process and all its descendants (media workers, Kamailio and its
  children, redis-server), found through /proc at the start and again at the end of each
  window. CPU: utime+stime+cutime+cstime summed over that tree (cutime/cstime keep the time
  of children that exited), as % of one core. Memory: the sums of smaps_rollup Pss and of
  Private_Clean + Private_Dirty (USS), in MB. PSS divides shared pages among every process
  mapping them, other services on the machine too, so on a busy machine it drifts; USS does
  not, and the per-caller figures are given for both.
- The service is started exactly like `make run` (`.venv/bin/pbx run` in the repository,
  its config.toml) with a fresh data folder (PBX_DATA__DIR), free ports (PBX_*__PORT) and an
  admin token (PBX_ADMIN_TOKEN); every other PBX_* variable of the caller's environment is
  dropped, so nothing is tuned. Its output goes to <run folder>/service.log.
- The company number is created over the REST API: a long text greeting (its length is
  printed) with extension dialing, then a queue without agents (callers wait with hold music).
  A caller who dials nothing is in the greeting (and, past its end, in the queue).
- Callers are SIPp from 127.0.0.1 (a trunk source by default): they offer PCMA and
  telephone-event, send speech (PCMA, 20 ms) from the ACK until they hang up. INVITE->200
  latency is SIPp's response time on the wire (rtd 1, -trace_rtt), never the service's clock.
  A call fails on any final other than 200, on no 200 within 32 s, on a BYE from the service
  before the caller hangs up, or on a BYE not answered.

Modes
- idle: up and settled (--settle s after /health is ok), then CPU and PSS over --seconds.
- greeting: --callers arrive at --rate per second and each stays --stay s. The plateau (all
  callers in) is from the last arrival + 1 s to the first departure (--stay after the first
  INVITE); there: CPU, CPU per 100 waiting callers (cpu/100: all of it; +cpu/100: above the
  idle baseline measured before the calls), memory minus the idle memory per caller, the
  calls SIPp has in progress, and the service's pbx_worker* metrics. Needs
  --stay > callers/rate + 2.
- cps: --calls calls at --rate per second, each talks --talk s and hangs up; CPU over the run.
- ramp: greeting steps, then cps steps (one service), each ramp stopping at its first step
  with a failure; one table.

Everything runs on 127.0.0.1; every SIPp run is bounded by -m and -timeout and stops by
itself; the service is stopped with SIGINT (Ctrl-C) in `finally`, then SIGTERM/SIGKILL.
Exit status: 0 when every step ran without failed calls, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import secrets
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request
import wave
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.support.dtmf_pcap import udp_frame
from tests.support.ports import free_port, sipp_media_port

REPO = Path(__file__).resolve().parent.parent
PBX = REPO / ".venv" / "bin" / "pbx"
SPEECH_SOURCE = Path("/usr/share/sip-tester/g711a.pcap")
COMPANY_NUMBER = "4930123000"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
STOP_GRACE_S = 20.0
# --sipp-messages: every SIP message of the callers in <run folder>/<step>/messages.log.
TRACE_MESSAGES = False
# No 200 within this long: the call failed (a UDP INVITE transaction's own limit).
ANSWER_TIMEOUT_MS = 32_000
GREETING_TEXT = (
    "Welcome to the capacity benchmark of the contact center. All of our agents are busy "
    "helping other customers right now, and we kindly ask you to stay on the line. "
    "If you know the extension of the person you would like to reach, you may dial it at any "
    "time during this message. For questions about an order you placed with us, please have "
    "your order number ready, you will find it in the confirmation we sent to you by email. "
    "For questions about an invoice, please have your customer number ready, it is printed "
    "at the top of every invoice. Many answers can also be found on our web site, where you "
    "can track your order, change your delivery address and download your invoices at any "
    "time of the day. Our opening hours are Monday to Friday from eight in the morning until "
    "eight in the evening, and Saturday from nine in the morning until two in the afternoon. "
    "Please note that calls may be recorded for training purposes. Thank you for your "
    "patience, the next available agent will be with you shortly. Thank you for waiting."
)


class BenchError(Exception):
    """The benchmark could not run (not: calls failed); the message says what and where."""


# -- the node: the process tree of `pbx run` -----------------------------------------------


@dataclass(frozen=True)
class ProcStat:
    pid: int
    ppid: int
    name: str
    ticks: int  # utime + stime + cutime + cstime


def _read_stat(pid: int) -> ProcStat | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    name = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    # fields[0] is state (field 3); utime is field 14, stime 15, cutime 16, cstime 17.
    ticks = sum(int(value) for value in fields[11:15])
    return ProcStat(pid, int(fields[1]), name, ticks)


def process_tree(root: int) -> dict[int, ProcStat]:
    """`root` and all its descendants now."""
    stats = [s for s in (_read_stat(int(p.name)) for p in Path("/proc").glob("[0-9]*")) if s]
    children: dict[int, list[ProcStat]] = {}
    by_pid = {s.pid: s for s in stats}
    for stat in stats:
        children.setdefault(stat.ppid, []).append(stat)
    tree: dict[int, ProcStat] = {}
    todo = [by_pid[root]] if root in by_pid else []
    while todo:
        stat = todo.pop()
        tree[stat.pid] = stat
        todo.extend(children.get(stat.pid, []))
    return tree


def memory_mb(pids: list[int]) -> tuple[float, float]:
    """(PSS, USS) of the processes in MB, from smaps_rollup: PSS shares each shared page among
    the processes mapping it (other services on the machine too), USS counts private pages."""
    pss_kb = uss_kb = 0
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, PermissionError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                key, _, rest = line.partition(":")
                if key == "Pss":
                    pss_kb += int(rest.split()[0])
                elif key in ("Private_Clean", "Private_Dirty"):
                    uss_kb += int(rest.split()[0])
    return pss_kb / 1024, uss_kb / 1024


class CpuWindow:
    """CPU of the tree between start() and stop(), as % of one core."""

    def __init__(self, root: int) -> None:
        self._root = root
        self._ticks = 0
        self._at = 0.0

    def start(self) -> None:
        self._ticks = sum(s.ticks for s in process_tree(self._root).values())
        self._at = time.monotonic()

    def stop(self) -> tuple[float, float, int]:
        """(cpu % of a core, seconds, processes in the tree at the end)."""
        tree = process_tree(self._root)  # listed again: processes started meanwhile count
        seconds = time.monotonic() - self._at
        used = (sum(s.ticks for s in tree.values()) - self._ticks) / CLOCK_TICKS
        return 100.0 * used / seconds if seconds > 0 else 0.0, seconds, len(tree)


# -- the service, started like `make run` --------------------------------------------------


class Service:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.data_dir = folder / "data"
        self.token = "bench_" + secrets.token_hex(16)
        self.api_port = self.sip_port = 0
        self.environ: dict[str, str] = {}
        self._choose_ports()
        self.log_path = folder / "service.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._last_tree: dict[int, ProcStat] = {}

    def _choose_ports(self) -> None:
        self.api_port = free_port()
        self.sip_port = free_port()
        self.environ = {
            "PBX_DATA__DIR": str(self.data_dir),
            "PBX_REDIS__PORT": str(free_port()),
            "PBX_SIP__PORT": str(self.sip_port),
            "PBX_SIP__RPC_PORT": str(free_port()),
            "PBX_API__PORT": str(self.api_port),
            "PBX_ADMIN_TOKEN": self.token,
        }

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def start(self, attempts: int = 3) -> float:
        """Start `pbx run`; returns the seconds until /health said ok. Ports are only free
        when checked: on "Address already in use" it starts again with other ports."""
        for attempt in range(1, attempts + 1):
            try:
                return self._start()
            except BenchError:
                self.stop()
                if attempt == attempts or "already in use" not in self.log_tail(200):
                    raise
                print(f"a port was taken meanwhile (attempt {attempt}); other ports")
                shutil.rmtree(self.data_dir, ignore_errors=True)
                self._choose_ports()
        raise AssertionError("unreachable")

    def _start(self, timeout_s: float = 180.0) -> float:
        if not PBX.exists():
            raise BenchError(f"{PBX} is missing: run `make setup` first")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PBX_")}
        env.update(self.environ)
        began = time.monotonic()
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                [str(PBX), "run"], cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        while time.monotonic() - began < timeout_s:
            if self._process.poll() is not None:
                raise BenchError(
                    f"`pbx run` exited with {self._process.returncode} at start:\n"
                    + self.log_tail()
                )
            with contextlib.suppress(OSError, ValueError):
                health = self.api("GET", "/api/v1/health", timeout_s=2)
                if health.get("status") == "ok":
                    self._last_tree = process_tree(self.pid)
                    return time.monotonic() - began
            time.sleep(0.5)
        raise BenchError(f"/health not ok after {timeout_s:g} s:\n" + self.log_tail())

    def check_alive(self) -> None:
        if self._process is not None and self._process.poll() is not None:
            raise BenchError(
                f"`pbx run` exited with {self._process.returncode}:\n" + self.log_tail()
            )
        self._last_tree = process_tree(self.pid) or self._last_tree

    def tree(self) -> dict[int, ProcStat]:
        self._last_tree = process_tree(self.pid) or self._last_tree
        return self._last_tree

    def api(self, method: str, path: str, body: Any = None, timeout_s: float = 60) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.api_port}{path}", data=data, method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise BenchError(f"{method} {path}: HTTP {exc.code}: {detail}") from exc
        return json.loads(raw) if raw else None

    def metrics(
        self, prefixes: tuple[str, ...] = ("pbx_worker", "pbx_active_calls")
    ) -> dict[str, float]:
        """The service's /metrics samples whose names start with `prefixes`."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.api_port}/metrics")
        found: dict[str, float] = {}
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                text = response.read().decode()
        except OSError as exc:
            return {"error": str(exc)}  # type: ignore[dict-item]
        for line in text.splitlines():
            if line.startswith(prefixes):
                name, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    found[name] = float(value)
        return found

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return "(no service log)"

    def stop(self) -> None:
        """As a user's Ctrl-C: SIGINT, then SIGTERM, then SIGKILL, each after a grace."""
        process = self._process
        if process is None:
            return
        tree = self.tree() if process.poll() is None else self._last_tree
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            if process.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(STOP_GRACE_S if sig != signal.SIGKILL else 10)
            if process.poll() is None:
                print(f"service did not stop on {sig.name} within the grace", file=sys.stderr)
        # Its children are in their own sessions and die with their parent; any still here
        # after a grace (same pid and name as listed) is ended by its pid.
        deadline = time.monotonic() + 10
        left = [s for s in tree.values() if s.pid != process.pid]
        while left and time.monotonic() < deadline:
            left = [s for s in left if (now := _read_stat(s.pid)) and now.name == s.name]
            time.sleep(0.2)
        for stat in left:
            print(f"killing leftover {stat.name} (pid {stat.pid})", file=sys.stderr)
            with contextlib.suppress(ProcessLookupError):
                os.kill(stat.pid, signal.SIGKILL)


def create_company_number(service: Service) -> float | None:
    """A queue without agents (callers wait with hold music) after a long text greeting;
    returns the greeting's length in seconds (None when its WAV was not found)."""
    queue = service.api(
        "POST", "/api/v1/queues",
        {"name": "bench waiting", "when_no_agents": "wait", "max_wait": 0},
    )  # fmt: skip
    service.api(
        "POST", "/api/v1/numbers",
        {
            "number": COMPANY_NUMBER, "name": "bench", "greeting": {"text": GREETING_TEXT},
            "extension_dialing": True,
            "default_destination": {"type": "queue", "id": queue["id"]},
        },
    )  # fmt: skip
    longest: float | None = None
    for path in service.data_dir.rglob("*.wav"):
        with contextlib.suppress(wave.Error, OSError), wave.open(str(path)) as audio:
            seconds = audio.getnframes() / audio.getframerate()
            longest = seconds if longest is None else max(longest, seconds)
    return longest


# -- SIPp -----------------------------------------------------------------------------------

_HEAD = """
      From: "Bench Caller" <sip:4930999[call_number]@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:{number}@[remote_ip]:[remote_port]>{peer_tag}
      Call-ID: [call_id]"""  # noqa: E501

CALLER_SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="bench caller">
  <send retrans="500" start_rtd="1">
    <![CDATA[
      INVITE sip:{number}@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]{head}
      CSeq: 1 INVITE
      Contact: <sip:4930999[call_number]@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=caller 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 8 101
      a=rtpmap:8 PCMA/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-15
      a=ptime:20
      a=sendrecv
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rtd="1" rrs="true" timeout="{answer_timeout_ms}"/>
  <send>
    <![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]{head_tagged}
      [routes]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <nop><action><exec play_pcap_audio="{pcap}"/></action></nop>
  <pause milliseconds="{stay_ms}"/>
  <send retrans="500">
    <![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]{head_tagged}
      [routes]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <recv response="200" crlf="true" timeout="10000"/>
  <ResponseTimeRepartition value="10, 20, 50, 100, 200, 500, 1000, 2000, 5000"/>
</scenario>
"""


def caller_scenario(folder: Path, stay_s: float) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    pcap = folder / f"speech-{stay_s:g}s.pcap"
    write_speech_pcap(pcap, stay_s)
    scenario = folder / f"caller-{stay_s:g}s.xml"
    scenario.write_text(
        CALLER_SCENARIO.format(
            number=COMPANY_NUMBER,
            head=_HEAD.format(number=COMPANY_NUMBER, peer_tag=""),
            head_tagged=_HEAD.format(number=COMPANY_NUMBER, peer_tag="[peer_tag_param]"),
            answer_timeout_ms=ANSWER_TIMEOUT_MS,
            pcap=pcap,
            stay_ms=int(stay_s * 1000),
        )
    )
    return scenario


def write_speech_pcap(path: Path, seconds: float) -> None:
    """PCMA speech for `seconds`: the audio of SIPp's g711a.pcap looped, in 20 ms packets
    with one SSRC and increasing sequence numbers and timestamps (for play_pcap_audio)."""
    audio = b"".join(_rtp_payloads(SPEECH_SOURCE))
    if not audio:
        raise BenchError(f"no RTP audio found in {SPEECH_SOURCE}")
    frame_bytes = 160  # 20 ms at 8 kHz
    frames = max(1, int(seconds * 50))
    with path.open("wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i in range(frames):
            start = (i * frame_bytes) % (len(audio) - frame_bytes)
            header = struct.pack("!BBHII", 0x80, 8, (1000 + i) & 0xFFFF, 16000 + i * 160, 0x5EED)
            frame = udp_frame(header + audio[start : start + frame_bytes])
            at = 1_700_000_000 + i * 0.02
            micros = round((at % 1) * 1_000_000) % 1_000_000
            out.write(struct.pack("<IIII", int(at), micros, len(frame), len(frame)))
            out.write(frame)


def _rtp_payloads(pcap: Path) -> Iterator[bytes]:
    data = pcap.read_bytes()
    offset = 24
    while offset + 16 <= len(data):
        length = struct.unpack("<I", data[offset + 8 : offset + 12])[0]
        packet = data[offset + 16 : offset + 16 + length]
        offset += 16 + length
        ip = packet[14:]
        if len(ip) < 28 or ip[9] != 17:
            continue
        rtp = ip[(ip[0] & 0x0F) * 4 + 8 :]
        if len(rtp) > 12 and rtp[0] >> 6 == 2 and rtp[1] & 0x7F == 8:
            yield rtp[12 + 4 * (rtp[0] & 0x0F) :]


@dataclass
class SippOutcome:
    exit_code: int
    created: int = 0
    succeeded: int = 0
    failed: int = 0
    failure_kinds: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def latency(self) -> dict[str, float | None]:
        values = sorted(self.latencies_ms)
        if not values:
            return {"p50": None, "p99": None, "max": None}
        return {"p50": _rank(values, 0.50), "p99": _rank(values, 0.99), "max": values[-1]}


def _rank(ordered: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


class SippRun:
    """One bounded SIPp caller run against the edge, in its own folder."""

    def __init__(
        self, folder: Path, scenario: Path, edge_port: int, *, rate: float, calls: int,
        limit: int, timeout_s: float,
    ) -> None:  # fmt: skip
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.stat_file = folder / "stat.csv"
        self.timeout_s = timeout_s
        self.argv = [
            "sipp", f"127.0.0.1:{edge_port}", "-sf", str(scenario),
            "-r", f"{rate:g}", "-m", str(calls), "-l", str(limit),
            "-i", "127.0.0.1", "-p", str(free_port()), "-mi", "127.0.0.1",
            "-mp", str(sipp_media_port()), "-nostdin", "-timeout", f"{int(timeout_s)}s",
            "-timeout_error", "-trace_stat", "-stf", str(self.stat_file), "-fd", "1",
            "-trace_rtt", "-rtt_freq", "1", "-trace_err", "-error_file", str(folder / "errors.log"),
        ]  # fmt: skip
        if TRACE_MESSAGES:
            self.argv += ["-trace_msg", "-message_file", str(folder / "messages.log")]
        self.process: subprocess.Popen[bytes] | None = None
        self.began = 0.0

    def start(self) -> None:
        if shutil.which("sipp") is None:
            raise BenchError("sipp is not installed (Debian package sip-tester)")
        with (self.folder / "sipp.out").open("wb") as out:
            self.process = subprocess.Popen(
                self.argv, cwd=self.folder, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.began = time.monotonic()

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait(self) -> SippOutcome:
        assert self.process is not None
        try:
            # SIPp's -timeout ends it; the extra grace is for a SIPp that hangs.
            self.process.wait(max(1.0, self.began + self.timeout_s + 30 - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.kill()
            raise BenchError(f"SIPp did not stop by itself; see {self.folder}") from None
        return self.outcome(self.process.returncode)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def current_calls(self) -> int | None:
        rows = self._rows()
        return int(rows[-1]["CurrentCall"]) if rows else None

    def _rows(self) -> list[dict[str, str]]:
        with contextlib.suppress(OSError), self.stat_file.open(newline="") as stats:
            return [row for row in csv.DictReader(stats, delimiter=";") if row.get("StartTime")]
        return []

    def outcome(self, exit_code: int) -> SippOutcome:
        outcome = SippOutcome(exit_code)
        rows = self._rows()
        if not rows:
            outcome.errors.append(f"no SIPp statistics in {self.stat_file}")
        else:
            last = rows[-1]
            outcome.created = int(last["TotalCallCreated"])
            outcome.succeeded = int(last["SuccessfulCall(C)"])
            outcome.failed = int(last["FailedCall(C)"])
            outcome.failure_kinds = {
                key.removesuffix("(C)"): int(value)
                for key, value in last.items()
                if key.startswith("Failed") and key.endswith("(C)") and key != "FailedCall(C)"
                and value and int(value)
            }  # fmt: skip
        for rtt in self.folder.glob("*_rtt.csv"):
            with rtt.open(newline="") as lines:
                for row in csv.reader(lines, delimiter=";"):
                    with contextlib.suppress(ValueError, IndexError):
                        outcome.latencies_ms.append(float(row[1]))
        errors = self.folder / "errors.log"
        with contextlib.suppress(OSError):
            outcome.errors.extend(
                line for line in errors.read_text(errors="replace").splitlines()[:5] if line
            )
        if exit_code not in (0, 1):
            tail = (self.folder / "sipp.out").read_text(errors="replace").splitlines()[-5:]
            outcome.errors.append(f"SIPp exit code {exit_code}: " + " | ".join(tail))
        return outcome


# -- the modes ------------------------------------------------------------------------------


@dataclass
class Row:
    mode: str
    load: str
    attempted: int | None = None
    answered: int | None = None
    failed: int | None = None
    latency_ms: dict[str, float | None] = field(default_factory=dict)
    cpu_percent: float | None = None
    cpu_window_s: float | None = None
    cpu_per_100_callers: float | None = None
    cpu_per_100_above_idle: float | None = None
    pss_mb: float | None = None
    pss_per_caller_mb: float | None = None
    uss_mb: float | None = None
    uss_per_caller_mb: float | None = None
    processes: int | None = None
    connected_at_plateau: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    failure_kinds: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.problems


@dataclass
class Baseline:
    cpu_percent: float
    pss_mb: float
    uss_mb: float


def measure_idle(service: Service, seconds: float) -> Row:
    window = CpuWindow(service.pid)
    window.start()
    time.sleep(seconds)
    service.check_alive()
    cpu, elapsed, processes = window.stop()
    pss, uss = memory_mb(list(service.tree()))
    return Row(
        "idle", f"{seconds:g} s", cpu_percent=cpu, cpu_window_s=elapsed, pss_mb=pss, uss_mb=uss,
        processes=processes, metrics=service.metrics(),
    )  # fmt: skip


def run_greeting(
    service: Service, folder: Path, baseline: Baseline, callers: int, rate: float, stay_s: float
) -> Row:
    row = Row("greeting", f"{callers} callers @ {rate:g}/s, {stay_s:g} s", attempted=callers)
    arrival_s = (callers - 1) / rate
    plateau_from, plateau_to = arrival_s + 1.0, stay_s - 0.5
    if plateau_to - plateau_from < 1.0:
        raise BenchError(
            f"--stay {stay_s:g} leaves no plateau: callers arrive over {arrival_s:.1f} s; "
            f"use --stay > {arrival_s + 2.5:.0f}"
        )
    scenario = caller_scenario(folder, stay_s)
    sipp = SippRun(
        folder, scenario, service.sip_port, rate=rate, calls=callers, limit=callers,
        timeout_s=arrival_s + stay_s + ANSWER_TIMEOUT_MS / 1000 + 30,
    )  # fmt: skip
    window = CpuWindow(service.pid)
    connected: list[int] = []
    sipp.start()
    try:
        _sleep_until(sipp, plateau_from)
        window.start()
        _sleep_until(sipp, (plateau_from + plateau_to) / 2)
        # SIPp writes its counters once a second: read in the middle and at the end only.
        connected.append(sipp.current_calls() or 0)
        pss, uss = memory_mb(list(service.tree()))
        row.metrics = service.metrics()
        _sleep_until(sipp, plateau_to)
        connected.append(sipp.current_calls() or 0)
        cpu, elapsed, processes = window.stop()
        outcome = sipp.wait()
    finally:
        sipp.kill()
    service.check_alive()
    _fill_calls(row, outcome)
    row.cpu_percent, row.cpu_window_s, row.processes = cpu, elapsed, processes
    row.connected_at_plateau = min(connected)
    row.pss_mb, row.uss_mb = pss, uss
    waiting = min(callers, row.connected_at_plateau) or callers
    row.cpu_per_100_callers = 100.0 * cpu / waiting
    row.cpu_per_100_above_idle = 100.0 * (cpu - baseline.cpu_percent) / waiting
    row.pss_per_caller_mb = (pss - baseline.pss_mb) / waiting
    row.uss_per_caller_mb = (uss - baseline.uss_mb) / waiting
    if row.connected_at_plateau < callers:
        row.problems.append(
            f"only {row.connected_at_plateau} of {callers} calls in progress at the plateau"
        )
    return row


def run_cps(
    service: Service, folder: Path, rate: float, calls: int, talk_s: float, limit: int | None
) -> Row:
    row = Row("cps", f"{rate:g}/s x {calls}, talk {talk_s:g} s", attempted=calls)
    scenario = caller_scenario(folder, talk_s)
    limit = limit or max(10, int(rate * (talk_s + 3)))
    sipp = SippRun(
        folder, scenario, service.sip_port, rate=rate, calls=calls, limit=limit,
        timeout_s=calls / rate + talk_s + ANSWER_TIMEOUT_MS / 1000 + 30,
    )  # fmt: skip
    window = CpuWindow(service.pid)
    peak_metrics: dict[str, float] = {}
    window.start()
    sipp.start()
    try:
        while sipp.running():
            time.sleep(1.0)
            for name, value in service.metrics().items():
                peak_metrics[name] = max(value, peak_metrics.get(name, value))
        cpu, elapsed, processes = window.stop()
        outcome = sipp.wait()
    finally:
        sipp.kill()
    service.check_alive()
    _fill_calls(row, outcome)
    row.cpu_percent, row.cpu_window_s, row.processes = cpu, elapsed, processes
    row.metrics = {f"peak {name}": value for name, value in peak_metrics.items()}
    return row


def _fill_calls(row: Row, outcome: SippOutcome) -> None:
    row.answered = len(outcome.latencies_ms)
    row.failed = outcome.failed + max(0, (row.attempted or 0) - outcome.created)
    row.latency_ms = outcome.latency()
    row.failure_kinds = outcome.failure_kinds
    row.problems.extend(outcome.errors)
    if outcome.created < (row.attempted or 0):
        row.problems.append(f"SIPp placed only {outcome.created} of {row.attempted} calls")


def _sleep_until(sipp: SippRun, offset_s: float) -> None:
    """Sleep until `offset_s` after SIPp started; fail if SIPp ended before."""
    while (left := sipp.began + offset_s - time.monotonic()) > 0:
        if not sipp.running():
            raise BenchError(f"SIPp ended early (exit {sipp.process and sipp.process.returncode})"
                             f"; see {sipp.folder}")  # fmt: skip
        time.sleep(min(left, 0.2))


def wait_for_quiet(service: Service, timeout_s: float = 60) -> None:
    """Between steps: until the service reports no calls in progress (then a short rest)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        active = sum(v for k, v in service.metrics(("pbx_active_calls",)).items() if "{" in k)
        if not active:
            break
        time.sleep(1)
    time.sleep(3)


# -- output ---------------------------------------------------------------------------------


def _fmt(value: float | int | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


COLUMNS = (
    ("mode", 8), ("load", 30), ("attempted", 9), ("answered", 8), ("failed", 6),
    ("p50 ms", 8), ("p99 ms", 8), ("max ms", 8), ("cpu %", 7), ("cpu/100", 8), ("+cpu/100", 8),
    ("PSS MB", 8), ("PSS/caller", 10), ("USS MB", 8), ("USS/caller", 10),
)  # fmt: skip


def print_table(rows: list[Row], extra: dict[str, Any]) -> None:
    print()
    for key, value in extra.items():
        print(f"{key}: {value}")
    print("  ".join(name.rjust(width) for name, width in COLUMNS))
    for row in rows:
        cells = (
            row.mode, row.load, _fmt(row.attempted), _fmt(row.answered), _fmt(row.failed),
            _fmt(row.latency_ms.get("p50")), _fmt(row.latency_ms.get("p99")),
            _fmt(row.latency_ms.get("max")), _fmt(row.cpu_percent),
            _fmt(row.cpu_per_100_callers), _fmt(row.cpu_per_100_above_idle), _fmt(row.pss_mb),
            _fmt(row.pss_per_caller_mb, 2), _fmt(row.uss_mb), _fmt(row.uss_per_caller_mb, 2),
        )  # fmt: skip
        print("  ".join(str(c).rjust(w) for c, (_, w) in zip(cells, COLUMNS, strict=True)))
    for row in rows:
        label = f"{row.mode} {row.load}"
        if row.metrics:
            print(f"  {label} metrics: " + ", ".join(f"{k}={v:g}" for k, v in row.metrics.items()))
        if row.failure_kinds:
            print(f"  {label} failures: {row.failure_kinds}")
        for problem in row.problems:
            print(f"  {label} PROBLEM: {problem}")


def emit(rows: list[Row], extra: dict[str, Any], json_path: Path | None) -> None:
    print_table(rows, extra)
    document = {**extra, "rows": [asdict(row) for row in rows]}
    text = json.dumps(document, indent=2)
    print(text)
    if json_path is not None:
        json_path.write_text(text + "\n")
        print(f"written to {json_path}")


# -- main -----------------------------------------------------------------------------------


def _steps(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", type=Path, help="also write the JSON object here")
    common.add_argument("--settle", type=float, default=10.0,
                        help="seconds after /health is ok before measuring")  # fmt: skip
    common.add_argument("--idle-seconds", type=float, default=10.0,
                        help="idle baseline before the calls (greeting, ramp)")  # fmt: skip
    common.add_argument("--keep", action="store_true", help="keep the run folder")
    common.add_argument("--sipp-messages", action="store_true",
                        help="SIPp logs every message (small runs only)")  # fmt: skip
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    idle = modes.add_parser("idle", parents=[common])
    idle.add_argument("--seconds", type=float, default=30.0)
    greeting = modes.add_parser("greeting", parents=[common])
    greeting.add_argument("--callers", type=int, default=50)
    greeting.add_argument("--rate", type=float, default=25.0)
    greeting.add_argument("--stay", type=float, default=30.0)
    cps = modes.add_parser("cps", parents=[common])
    cps.add_argument("--rate", type=float, default=50.0)
    cps.add_argument("--calls", type=int, default=500)
    cps.add_argument("--talk", type=float, default=2.0)
    cps.add_argument("--limit", type=int, help="SIPp -l (default: rate x (talk + 3))")
    ramp = modes.add_parser("ramp", parents=[common])
    ramp.add_argument("--greeting-steps", default="50,100,200,300")
    ramp.add_argument("--greeting-rate", type=float, default=25.0)
    ramp.add_argument("--stay", type=float, default=30.0)
    ramp.add_argument("--cps-steps", default="10,25,50,75,100")
    ramp.add_argument("--cps-seconds", type=float, default=20.0,
                      help="each cps step places rate x this many calls")  # fmt: skip
    ramp.add_argument("--talk", type=float, default=2.0)
    args = parser.parse_args(argv)
    for name in ("callers", "calls", "rate", "stay", "talk", "seconds"):
        if getattr(args, name, 1) <= 0:
            parser.error(f"--{name} must be positive")
    return args


def run(args: argparse.Namespace) -> int:
    folder = Path(tempfile.mkdtemp(prefix="pbx-capacity-"))
    service = Service(folder)
    rows: list[Row] = []
    extra: dict[str, Any] = {"mode": args.mode, "folder": str(folder)}
    print(f"run folder: {folder}")
    try:
        started_s = service.start()
        extra["health_ok_after_s"] = round(started_s, 1)
        print(f"service up (health ok) after {started_s:.1f} s; pid {service.pid}")
        if args.mode != "idle":
            greeting_s = create_company_number(service)
            extra["greeting_s"] = None if greeting_s is None else round(greeting_s, 1)
            print(f"company number {COMPANY_NUMBER}: greeting {_fmt(greeting_s)} s, then a "
                  "queue without agents")  # fmt: skip
        time.sleep(args.settle)
        service.check_alive()
        if args.mode == "idle":
            rows.append(measure_idle(service, args.seconds))
        else:
            idle = measure_idle(service, args.idle_seconds)
            baseline = Baseline(idle.cpu_percent or 0.0, idle.pss_mb or 0.0, idle.uss_mb or 0.0)
            extra["idle"] = {"cpu_percent": round(baseline.cpu_percent, 2),
                             "pss_mb": round(baseline.pss_mb, 1),
                             "uss_mb": round(baseline.uss_mb, 1)}  # fmt: skip
            print(f"idle baseline: cpu {baseline.cpu_percent:.1f} %, PSS {baseline.pss_mb:.1f} MB,"
                  f" USS {baseline.uss_mb:.1f} MB")  # fmt: skip
            rows.extend(_loaded(args, service, folder, baseline))
    except BenchError as exc:
        print(f"\nBENCHMARK FAILED: {exc}", file=sys.stderr)
        extra["error"] = str(exc)
    except KeyboardInterrupt:
        extra["error"] = "interrupted"
        print("\ninterrupted", file=sys.stderr)
    except Exception as exc:  # a bug of the benchmark: still stop the service and report
        traceback.print_exc()
        extra["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        service.stop()
    emit(rows, extra, args.json)
    if not args.keep and "error" not in extra and all(row.ok for row in rows):
        shutil.rmtree(folder, ignore_errors=True)
    else:
        print(f"kept for inspection: {folder}")
    return 0 if "error" not in extra and all(row.ok for row in rows) else 1


def report(row: Row) -> None:
    print(
        f"  {row.mode} {row.load}: answered {row.answered}, failed {row.failed}, "
        f"cpu {_fmt(row.cpu_percent)} %",
        flush=True,
    )


def _loaded(
    args: argparse.Namespace, service: Service, folder: Path, baseline: Baseline
) -> Iterator[Row]:
    if args.mode == "greeting":
        print(f"greeting: {args.callers} callers at {args.rate:g}/s, {args.stay:g} s each")
        row = run_greeting(service, folder / "greeting", baseline, args.callers, args.rate,
                           args.stay)  # fmt: skip
        report(row)
        yield row
    elif args.mode == "cps":
        print(f"cps: {args.calls} calls at {args.rate:g}/s, talk {args.talk:g} s")
        row = run_cps(service, folder / "cps", args.rate, args.calls, args.talk, args.limit)
        report(row)
        yield row
    else:
        for callers in _steps(args.greeting_steps):
            wait_for_quiet(service)
            print(f"ramp greeting: {int(callers)} callers at {args.greeting_rate:g}/s")
            row = run_greeting(
                service, folder / f"greeting-{int(callers)}", baseline, int(callers),
                args.greeting_rate, args.stay,
            )  # fmt: skip
            report(row)
            yield row
            if not row.ok:
                break
        for rate in _steps(args.cps_steps):
            wait_for_quiet(service)
            calls = max(1, int(rate * args.cps_seconds))
            print(f"ramp cps: {rate:g}/s x {calls}")
            row = run_cps(service, folder / f"cps-{rate:g}", rate, calls, args.talk, None)
            report(row)
            yield row
            if not row.ok:
                break


def main(argv: list[str] | None = None) -> int:
    global TRACE_MESSAGES
    args = parse_args(argv)
    TRACE_MESSAGES = args.sipp_messages
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
