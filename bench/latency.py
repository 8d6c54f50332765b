"""Call latencies measured on the loopback wire: the service as users run it (`pbx run`, its
defaults), SIPp callers and SIPp desk phones, and a packet capture of our own (bench.wire).

    .venv/bin/python -m bench.latency [digit|agent-free|all] [--runs 30] [--agents 1]
                                      [--waiting 10] [--talk 1.0] [--json PATH] [--keep]

Every time is the kernel's timestamp of a packet on `lo` (bench.wire: AF_PACKET, a BPF filter
on the ports of interest, SO_TIMESTAMPNS; kernel drops are reported). Needs root.

- digit: a SIPp caller from 127.0.0.1 (a trunk source) rings the company number, hears its
  greeting ("Welcome."), then dials extension 1001 as RFC 4733 events in RTP
  (tests.support.dtmf_pcap, played with play_pcap_audio; 1002 and 1010 exist too, so only
  the last digit decides). 1001's phone is a SIPp UAS registered at the edge (REGISTER with
  digest auth). From the first RTP packet of the deciding (last) key press (payload type
  101, that press's RTP timestamp; its marker bit is checked) to the INVITE arriving at the
  phone's port. Split: until the worker's INVITE reaches the edge (same Call-ID), and the
  edge's relay to the phone. One caller at a time; the first call is a warm-up.
- agent-free: a queue (wrap-up 0, --agents members) whose phones are SIPp UASs that answer at
  once, talk --talk s and hang up with BYE; --waiting callers wait in it (one SIPp, -l keeps
  them topped up; they send speech as bench.capacity's callers do). Its number greets with a
  0.2 s chime, and a served caller stays 0.3 s before SIPp starts the next one: otherwise that
  new caller's INVITE lands inside the window measured, every time.
  * bye: from the 200 OK answering the agent's BYE, arriving at the phone, to the next
    INVITE arriving at that phone.
  * api: the agents are set not_ready during each call (pending until it ends); with
    --waiting callers waiting, `PUT /users/{id}/presence {"status": "ready"}` goes on a
    connection of our own: from the first segment of its HTTP response on the wire (and, for
    reference, of its request) to the next INVITE at that phone.
  For each sample the callers waiting and whether the INVITE was for the oldest of them are
  read from the wire too: a caller is in the queue from its 200 OK plus the greeting until an
  agent's INVITE names it (From) or its call ends; samples with fewer than --waiting callers
  (the fill at the start, the drain at the end) are left out, and counted.

Each mode gets its own service, started as bench.capacity does (`pbx run` in the repository
with its config.toml; only a fresh data folder, free ports and an admin token differ) and
stopped with SIGINT in `finally`; every SIPp run is bounded by -timeout. The capture, with the
service's Redis traffic for reading, is kept as <run folder>/<mode>/sipp/capture.pcap with
--keep. Percentiles are nearest-rank: below 100 samples p99 is the maximum. Exit status 0
when every measurement produced its samples without problems, 1 otherwise.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import math
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.parse
import urllib.request
import wave
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.capacity import BenchError, Service, write_speech_pcap
from bench.wire import (
    IPPROTO_TCP,
    IPPROTO_UDP,
    CaptureError,
    LoopbackCapture,
    Packet,
    SipMessage,
    TelephoneEvent,
    compile_port_filter,
    dtmf_events,
    first_of_each_call,
    parse_telephone_event,
    sip_messages,
)
from tests.support.dtmf_pcap import EVENT_CODES
from tests.support.ports import free_port, sipp_media_port
from tests.support.sipp import render_caller_scenario

COMPANY_NUMBER = "4930123000"
QUEUE_NUMBER = "4930123001"
EXTENSION = "1001"
# Extensions that share the phone's prefixes, so that only its last digit decides.
DECOYS = ("1002", "1010")
AGENT_EXTENSIONS_FROM = 2001
REGISTER_EXPIRES_S = 3600  # the edge's registrar max_expires


# -- pure: matching and figures -------------------------------------------------------------


@dataclass
class DigitSample:
    caller: str
    total_ms: float  # deciding digit's first packet -> INVITE at the phone
    to_edge_ms: float | None  # -> the worker's INVITE at the edge (same Call-ID)
    edge_to_phone_ms: float | None
    from_end_ms: float | None  # the event's first E-bit packet -> INVITE at the phone
    packets_before_edge: int  # packets of the deciding event on the wire before the edge INVITE
    marked: bool


def digit_sample(
    caller: str,
    digits: str,
    events: Sequence[TelephoneEvent],
    at_phone: Sequence[SipMessage],
    at_edge: Sequence[SipMessage],
) -> DigitSample | str:
    """One call's deciding digit -> INVITE at the phone; a string says why there is none.

    `events`: the caller's RFC 4733 packets; `at_phone`/`at_edge`: SIP arriving at the phone's
    and at the edge's port. The INVITE is the phone's first whose From names `caller`."""
    presses = dtmf_events(events)
    if len(presses) < len(digits):
        return f"{len(presses)} key presses on the wire for {len(digits)} digits"
    deciding = presses[len(digits) - 1]
    if deciding.event != EVENT_CODES[digits[-1]]:
        return f"key press {len(digits)} is event {deciding.event}, not {digits[-1]!r}"
    invite = next((m for m in first_of_each_call(at_phone)
                   if m.is_invite and m.from_user == caller), None)  # fmt: skip
    if invite is None:
        return "no INVITE at the phone"
    edge = next((m for m in sorted(at_edge, key=lambda m: m.ts)
                 if m.is_invite and m.call_id == invite.call_id), None)  # fmt: skip
    return DigitSample(
        caller=caller,
        total_ms=(invite.ts - deciding.first_ts) * 1000,
        to_edge_ms=None if edge is None else (edge.ts - deciding.first_ts) * 1000,
        edge_to_phone_ms=None if edge is None else (invite.ts - edge.ts) * 1000,
        from_end_ms=None if deciding.end_ts is None else (invite.ts - deciding.end_ts) * 1000,
        packets_before_edge=sum(
            1 for ts in deciding.packet_ts if edge is not None and ts <= edge.ts
        ),
        marked=deciding.first_marked,
    )


@dataclass
class FreeSample:
    """Agent free -> the next INVITE at that agent's phone."""

    phone: int
    start_ts: float
    total_ms: float
    to_edge_ms: float | None
    edge_to_phone_ms: float | None
    caller: str
    waiting: int | None = None  # callers in the queue at start_ts (wire)
    oldest: bool | None = None  # the INVITE was for the oldest of them
    reference_ms: float | None = None  # api: from the HTTP request instead


def freed_after_bye(phone: int, messages: Sequence[SipMessage]) -> list[tuple[float, float]]:
    """(the phone's BYE sent, its 200 OK arriving at the phone) for each BYE the phone sent."""
    byes = first_of_each_call(
        m for m in messages if m.method == "BYE" and m.src == phone
    )  # one BYE per call
    pairs = []
    for bye in byes:
        ok = next((m for m in sorted(messages, key=lambda m: m.ts)
                   if m.dst == phone and m.status == 200 and m.cseq_method == "BYE"
                   and m.call_id == bye.call_id and m.ts >= bye.ts), None)  # fmt: skip
        if ok is not None:
            pairs.append((bye.ts, ok.ts))
    return pairs


def next_invite(
    phone: int, after_ts: float, messages: Sequence[SipMessage], known_calls: set[str]
) -> SipMessage | None:
    """The first INVITE of a call not in `known_calls` arriving at `phone` after `after_ts`."""
    return next((m for m in first_of_each_call(m for m in messages if m.dst == phone)
                 if m.is_invite and m.ts >= after_ts and m.call_id not in known_calls),
                None)  # fmt: skip


def free_sample(
    phone: int, start_ts: float, invite: SipMessage, at_edge: Sequence[SipMessage]
) -> FreeSample:
    edge = next((m for m in sorted(at_edge, key=lambda m: m.ts)
                 if m.is_invite and m.call_id == invite.call_id), None)  # fmt: skip
    return FreeSample(
        phone=phone, start_ts=start_ts, total_ms=(invite.ts - start_ts) * 1000,
        to_edge_ms=None if edge is None else (edge.ts - start_ts) * 1000,
        edge_to_phone_ms=None if edge is None else (invite.ts - edge.ts) * 1000,
        caller=invite.from_user,
    )  # fmt: skip


def bye_samples(
    phones: Sequence[int], messages: Sequence[SipMessage], at_edge: Sequence[SipMessage]
) -> list[FreeSample]:
    """bye mode: for each BYE an agent's phone sent, from the 200 OK answering it (at the
    phone) to the phone's next INVITE of a new call. The INVITE is searched from the BYE
    itself, so an INVITE that overtakes the 200 OK gives a negative latency, not a miss."""
    samples = []
    for phone in phones:
        at_phone = [m for m in messages if m.dst == phone or m.src == phone]
        known: set[str] = set()
        for bye_ts, ok_ts in freed_after_bye(phone, at_phone):
            known.update(m.call_id for m in at_phone if m.ts <= bye_ts)
            invite = next_invite(phone, bye_ts, at_phone, known)
            if invite is not None:
                samples.append(free_sample(phone, ok_ts, invite, at_edge))
    return sorted(samples, key=lambda s: s.start_ts)


@dataclass(frozen=True)
class QueueCaller:
    number: str
    answered_ts: float
    ended_ts: float | None


def queue_callers(caller_port: int, messages: Sequence[SipMessage]) -> list[QueueCaller]:
    """The callers of SIPp at `caller_port`: when their INVITE was answered (200 at the
    caller) and when their call ended (the first BYE either way), from the wire."""
    answered: dict[str, tuple[str, float]] = {}
    ended: dict[str, float] = {}
    for m in sorted(messages, key=lambda m: m.ts):
        if m.dst == caller_port and m.status == 200 and m.cseq_method == "INVITE":
            answered.setdefault(m.call_id, (m.from_user, m.ts))
        elif m.method == "BYE" and caller_port in (m.src, m.dst):
            ended.setdefault(m.call_id, m.ts)
    return [QueueCaller(number, ts, ended.get(call_id))
            for call_id, (number, ts) in answered.items()]  # fmt: skip


def waiting_at(
    ts: float, callers: Sequence[QueueCaller], offers: Sequence[SipMessage], greeting_s: float
) -> list[QueueCaller]:
    """Callers in the queue at `ts`, oldest first: answered at least `greeting_s` before (the
    greeting plays first), not yet named by an agent's INVITE (`offers`), not hung up."""
    offered = {m.from_user for m in offers if m.ts < ts}
    waiting = [c for c in callers
               if c.answered_ts + greeting_s <= ts and c.number not in offered
               and (c.ended_ts is None or c.ended_ts > ts)]  # fmt: skip
    return sorted(waiting, key=lambda c: c.answered_ts)


def mark_queue_state(
    samples: Sequence[FreeSample],
    callers: Sequence[QueueCaller],
    offers: Sequence[SipMessage],
    greeting_s: float,
) -> None:
    for sample in samples:
        waiting = waiting_at(sample.start_ts, callers, offers, greeting_s)
        sample.waiting = len(waiting)
        sample.oldest = bool(waiting) and waiting[0].number == sample.caller


@dataclass(frozen=True)
class Summary:
    count: int
    p50: float | None
    p99: float | None
    max: float | None
    min: float | None


def rank(ordered: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of sorted values."""
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def summarize(values: Iterable[float | None]) -> Summary:
    ordered = sorted(v for v in values if v is not None)
    if not ordered:
        return Summary(0, None, None, None, None)
    return Summary(len(ordered), rank(ordered, 0.5), rank(ordered, 0.99), ordered[-1],
                   ordered[0])  # fmt: skip


# -- SIPp: scenarios and processes ----------------------------------------------------------

REGISTER_SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="desk phone registration">
  <send retrans="500">
    <![CDATA[
      REGISTER sip:[remote_ip]:[remote_port] SIP/2.0{head}
      CSeq: 1 REGISTER
      Content-Length: 0
    ]]>
  </send>
  <recv response="401" auth="true"/>
  <send retrans="500">
    <![CDATA[
      REGISTER sip:[remote_ip]:[remote_port] SIP/2.0{head}
      CSeq: 2 REGISTER
      [authentication username={extension} password={password}]
      Content-Length: 0
    ]]>
  </send>
  <recv response="200"/>
</scenario>
"""
REGISTER_HEAD = """
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:{extension}@{domain}>;tag=[pid]SIPpReg[call_number]
      To: <sip:{extension}@{domain}>
      Call-ID: [call_id]
      Contact: <sip:{extension}@[local_ip]:[local_port]>
      Expires: {expires}
      Max-Forwards: 70"""

# An agent's desk phone: rings, answers at once, talks {talk_ms} ms and hangs up (BYE along
# the Record-Route). From/To of the BYE are the INVITE's To (with our tag) and From.
AGENT_PHONE_SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="agent phone that hangs up">
  <recv request="INVITE" crlf="true" rrs="true">
    <action>
      <ereg regexp="[^ ].*" search_in="hdr" header="From:" assign_to="remote"/>
      <ereg regexp="[^ ].*" search_in="hdr" header="To:" assign_to="local"/>
    </action>
  </recv>
  <send>
    <![CDATA[
      SIP/2.0 180 Ringing
      [last_Via:]
      [last_Record-Route:]
      [last_From:]
      [last_To:];tag=[pid]SIPpAgent[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:{extension}@[local_ip]:[local_port]>
      Content-Length: 0
    ]]>
  </send>
  <send retrans="500">
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_Record-Route:]
      [last_From:]
      [last_To:];tag=[pid]SIPpAgent[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:{extension}@[local_ip]:[local_port]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=agent 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000
    ]]>
  </send>
  <recv request="ACK"/>
  <pause milliseconds="{talk_ms}"/>
  <send retrans="500">
    <![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      From: [$local];tag=[pid]SIPpAgent[call_number]
      To: [$remote]
      Call-ID: [call_id]
      CSeq: 1 BYE
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <recv response="200"/>
</scenario>
"""

# A caller that waits in the queue: PCMA + telephone-event as bench.capacity's callers, speech
# from the ACK, until the service's BYE (after the agent hung up). SIPp starts the next caller
# when one ends: the pause keeps that new caller's INVITE out of the agent-free window that
# the BYE opens (it arrived inside it every time, and its set-up delayed the offer).
_CALLER_HEAD = """
      From: "Bench Caller" <sip:{prefix}[call_number]@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:{number}@[remote_ip]:[remote_port]>{peer_tag}
      Call-ID: [call_id]"""  # noqa: E501
QUEUE_CALLER_SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="caller waiting in a queue">
  <send retrans="500">
    <![CDATA[
      INVITE sip:{number}@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]{head}
      CSeq: 1 INVITE
      Contact: <sip:{prefix}[call_number]@[local_ip]:[local_port]>
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
  <recv response="200" rrs="true" timeout="32000"/>
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
  <recv request="BYE" timeout="{bye_timeout_ms}"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0
    ]]>
  </send>
  <pause milliseconds="{replace_after_ms}"/>
</scenario>
"""
# How long a served caller stays before SIPp may start the next one.
REPLACE_AFTER_S = 0.3


def sipp_argv(
    scenario: Path, *, port: int, media_port: int, timeout_s: float, remote: int | None = None,
) -> list[str]:  # fmt: skip
    return [
        "sipp", *([f"127.0.0.1:{remote}"] if remote is not None else []),
        "-sf", str(scenario), "-i", "127.0.0.1", "-p", str(port), "-mi", "127.0.0.1",
        "-mp", str(media_port), "-nostdin", "-timeout", f"{max(1, int(timeout_s))}s",
        "-timeout_error", "-trace_err", "-error_file", f"{scenario}.{port}.err",
    ]  # fmt: skip


def register_phone(
    folder: Path, edge_port: int, extension: str, password: str, domain: str, port: int
) -> None:
    """REGISTER `extension` (digest auth) with Contact 127.0.0.1:`port`, from that port."""
    head = REGISTER_HEAD.format(extension=extension, domain=domain, expires=REGISTER_EXPIRES_S)
    path = folder / f"register-{extension}.xml"
    path.write_text(REGISTER_SCENARIO.format(head=head, extension=extension, password=password))
    argv = sipp_argv(path, port=port, media_port=sipp_media_port(), timeout_s=10, remote=edge_port)
    done = subprocess.run([*argv, "-m", "1"], cwd=folder, capture_output=True, timeout=30)
    if done.returncode != 0:
        raise BenchError(f"registering {extension} failed (SIPp exit {done.returncode}); "
                         f"see {path}.{port}.err")  # fmt: skip


class Sipp:
    """A SIPp process of ours, bounded by its own -timeout; killed by pid in stop()."""

    def __init__(self, folder: Path, name: str, argv: list[str]) -> None:
        self.name = name
        self.out = folder / f"{name}.out"
        with self.out.open("wb") as out:
            self.process = subprocess.Popen(
                argv, cwd=folder, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )

    def running(self) -> bool:
        return self.process.poll() is None

    def wait(self, timeout_s: float) -> int:
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.stop()
            raise BenchError(f"SIPp {self.name} did not end within {timeout_s:.0f} s") from None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def _udp_bound(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def start_phone(folder: Path, name: str, scenario: Path, port: int, bound_s: float) -> Sipp:
    """A SIPp UAS on `port`; returns once it listens."""
    phone = Sipp(folder, name, sipp_argv(scenario, port=port, media_port=sipp_media_port(),
                                         timeout_s=bound_s))  # fmt: skip
    deadline = time.monotonic() + 5
    while not _udp_bound(port):
        if not phone.running() or time.monotonic() > deadline:
            phone.stop()
            raise BenchError(f"SIPp phone {name} did not start; see {phone.out}")
        time.sleep(0.05)
    return phone


# -- the service's configuration, over the REST API -----------------------------------------


def redis_port(service: Service) -> int:
    """The service's own Redis: not measured, captured for reading capture.pcap (what the
    controller asks Redis between the start event and the INVITE)."""
    return int(service.environ["PBX_REDIS__PORT"])


def spoken_prompt(service: Service, name: str, text: str) -> tuple[int, float]:
    """A prompt of the library: (id, seconds)."""
    prompt = service.api("POST", "/api/v1/prompts", {"name": name, "text": text})
    return int(prompt["id"]), float(prompt["seconds"])


def uploaded_prompt(service: Service, name: str, audio: bytes) -> tuple[int, float]:
    """POST /prompts/upload: (id, seconds)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{service.api_port}/api/v1/prompts/upload?"
        + urllib.parse.urlencode({"name": name}), data=audio, method="POST",
        headers={"Authorization": f"Bearer {service.token}", "Content-Type": "audio/wav"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=60) as response:
        prompt = json.loads(response.read())
    return int(prompt["id"]), float(prompt["seconds"])


def tone_wav(seconds: float, hz: float = 440.0) -> bytes:
    """A soft sine tone, 8 kHz mono 16-bit WAV."""
    rate = 8000
    samples = b"".join(
        struct.pack("<h", int(4000 * math.sin(2 * math.pi * hz * i / rate)))
        for i in range(int(seconds * rate))
    )
    out = io.BytesIO()
    with wave.open(out, "wb") as audio:
        audio.setnchannels(1)
        audio.setsampwidth(2)
        audio.setframerate(rate)
        audio.writeframes(samples)
    return out.getvalue()


def new_user_with_extension(service: Service, name: str, extension: str) -> tuple[int, str]:
    """(user id, SIP password)."""
    user = service.api("POST", "/api/v1/users", {"name": name})
    account = service.api("PUT", f"/api/v1/users/{user['id']}/extension",
                          {"extension": extension})  # fmt: skip
    return int(user["id"]), str(account["sip"]["password"])


def set_presence(service: Service, user_id: int, status: str, reason: str | None = None) -> Any:
    body: dict[str, Any] = {"status": status}
    if reason is not None:
        body["reason"] = reason
    return service.api("PUT", f"/api/v1/users/{user_id}/presence", body)


def timed_ready(service: Service, user_id: int) -> tuple[int, float]:
    """PUT presence ready on a connection of our own; returns its local port, by which the
    capture finds the request and the response, and the time just before it connected."""
    began = time.time()
    connection = http.client.HTTPConnection("127.0.0.1", service.api_port, timeout=30)
    try:
        connection.connect()
        assert connection.sock is not None
        port = int(connection.sock.getsockname()[1])
        connection.request(
            "PUT", f"/api/v1/users/{user_id}/presence", body=json.dumps({"status": "ready"}),
            headers={"Authorization": f"Bearer {service.token}",
                     "Content-Type": "application/json"},
        )  # fmt: skip
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise BenchError(f"PUT presence ready: HTTP {response.status}: {body!r}")
        return port, began
    finally:
        connection.close()


def http_first_segment(
    packets: Iterable[Packet], src: int, dst: int, after: float = -math.inf
) -> float | None:
    """When the first TCP segment with data went from port `src` to port `dst` after `after`
    (ephemeral ports are reused: `after` is when our connection began)."""
    return min((p.ts for p in packets if p.proto == IPPROTO_TCP and p.src == src
                and p.dst == dst and p.payload and p.ts >= after), default=None)  # fmt: skip


# -- mode: deciding digit -> INVITE at the phone --------------------------------------------


@dataclass
class Result:
    name: str
    what: str
    summary: Summary
    parts: dict[str, Summary] = field(default_factory=dict)
    cold_ms: float | None = None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)


def run_digit(service: Service, folder: Path, runs: int) -> Result:
    folder.mkdir(parents=True, exist_ok=True)
    _, password = new_user_with_extension(service, "Desk Phone", EXTENSION)
    for i, decoy in enumerate(DECOYS):
        new_user_with_extension(service, f"Decoy {i}", decoy)
    greeting_id, greeting_s = spoken_prompt(service, "latency greeting", "Welcome.")
    service.api("POST", "/api/v1/numbers", {
        "number": COMPANY_NUMBER, "name": "latency", "greeting": {"prompt_id": greeting_id},
        "extension_dialing": True, "default_destination": {"type": "hangup"},
    })  # fmt: skip
    phone_port, media_port = free_port(), sipp_media_port()
    register_phone(folder, service.sip_port, EXTENSION, password, "127.0.0.1", phone_port)
    # Digits start once the greeting is over (the caller heard it), 0.3 s of it to spare.
    digits_after_s = greeting_s + 0.3
    per_call_s = digits_after_s + 0.3 + 0.4 * len(EXTENSION) + 0.2 + 0.5 + 2
    phone = start_phone(folder, "desk-phone", Path(__file__).with_name("desk_phone_uas.xml"),
                        phone_port, bound_s=(runs + 1) * (per_call_s + 5) + 60)  # fmt: skip
    capture = LoopbackCapture(compile_port_filter(
        udp_src=[media_port], udp_dst=[phone_port, service.sip_port],
        tcp_either=[redis_port(service)],
    ))  # fmt: skip
    result = Result("digit", "deciding digit (first RTP packet) -> INVITE at the phone",
                    summarize([]))  # fmt: skip
    callers: list[str] = []
    capture.start()
    try:
        time.sleep(0.5)
        for run in range(runs + 1):  # run 0 warms up
            caller = f"49301{run:05d}"
            callers.append(caller)
            scenario = render_caller_scenario(
                folder, COMPANY_NUMBER, digits=EXTENSION, digits_after_s=digits_after_s,
                stay_s=0.5, caller=caller,
            )  # fmt: skip
            argv = sipp_argv(scenario, port=free_port(), media_port=media_port,
                             timeout_s=per_call_s + 30, remote=service.sip_port)  # fmt: skip
            sipp = Sipp(folder, f"caller-{run}", [*argv, "-m", "1", "-l", "1"])
            code = sipp.wait(per_call_s + 60)
            if code != 0:
                result.problems.append(f"run {run}: caller SIPp exit {code} (see {sipp.out})")
            service.check_alive()
            time.sleep(0.3)  # the last packets (BYE at the phone) settle
            if run == 0 or (run % 10 == 0):
                print(f"  digit run {run}/{runs}", flush=True)
    finally:
        capture.stop()
        capture.write_pcap(folder / "capture.pcap")
        phone.stop()
    _digit_figures(result, capture, callers, phone_port, service.sip_port, media_port)
    return result


def _digit_figures(result: Result, capture: LoopbackCapture, callers: list[str],
                   phone_port: int, edge_port: int, media_port: int) -> None:  # fmt: skip
    packets = capture.packets()
    messages = sip_messages(packets)
    at_phone = [m for m in messages if m.dst == phone_port]
    at_edge = [m for m in messages if m.dst == edge_port]
    # The caller's RTP, cut per call: from its INVITE at the edge to the next caller's.
    # (The worker's INVITE to the phone names the caller in From too: keep the first.)
    invites: dict[str, float] = {}
    for m in first_of_each_call(at_edge):
        if m.is_invite and m.from_user in callers:
            invites.setdefault(m.from_user, m.ts)
    events = [e for p in packets
              if p.proto == IPPROTO_UDP and p.src == media_port
              and (e := parse_telephone_event(p)) is not None]  # fmt: skip
    samples: list[DigitSample] = []
    for i, caller in enumerate(callers):
        begin = invites.get(caller)
        if begin is None:
            result.problems.append(f"caller {caller}: no INVITE at the edge")
            continue
        end = invites.get(callers[i + 1], math.inf) if i + 1 < len(callers) else math.inf
        sample = digit_sample(caller, EXTENSION, [e for e in events if begin <= e.ts < end],
                              at_phone, at_edge)  # fmt: skip
        if isinstance(sample, str):
            result.problems.append(f"caller {caller}: {sample}")
        elif i == 0:
            result.cold_ms = sample.total_ms
        else:
            samples.append(sample)
    result.summary = summarize(s.total_ms for s in samples)
    result.parts = {
        "digit -> INVITE at the edge (worker + controller)": summarize(
            s.to_edge_ms for s in samples),
        "edge -> phone (Kamailio relay)": summarize(s.edge_to_phone_ms for s in samples),
        "digit's end packet -> INVITE at the phone": summarize(s.from_end_ms for s in samples),
    }  # fmt: skip
    unmarked = sum(1 for s in samples if not s.marked)
    if unmarked:
        result.problems.append(f"{unmarked} deciding events whose first packet had no marker")
    negative = sum(1 for s in samples if s.total_ms < 0)
    if negative:
        result.notes.append(f"{negative} INVITEs left before the deciding digit's first packet")
    counts: dict[int, int] = {}
    for s in samples:
        counts[s.packets_before_edge] = counts.get(s.packets_before_edge, 0) + 1
    result.notes.append(
        "packets of the deciding event on the wire before the worker's INVITE reached the "
        "edge: " + ", ".join(f"{k}: {v} runs" for k, v in sorted(counts.items()))
    )
    result.notes.append(f"capture: {capture.received} packets kept, {capture.dropped} dropped "
                        f"by the kernel; ports: edge {edge_port}, phone {phone_port}, caller "
                        f"media {media_port}")  # fmt: skip
    if capture.dropped:
        result.problems.append(f"the capture dropped {capture.dropped} packets")
    result.samples = [asdict(s) for s in samples]


# -- mode: agent free -> INVITE for the oldest waiting caller -------------------------------


@dataclass
class AgentSetup:
    queue_id: int
    greeting_s: float
    agents: list[tuple[int, int]]  # (user id, phone port)
    phones: list[Sipp]


def setup_agents(service: Service, folder: Path, agents: int, talk_s: float,
                 bound_s: float) -> AgentSetup:  # fmt: skip
    members = []
    for i in range(agents):
        extension = str(AGENT_EXTENSIONS_FROM + i)
        user_id, password = new_user_with_extension(service, f"Agent {i}", extension)
        set_presence(service, user_id, "not_ready", "break")
        port = free_port()
        register_phone(folder, service.sip_port, extension, password, "127.0.0.1", port)
        members.append((user_id, port, extension))
    queue = service.api("POST", "/api/v1/queues", {
        "name": "latency", "members": [m[0] for m in members], "wrap_up_time": 0,
        "when_no_agents": "wait", "max_wait": 0,
    })  # fmt: skip
    # A short chime: the caller who replaces a served one must be in the queue before the
    # agent's next call ends (REPLACE_AFTER_S + greeting + set-up < --talk).
    greeting_id, greeting_s = uploaded_prompt(service, "queue chime", tone_wav(0.2))
    service.api("POST", "/api/v1/numbers", {
        "number": QUEUE_NUMBER, "name": "queue", "greeting": {"prompt_id": greeting_id},
        "extension_dialing": False, "default_destination": {"type": "queue", "id": queue["id"]},
    })  # fmt: skip
    phones = []
    for user_id, port, extension in members:
        scenario = folder / f"agent-{extension}.xml"
        scenario.write_text(AGENT_PHONE_SCENARIO.format(extension=extension,
                                                        talk_ms=int(talk_s * 1000)))  # fmt: skip
        phones.append(start_phone(folder, f"agent-{extension}", scenario, port, bound_s))
        del user_id
    return AgentSetup(int(queue["id"]), greeting_s, [(m[0], m[1]) for m in members], phones)


def start_callers(service: Service, folder: Path, name: str, prefix: str, port: int,
                  concurrent: int, calls: int, bound_s: float) -> Sipp:  # fmt: skip
    """Callers to the queue's number, `concurrent` at a time (a new one as one leaves),
    `calls` in all; their numbers are `prefix` + SIPp's call number."""
    folder.mkdir(parents=True, exist_ok=True)
    pcap = folder / "speech.pcap"
    write_speech_pcap(pcap, min(bound_s, 600.0))
    scenario = folder / f"{name}.xml"
    scenario.write_text(QUEUE_CALLER_SCENARIO.format(
        number=QUEUE_NUMBER, prefix=prefix,
        head=_CALLER_HEAD.format(number=QUEUE_NUMBER, peer_tag="", prefix=prefix),
        head_tagged=_CALLER_HEAD.format(number=QUEUE_NUMBER, peer_tag="[peer_tag_param]",
                                        prefix=prefix),
        pcap=pcap, bye_timeout_ms=int(bound_s * 1000),
        replace_after_ms=int(REPLACE_AFTER_S * 1000),
    ))  # fmt: skip
    argv = sipp_argv(scenario, port=port, media_port=sipp_media_port(), timeout_s=bound_s,
                     remote=service.sip_port)  # fmt: skip
    return Sipp(folder, name, [*argv, "-r", "10", "-l", str(concurrent), "-m", str(calls)])


def queue_waiting(service: Service, queue_id: int) -> int:
    return len(service.api("GET", f"/api/v1/queues/{queue_id}/waiting")["items"])


def presence_of(service: Service, user_id: int) -> dict[str, Any]:
    presence: dict[str, Any] = service.api("GET", f"/api/v1/users/{user_id}/presence")
    return presence


def _poll(what: str, check: Any, timeout_s: float, every_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out waiting for {what}")
        time.sleep(every_s)


def _phone_invites(capture: LoopbackCapture, phones: Sequence[int]) -> int:
    """INVITEs of new calls that reached the agents' phones so far (cheap: SIP only)."""
    ports = set(phones)
    return len(first_of_each_call(
        m for m in sip_messages(p for p in capture.packets() if p.dst in ports) if m.is_invite
    ))  # fmt: skip


def run_agent_free(service: Service, folder: Path, runs: int, agents: int, waiting: int,
                   talk_s: float) -> list[Result]:  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    cycle_s = talk_s + 0.5
    bound_s = (runs + waiting + 2) * (cycle_s + 3) * 2 + 120
    setup = setup_agents(service, folder, agents, talk_s, bound_s)
    if talk_s < REPLACE_AFTER_S + setup.greeting_s + 0.3:
        print(f"  note: with --talk {talk_s:g} the next caller may not be in the queue yet "
              "when the agent hangs up (such samples are left out)")  # fmt: skip
    phones = [port for _, port in setup.agents]
    caller_port = free_port()
    capture = LoopbackCapture(compile_port_filter(
        udp_src=phones, udp_dst=[*phones, service.sip_port, caller_port],
        tcp_either=[service.api_port, redis_port(service)],
    ))  # fmt: skip
    bye = Result("agent-free bye", "200 OK to the agent's BYE -> next INVITE at that phone",
                 summarize([]))  # fmt: skip
    api = Result("agent-free api", "HTTP response of PUT presence ready -> INVITE at the phone",
                 summarize([]))  # fmt: skip
    api_ports: list[tuple[int, float, int]] = []  # (client port, connected at, phone port)
    capture.start()
    callers: Sipp | None = None
    try:
        # bye: -l waiting + agents: at each BYE the agents' own callers leave, `waiting` stay.
        print(f"  bye: {waiting} waiting callers, {agents} agents, talk {talk_s:g} s", flush=True)
        callers = start_callers(service, folder / "bye", "callers-bye", "49309981", caller_port,
                                waiting + agents, runs + waiting + agents + 1, bound_s)  # fmt: skip
        _poll(f"{waiting + agents} callers in the queue",
              lambda: queue_waiting(service, setup.queue_id) >= waiting + agents,
              60, 0.5)  # fmt: skip
        time.sleep(0.5)
        for user_id, _ in setup.agents:
            set_presence(service, user_id, "ready")
        # Every caller SIPp places is served: the last `waiting + agents` drain the queue.
        callers.wait(bound_s + 30)
        service.check_alive()
        print(f"  bye: {_phone_invites(capture, phones)} offers", flush=True)

        # api: the agents end each call not_ready (asked during it); `waiting` wait.
        print(f"  api: {waiting} waiting callers, presence ready over HTTP", flush=True)
        for user_id, _ in setup.agents:
            set_presence(service, user_id, "not_ready", "break")
        callers = start_callers(service, folder / "api", "callers-api", "49309982", caller_port,
                                waiting, runs + waiting + 1, bound_s)  # fmt: skip
        for run in range(runs + 1):  # run 0 warms up
            user_id, phone = setup.agents[run % agents]
            _poll("the agent not ready and idle", lambda u=user_id: _not_ready_idle(service, u),
                  30)  # fmt: skip
            # The queue may still list the caller that just left for a moment: give the next
            # caller time to arrive and hear the greeting before counting.
            time.sleep(REPLACE_AFTER_S + setup.greeting_s + 0.4)
            _poll(
                f"{waiting} callers in the queue",
                lambda: queue_waiting(service, setup.queue_id) >= waiting,
                30,
                0.1,
            )
            time.sleep(0.3)
            api_ports.append((*timed_ready(service, user_id), phone))
            time.sleep(0.3)  # no API request of ours while the offer is on its way
            _poll("the agent in the call", lambda u=user_id: presence_of(service, u)["activity"]
                  == "in_call", 30)  # fmt: skip
            set_presence(service, user_id, "not_ready", "break")  # pending until the call ends
            if run % 10 == 0:
                print(f"  api run {run}/{runs}", flush=True)
        for user_id, _ in setup.agents:  # the last callers drain the queue
            set_presence(service, user_id, "ready")
        callers.wait(bound_s + 30)
        service.check_alive()
    finally:
        capture.stop()
        capture.write_pcap(folder / "capture.pcap")
        if callers is not None:
            callers.stop()
        for phone_sipp in setup.phones:
            phone_sipp.stop()
    _agent_figures(bye, api, capture, setup, service, caller_port, api_ports, waiting, runs)
    return [bye, api]


def _not_ready_idle(service: Service, user_id: int) -> bool:
    presence = presence_of(service, user_id)
    return bool(presence["status"] == "not_ready" and presence["activity"] == "idle"
                and presence["pending"] is None)  # fmt: skip


def _agent_figures(bye: Result, api: Result, capture: LoopbackCapture, setup: AgentSetup,
                   service: Service, caller_port: int,
                   api_ports: list[tuple[int, float, int]], waiting: int,
                   runs: int) -> None:  # fmt: skip
    packets = capture.packets()
    messages = sip_messages(packets)
    phones = [port for _, port in setup.agents]
    at_edge = [m for m in messages if m.dst == service.sip_port]
    offers = [m for m in first_of_each_call(m for m in messages if m.dst in phones)
              if m.is_invite]  # fmt: skip
    callers = queue_callers(caller_port, messages)
    # The greeting, then the join: a caller counts as waiting 0.1 s after the greeting ends.
    join_s = setup.greeting_s + 0.1

    # bye: only the samples taken while the api phase had not begun.
    api_begin = min((began for _, began, _ in api_ports), default=math.inf)
    samples = [s for s in bye_samples(phones, messages, at_edge) if s.start_ts < api_begin]
    mark_queue_state(samples, callers, offers, join_s)
    full = [s for s in samples if s.waiting is not None and s.waiting >= waiting]
    fewer = len(samples) - len(full)
    _fill_free(bye, full[1 : runs + 1], waiting)
    bye.cold_ms = full[0].total_ms if full else None
    bye.notes.append(f"{fewer} samples with fewer than {waiting} callers waiting left out "
                     f"(the start, and the drain at the end); {max(0, len(full) - 1 - runs)} "
                     "beyond --runs")  # fmt: skip

    api_samples = []
    for run, (client_port, began, phone) in enumerate(api_ports):
        response_ts = http_first_segment(packets, service.api_port, client_port, began)
        request_ts = http_first_segment(packets, client_port, service.api_port, began)
        if response_ts is None or request_ts is None:
            api.problems.append(f"api run {run}: the HTTP exchange is not in the capture")
            continue
        invite = next_invite(phone, request_ts, [m for m in messages if m.dst == phone], set())
        if invite is None:
            api.problems.append(f"api run {run}: no INVITE at the phone")
            continue
        sample = free_sample(phone, response_ts, invite, at_edge)
        sample.reference_ms = (invite.ts - request_ts) * 1000
        api_samples.append(sample)
    mark_queue_state(api_samples, callers, offers, join_s)
    api.cold_ms = api_samples[0].total_ms if api_samples else None
    full = [s for s in api_samples[1:] if s.waiting is not None and s.waiting >= waiting]
    _fill_free(api, full, waiting)
    api.parts["HTTP request (first segment) -> INVITE at the phone"] = summarize(
        s.reference_ms for s in full
    )
    if len(full) < len(api_samples) - 1:
        api.notes.append(f"{len(api_samples) - 1 - len(full)} samples with fewer than "
                         f"{waiting} callers waiting left out")  # fmt: skip
    for result in (bye, api):
        result.notes.append(f"capture: {capture.received} packets kept, {capture.dropped} "
                            f"dropped by the kernel; ports: edge {service.sip_port}, phones "
                            f"{phones}, callers {caller_port}, API {service.api_port}; "
                            f"queue greeting {setup.greeting_s:.2f} s")  # fmt: skip
        if capture.dropped:
            result.problems.append(f"the capture dropped {capture.dropped} packets")


def _fill_free(result: Result, samples: list[FreeSample], waiting: int) -> None:
    result.summary = summarize(s.total_ms for s in samples)
    result.parts.update({
        "-> INVITE at the edge (controller + worker)": summarize(s.to_edge_ms for s in samples),
        "edge -> phone (Kamailio relay)": summarize(s.edge_to_phone_ms for s in samples),
    })  # fmt: skip
    counts = sorted({s.waiting for s in samples if s.waiting is not None})
    oldest = sum(1 for s in samples if s.oldest)
    result.notes.append(f"callers waiting at the start (wire): {counts or '-'}; "
                        f"INVITE for the oldest of them: {oldest} of {len(samples)}")  # fmt: skip
    negative = sum(1 for s in samples if s.total_ms < 0)
    if negative:
        result.notes.append(f"{negative} INVITEs reached the phone before the start event")
    result.samples = [asdict(s) for s in samples]
    if len(samples) == 0:
        result.problems.append("no samples")


# -- output and main ------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def print_results(results: list[Result], extra: dict[str, Any]) -> None:
    print()
    for key, value in extra.items():
        print(f"{key}: {value}")
    for r in results:
        s = r.summary
        print(f"\n{r.name}: {r.what}")
        print(f"  n {s.count}  p50 {_ms(s.p50)} ms  p99 {_ms(s.p99)} ms  max {_ms(s.max)} ms  "
              f"min {_ms(s.min)} ms  (cold first run {_ms(r.cold_ms)} ms)")  # fmt: skip
        for label, part in r.parts.items():
            print(f"    {label}: p50 {_ms(part.p50)}  p99 {_ms(part.p99)}  max {_ms(part.max)}")
        for note in r.notes:
            print(f"  {note}")
        for problem in r.problems[:10]:
            print(f"  PROBLEM: {problem}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("mode", nargs="?", default="all", choices=["digit", "agent-free", "all"])
    parser.add_argument("--runs", type=int, default=30, help="samples per measurement")
    parser.add_argument("--agents", type=int, default=1, help="agent-free: agents in the queue")
    parser.add_argument("--waiting", type=int, default=10, help="agent-free: callers waiting")
    parser.add_argument("--talk", type=float, default=1.0, help="agent-free: seconds talked")
    parser.add_argument("--settle", type=float, default=5.0,
                        help="seconds after /health is ok before the first call")  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the run folder")
    args = parser.parse_args(argv)
    for name in ("runs", "agents", "waiting", "talk"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name} must be positive")
    return args


def run(args: argparse.Namespace) -> int:
    if shutil.which("sipp") is None:
        print("sipp is not installed (Debian package sip-tester)", file=sys.stderr)
        return 1
    folder = Path(tempfile.mkdtemp(prefix="pbx-latency-"))
    extra: dict[str, Any] = {
        "mode": args.mode,
        "folder": str(folder),
        "load before": Path("/proc/loadavg").read_text().strip(),
    }
    print(f"run folder: {folder}; load average {extra['load before']}", flush=True)
    results: list[Result] = []
    modes = ["digit", "agent-free"] if args.mode == "all" else [args.mode]
    try:
        for mode in modes:
            service = Service(folder / mode)
            service.folder.mkdir(parents=True, exist_ok=True)
            try:
                started = service.start()
                print(f"{mode}: service up after {started:.1f} s (pid {service.pid})", flush=True)
                time.sleep(args.settle)
                if mode == "digit":
                    results.append(run_digit(service, folder / mode / "sipp", args.runs))
                else:
                    results.extend(run_agent_free(
                        service, folder / mode / "sipp", args.runs, args.agents, args.waiting,
                        args.talk,
                    ))  # fmt: skip
            finally:
                service.stop()
    except (BenchError, CaptureError) as exc:
        print(f"\nBENCHMARK FAILED: {exc}", file=sys.stderr)
        extra["error"] = str(exc)
    except KeyboardInterrupt:
        extra["error"] = "interrupted"
    except Exception as exc:  # a bug of the benchmark: still report what there is
        traceback.print_exc()
        extra["error"] = f"{type(exc).__name__}: {exc}"
    extra["load after"] = Path("/proc/loadavg").read_text().strip()
    print_results(results, extra)
    ok = "error" not in extra and all(r.summary.count and not r.problems for r in results)
    if args.json is not None:
        args.json.write_text(json.dumps({**extra, "results": [asdict(r) for r in results]},
                                        indent=2) + "\n")  # fmt: skip
        print(f"written to {args.json}")
    if ok and not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    else:
        print(f"kept for inspection: {folder}")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
