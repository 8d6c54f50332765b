"""Media workers against real PJSUA2 phones, without the edge: commands, events, capacity.

The controller side here is a small inline call flow; the real flows are tested through
Kamailio in test_calls.py.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import math
import os
import signal
import socket
import subprocess
import sys
import uuid
import wave
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from core.settings import WorkerSettings
from pbx.capacity import WorkerState
from pbx.channel import WorkerSpec
from pbx.forked_workers import ForkedWorkers
from pbx.legs import Leg, LegGone, TransferRequest
from pbx.pool import WorkerPool
from pbx.protocol import (
    FINAL_HEADER,
    LINK_HEADER,
    MEDIA_TIMEOUT_REASON,
    Answer,
    Hello,
    IncomingCall,
    decode_event,
    encode,
)
from pbx.ua_thread import shared_user_agent
from tests.support.phone import TestCall, TestPhone
from tests.support.ports import free_port, free_port_block
from tests.support.sipp import call_number

Flow = Callable[[Leg], Awaitable[None]]
MEDIA_TIMEOUT_S = 2
MakePhone = Callable[..., Awaitable[TestPhone]]


# Workers and phones only: no SQL to run again on PostgreSQL (Makefile).
pytestmark = pytest.mark.no_sql


class Controller:
    """Hands each inbound leg to whichever flow the current test installed."""

    def __init__(self) -> None:
        self.flow: Flow | None = None
        self.legs: asyncio.Queue[Leg] = asyncio.Queue()

    def reset(self, flow: Flow | None) -> None:
        self.flow = flow
        while not self.legs.empty():
            self.legs.get_nowait()

    async def on_inbound(self, leg: Leg) -> None:
        await self.legs.put(leg)
        if self.flow is not None:
            await self.flow(leg)


def make_tone(path: Path, seconds: float, frequency: int = 440) -> Path:
    subprocess.run(
        ["sox", "-n", "-r", "8000", "-c", "1", "-b", "16", str(path), "synth", str(seconds),
         "sine", str(frequency)],
        check=True,
    )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def prompts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("prompts")
    make_tone(folder / "greeting.wav", 3)
    make_tone(folder / "short.wav", 0.4, 660)
    return folder


@pytest.fixture(scope="module")
async def pool() -> AsyncIterator[tuple[WorkerPool, Controller]]:
    ua = shared_user_agent()
    controller = Controller()
    settings = WorkerSettings(
        max_workers=2, spare_legs=8, first_sip_port=free_port_block(2),
        first_rtp_port=free_port_block(80),
        rtp_ports_per_worker=40,
    )  # fmt: skip
    workers = WorkerPool(
        settings, trusted=[f"127.0.0.1:{ua.sip_port}"], on_inbound=controller.on_inbound
    )
    await workers.start()
    yield workers, controller
    pids = [w.pid for w in workers.workers]
    await workers.stop()
    await workers.stop()  # idempotent
    for pid in pids:
        assert pid is not None and not Path(f"/proc/{pid}").exists(), f"worker {pid} left behind"


@pytest.fixture
async def phones() -> AsyncIterator[MakePhone]:
    opened: list[TestPhone] = []

    async def make(username: str, auto_answer: int | None = None) -> TestPhone:
        phone = TestPhone(auto_answer=auto_answer)
        await phone.open_unregistered(username)
        opened.append(phone)
        return phone

    yield make
    for phone in opened:
        phone.close()


def worker_uri(pool: WorkerPool, worker: int, user: str = "company") -> str:
    return f"sip:{user}@127.0.0.1:{pool.workers[worker].sip_port}"


async def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)


async def collect_until_hash(leg: Leg) -> str:
    digits = ""
    while not digits.endswith("#"):
        digit = await leg.next_digit(timeout=5.0)
        assert digit is not None, f"no digit after {digits!r}"
        digits += digit
    return digits


async def assert_both_hear_each_other(a: TestCall, b: TestCall) -> None:
    """Each phone plays a tone: after a bridge each must receive RTP carrying it, not silence."""
    before = (await a.rx_packets(), await b.rx_packets())
    await asyncio.sleep(1.0)
    after = (await a.rx_packets(), await b.rx_packets())
    assert after[0] - before[0] > 35 and after[1] - before[1] > 35, (before, after)
    levels = (await a.rx_level(), await b.rx_level())
    assert min(levels) > 10, f"rx levels {levels}: one side hears silence"


def rtp_dropped(first_port: int, ports: int = 40) -> int:
    """Packets the kernel dropped at the UDP sockets now bound to 127.0.0.1 in this port
    range (the last column of /proc/net/udp: a socket filter's drops count there). A closed
    socket's count goes with it."""
    dropped = 0
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        address, port = fields[1].split(":")
        if address == "0100007F" and first_port <= int(port, 16) < first_port + ports:
            dropped += int(fields[-1])
    return dropped


def invite_from_elsewhere(port: int) -> tuple[int, str]:
    """The final status and answer a worker gives an INVITE (without SDP) from an address it
    does not trust."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)
        here = sock.getsockname()[1]
        call_id = uuid.uuid4().hex
        head = (
            f"INVITE sip:company@127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{here};rport;branch=z9hG4bK{call_id}\r\n"
            f"From: <sip:intruder@127.0.0.1:{here}>;tag={call_id[:8]}\r\n"
            f"To: <sip:company@127.0.0.1:{port}>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\n"
            f"Contact: <sip:intruder@127.0.0.1:{here}>\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        sock.sendto(head.encode(), ("127.0.0.1", port))
        while True:
            answer = sock.recv(65535)
            status = int(answer.split(b" ", 2)[1])
            if status >= 200:
                return status, answer.decode()


async def test_workers_discover_their_leg_cap(pool: tuple[WorkerPool, Controller]) -> None:
    workers, _ = pool
    assert all(w.state is WorkerState.READY and w.max_legs >= 2 and w.pid for w in workers.workers)
    assert workers.workers_alive == 2
    assert workers.legs_capacity == sum(w.max_legs for w in workers.workers)
    ports = [w.sip_port for w in workers.workers]
    assert workers.dispatcher_targets() == [f"sip:127.0.0.1:{p}" for p in ports]


async def test_greeting_digits_dial_bridge_and_hangup(
    pool: tuple[WorkerPool, Controller], phones: MakePhone, prompts: Path
) -> None:
    workers, controller = pool
    caller_phone = await phones("caller")
    agent_phone = await phones("agent", auto_answer=200)
    legs: asyncio.Future[tuple[Leg, Leg]] = asyncio.get_running_loop().create_future()
    digits_heard: asyncio.Future[tuple[str, bool]] = asyncio.get_running_loop().create_future()

    async def flow(leg: Leg) -> None:
        await leg.answer()
        playback = await leg.play(prompts / "greeting.wav", barge_in=True)
        digits = await collect_until_hash(leg)
        digits_heard.set_result((digits, await playback.finished))
        agent = await leg.dial(
            f"sip:agent@{agent_phone.address}", timeout=10, headers={"X-PBX-Call": "42"}
        )
        await agent.answered
        await leg.bridge(agent)
        legs.set_result((leg, agent))

    controller.reset(flow)
    call = await caller_phone.call(
        worker_uri(workers, 0), headers={"X-PBX-Trunk": "provider", "X-Other": "dropped"}
    )
    await asyncio.wait_for(call.answered, 5)
    inbound = controller.legs.get_nowait()
    assert inbound.headers == {"X-PBX-Trunk": "provider"}
    assert (inbound.caller, inbound.called, inbound.direction) == ("caller", "company", "inbound")
    assert inbound.sip_call_id
    await asyncio.sleep(0.5)
    assert await call.rx_level() > 10, "the caller should hear the greeting"
    await call.send_dtmf("1001#")
    digits, interrupted = await asyncio.wait_for(digits_heard, 10)
    assert digits == "1001#"
    assert interrupted, "the first digit should have stopped the greeting"
    leg, agent_leg = await asyncio.wait_for(legs, 10)
    assert workers.workers[0].legs_in_use == 2
    agent_call = await agent_phone.next_incoming()
    await assert_both_hear_each_other(call, agent_call)

    await agent_leg.send_dtmf("5*")
    await wait_until(lambda: agent_call.dtmf_received == ["5", "*"])
    await leg.unbridge(agent_leg)
    await asyncio.sleep(0.3)  # a tick for the bridge, then what is left in the jitter buffer
    assert await call.rx_level() < 5, "after unbridge the caller hears nobody"

    await agent_call.hangup()
    assert (await asyncio.wait_for(agent_leg.ended, 5)).code == 200
    await leg.hangup()  # the flow's job: the other side follows
    assert await asyncio.wait_for(call.ended, 5) == 200
    await asyncio.wait_for(leg.ended, 5)
    with pytest.raises(LegGone):
        await leg.play(prompts / "short.wav")
    assert workers.workers[0].legs_in_use == 0


async def test_speech_nobody_hears_is_dropped_by_the_kernel_but_digits_and_bridged_speech_pass(
    pool: tuple[WorkerPool, Controller], phones: MakePhone, prompts: Path
) -> None:
    """A caller hearing a prompt sends speech the worker has no use for: after a second its
    RTP socket's filter drops it (pbx.unheard_speech). Its digits still arrive, and once it
    is bridged every packet does. The next call on the worker, bridged at once, is never
    filtered."""
    workers, controller = pool
    worker = workers.workers[0]
    caller_phone = await phones("caller")
    agent_phone = await phones("agent", auto_answer=200)
    bridged: asyncio.Queue[tuple[Leg, Leg]] = asyncio.Queue()

    async def flow(leg: Leg) -> None:
        await leg.answer()
        await leg.play(prompts / "greeting.wav", loop=True)
        assert await leg.next_digit(timeout=30.0) == "1"
        agent = await leg.dial(f"sip:agent@{agent_phone.address}", timeout=10)
        await agent.answered
        await leg.bridge(agent)
        await bridged.put((leg, agent))

    async def talk_and_hang_up(call: TestCall) -> int:
        leg, agent_leg = await asyncio.wait_for(bridged.get(), 10)
        agent_call = await agent_phone.next_incoming()
        await assert_both_hear_each_other(call, agent_call)
        dropped_while_bridged = rtp_dropped(worker.rtp_port)
        await assert_both_hear_each_other(call, agent_call)
        dropped = rtp_dropped(worker.rtp_port) - dropped_while_bridged
        await leg.hangup()
        await agent_leg.hangup()
        await asyncio.wait_for(call.ended, 5)
        return dropped

    controller.reset(flow)
    dropped_before = rtp_dropped(worker.rtp_port)
    call = await caller_phone.call(worker_uri(workers, 0))
    await asyncio.wait_for(call.answered, 5)
    await wait_until(lambda: rtp_dropped(worker.rtp_port) - dropped_before > 40)
    assert await call.rx_level() > 10, "the caller still hears the prompt"
    await call.send_dtmf("1")
    assert await talk_and_hang_up(call) == 0

    again = await caller_phone.call(worker_uri(workers, 0))
    await asyncio.wait_for(again.answered, 5)
    await again.send_dtmf("1")
    assert await talk_and_hang_up(again) == 0


async def test_prompt_ends_loops_and_recording_stops_at_its_limit(
    pool: tuple[WorkerPool, Controller], phones: MakePhone, prompts: Path, tmp_path: Path
) -> None:
    workers, controller = pool
    phone = await phones("voicemail")
    answered: asyncio.Future[Leg] = asyncio.get_running_loop().create_future()

    async def flow(leg: Leg) -> None:
        await leg.answer()
        answered.set_result(leg)

    controller.reset(flow)
    call = await phone.call(worker_uri(workers, 1))
    leg = await asyncio.wait_for(answered, 5)
    await asyncio.wait_for(leg.answered, 5)
    once = await leg.play(prompts / "short.wav", barge_in=False)
    assert await asyncio.wait_for(once.finished, 3) is False
    looped = await leg.play(prompts / "short.wav", loop=True)
    await asyncio.sleep(1.0)  # more than twice its length
    assert not looped.finished.done()
    await leg.stop_playback()
    assert await asyncio.wait_for(looped.finished, 2) is True

    await call.play(prompts / "greeting.wav", loop=True)
    recording = await leg.record(tmp_path / "message.wav", max_seconds=1.0)
    seconds = await asyncio.wait_for(recording.finished, 3)
    assert 0.9 < seconds < 1.5
    with wave.open(str(tmp_path / "message.wav")) as wav:
        assert 0.7 < wav.getnframes() / wav.getframerate() < 1.5
        samples = array.array("h", wav.readframes(wav.getnframes()))
    assert max(samples) > 3000, "the recording should hold the caller's tone"
    await call.hangup()
    assert (await asyncio.wait_for(leg.ended, 5)).code == 200


async def test_a_transfer_from_a_phone_is_declined_and_the_call_goes_on(
    pool: tuple[WorkerPool, Controller], phones: MakePhone
) -> None:
    """A REFER while no flow takes transfers on the leg is declined (NOTIFY 603): pjsua must
    not dial the Refer-To itself, past the controller, reusing the agent leg's object for the
    new call (docs/notes/refer-in-pjsua2.md)."""
    workers, controller = pool
    caller_phone = await phones("transferred")
    agent_phone = await phones("declining-agent", auto_answer=200)
    bridged: asyncio.Future[tuple[Leg, Leg]] = asyncio.get_running_loop().create_future()

    async def flow(leg: Leg) -> None:
        await leg.answer()
        agent = await leg.dial(f"sip:declining-agent@{agent_phone.address}", timeout=10)
        await agent.answered
        await leg.bridge(agent)
        bridged.set_result((leg, agent))

    controller.reset(flow)
    call = await caller_phone.call(worker_uri(workers, 0))
    leg, agent_leg = await asyncio.wait_for(bridged, 10)
    agent_call = await agent_phone.next_incoming()
    await assert_both_hear_each_other(call, agent_call)  # a call under way, as a person's
    await agent_call.transfer(f"sip:colleague@{caller_phone.address}")
    await wait_until(lambda: agent_call.transfer_results == [603])
    await assert_both_hear_each_other(call, agent_call)
    assert workers.workers[0].legs_in_use == 2, "nothing was dialled for the transfer"
    await leg.hangup()
    await agent_leg.hangup()
    await asyncio.wait_for(call.ended, 5)


async def test_a_transfer_request_reaches_the_flow_that_takes_it_and_its_answer_the_phone(
    pool: tuple[WorkerPool, Controller], phones: MakePhone
) -> None:
    """The REFER is the controller's: the worker reports it (target, no Replaces) and sends
    the NOTIFY the flow asks for ("200": done), then the flow ends the transferring leg."""
    workers, controller = pool
    caller_phone = await phones("transferred")
    agent_phone = await phones("transferring-agent", auto_answer=200)
    loop = asyncio.get_running_loop()
    taking: asyncio.Future[None] = loop.create_future()
    requests: asyncio.Future[TransferRequest] = loop.create_future()

    async def flow(leg: Leg) -> None:
        await leg.answer()
        agent = await leg.dial(f"sip:transferring-agent@{agent_phone.address}", timeout=10)
        await agent.answered
        await leg.bridge(agent)
        with agent.taking_transfers() as transfers:
            taking.set_result(None)
            request = await transfers.get()
            requests.set_result(request)
            await agent.report_transfer(request, 200, "OK")
        await agent.hangup()
        await leg.hangup()

    controller.reset(flow)
    call = await caller_phone.call(worker_uri(workers, 0))
    agent_call = await agent_phone.next_incoming()
    await asyncio.wait_for(taking, 10)
    await assert_both_hear_each_other(call, agent_call)
    await agent_call.transfer("sip:1002@127.0.0.1")
    request = await asyncio.wait_for(requests, 10)
    assert (request.target, request.replaces, request.target_user) == (
        "sip:1002@127.0.0.1", None, "1002",
    )  # fmt: skip
    await wait_until(lambda: agent_call.transfer_results == [200])
    await asyncio.wait_for(agent_call.ended, 10)
    await asyncio.wait_for(call.ended, 10)
    assert workers.workers[0].legs_in_use == 0, "pjsua dialled nothing itself"


def tone_strength(samples: array.array[int], frequency: float, rate: int = 8000) -> float:
    """How strong one frequency is in the samples (Goertzel), relative to their energy."""
    coefficient = 2 * math.cos(2 * math.pi * frequency / rate)
    previous = before = 0.0
    for sample in samples:
        previous, before = sample + coefficient * previous - before, previous
    power = previous**2 + before**2 - coefficient * previous * before
    energy = sum(sample * sample for sample in samples) or 1
    return power / (energy * len(samples))


async def test_a_call_recording_holds_both_voices_and_a_message_only_the_callers(
    pool: tuple[WorkerPool, Controller], phones: MakePhone, prompts: Path, tmp_path: Path
) -> None:
    """The caller plays 440 Hz, the agent 660 Hz. Recording both sides of the bridge keeps
    both tones; recording the caller's side alone (a voicemail) keeps only theirs."""
    workers, controller = pool
    caller_phone = await phones("recorded")
    agent_phone = await phones("agent", auto_answer=200)
    bridged: asyncio.Future[tuple[Leg, Leg]] = asyncio.get_running_loop().create_future()

    async def flow(leg: Leg) -> None:
        await leg.answer()
        agent = await leg.dial(f"sip:agent@{agent_phone.address}", timeout=10)
        await agent.answered
        await leg.bridge(agent)
        bridged.set_result((leg, agent))

    controller.reset(flow)
    call = await caller_phone.call(worker_uri(workers, 1))
    leg, agent_leg = await asyncio.wait_for(bridged, 10)
    agent_call = await agent_phone.next_incoming()
    await call.play(prompts / "greeting.wav", loop=True)
    await agent_call.play(prompts / "short.wav", loop=True)
    strengths = {}
    for name, both_sides in (("call.wav", True), ("caller.wav", False)):
        recording = await leg.record(tmp_path / name, max_seconds=1.5, both_sides=both_sides)
        await asyncio.wait_for(recording.finished, 4)
        with wave.open(str(tmp_path / name)) as wav:
            samples = array.array("h", wav.readframes(wav.getnframes()))
        strengths[name] = (tone_strength(samples, 440), tone_strength(samples, 660))
    # A pure tone scores 0.5; measured: both sides 0.25 and 0.03, the caller alone 0.36 and
    # 1e-7 (the agent's phone sends its tone more quietly).
    caller_tone, agent_tone = strengths["call.wav"]
    assert caller_tone > 0.05 and agent_tone > 0.005, strengths
    caller_tone, agent_tone = strengths["caller.wav"]
    assert caller_tone > 0.05 and agent_tone < 0.0005, strengths
    await leg.hangup()
    await agent_leg.hangup()
    await asyncio.wait_for(call.ended, 5)


async def test_recording_stops_after_silence_and_completes_when_the_caller_leaves(
    pool: tuple[WorkerPool, Controller], phones: MakePhone, prompts: Path, tmp_path: Path
) -> None:
    workers, controller = pool
    phone = await phones("voicemail-silence")
    quiet = tmp_path / "quiet.wav"
    subprocess.run(["sox", "-n", "-r", "8000", "-c", "1", "-b", "16", str(quiet), "trim", "0",
                    "10"], check=True)  # fmt: skip
    answered: asyncio.Future[Leg] = asyncio.get_running_loop().create_future()

    async def flow(leg: Leg) -> None:
        await leg.answer()
        answered.set_result(leg)

    controller.reset(flow)
    call = await phone.call(worker_uri(workers, 0))
    leg = await asyncio.wait_for(answered, 5)
    await asyncio.wait_for(leg.answered, 5)
    await call.play(prompts / "greeting.wav", loop=True)
    first = await leg.record(tmp_path / "one.wav", max_seconds=20.0, silence_s=1.0)
    await asyncio.sleep(2.0)
    assert not first.finished.done(), "a talking caller is not silence"
    await call.play(quiet, loop=True)
    seconds = await asyncio.wait_for(first.finished, 4)
    assert 2.5 < seconds < 4.5

    # The caller hangs up mid-message: the file is still completed and reported.
    await call.play(prompts / "greeting.wav", loop=True)
    second = await leg.record(tmp_path / "two.wav", max_seconds=20.0, silence_s=5.0)
    await asyncio.sleep(1.5)
    await call.hangup()
    await asyncio.wait_for(leg.ended, 5)
    seconds = await asyncio.wait_for(second.finished, 3)
    assert 1.0 < seconds < 2.5
    with wave.open(str(tmp_path / "two.wav")) as wav:
        assert 1.0 < wav.getnframes() / wav.getframerate() < 2.5
        samples = array.array("h", wav.readframes(wav.getnframes()))
    assert max(samples) > 3000


async def test_busy_and_ring_timeout_are_reported(
    pool: tuple[WorkerPool, Controller], phones: MakePhone
) -> None:
    workers, controller = pool
    caller_phone = await phones("caller2")
    busy_phone = await phones("busy", auto_answer=486)
    silent_phone = await phones("silent")
    codes: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()

    async def flow(leg: Leg) -> None:
        await leg.answer()
        busy = await leg.dial(f"sip:busy@{busy_phone.address}", timeout=10)
        silent = await leg.dial(f"sip:silent@{silent_phone.address}", timeout=1.0)
        await silent.ringing
        ends = [await busy.ended, await silent.ended]
        codes.set_result([end.code for end in ends])
        await leg.hangup()

    controller.reset(flow)
    await caller_phone.call(worker_uri(workers, 1))
    busy_code, timeout_code = await asyncio.wait_for(codes, 10)
    assert busy_code == 486
    assert timeout_code == 408  # the worker's ring timeout
    silent_call = await silent_phone.next_incoming()
    assert await asyncio.wait_for(silent_call.ended, 5) == 487  # it was CANCELled


async def test_caller_leaving_cancels_the_ringing_leg(
    pool: tuple[WorkerPool, Controller], phones: MakePhone
) -> None:
    workers, controller = pool
    caller_phone = await phones("leaver")
    ringing_phone = await phones("ringing")
    ringing_leg: asyncio.Future[Leg] = asyncio.get_running_loop().create_future()

    async def flow(leg: Leg) -> None:
        await leg.answer()
        agent = await leg.dial(f"sip:ringing@{ringing_phone.address}", timeout=30)
        ringing_leg.set_result(agent)
        await leg.ended
        await agent.hangup()

    controller.reset(flow)
    call = await caller_phone.call(worker_uri(workers, 0))
    await asyncio.wait_for(call.answered, 5)
    agent_leg = await asyncio.wait_for(ringing_leg, 5)
    await asyncio.wait_for(agent_leg.ringing, 5)
    incoming = await ringing_phone.next_incoming()
    await call.hangup()
    assert await asyncio.wait_for(incoming.ended, 5) == 487
    assert (await asyncio.wait_for(agent_leg.ended, 5)).code == 487


async def test_a_failing_flow_rejects_the_caller_with_500(
    pool: tuple[WorkerPool, Controller], phones: MakePhone
) -> None:
    workers, controller = pool

    async def broken(leg: Leg) -> None:
        raise RuntimeError("a bug in a call flow")

    controller.reset(broken)
    call = await (await phones("unlucky")).call(worker_uri(workers, 0))
    assert await asyncio.wait_for(call.ended, 5) == 500


async def test_full_worker_answers_503_and_strangers_403(
    pool: tuple[WorkerPool, Controller], phones: MakePhone
) -> None:
    workers, controller = pool
    controller.reset(None)  # legs ring; the test keeps them
    capacity = workers.workers[1].max_legs // 2
    caller_phone = await phones("filler")
    calls = [await caller_phone.call(worker_uri(workers, 1)) for _ in range(capacity)]
    legs = [await asyncio.wait_for(controller.legs.get(), 5) for _ in range(capacity)]
    overflow = await caller_phone.call(worker_uri(workers, 1))
    assert await asyncio.wait_for(overflow.ended, 5) == 503
    assert controller.legs.empty()
    for leg in legs:
        await leg.reject(480)
    for call in calls:
        assert await asyncio.wait_for(call.ended, 5) == 480
    port = workers.workers[0].sip_port
    status, answer = await asyncio.to_thread(invite_from_elsewhere, port)
    # Marked as meant: the edge must relay it, not try another worker.
    assert status == 403 and f"\r\n{FINAL_HEADER}: 1\r\n" in answer
    await asyncio.sleep(0.3)  # pjsua 2.15.1 used to abort here, a moment after the 403
    assert workers.workers[0].state is WorkerState.READY and workers.restarts == 0
    assert workers.refused == {"worker_full": 1, "untrusted_source": 1}
    assert controller.legs.empty()


async def test_two_workers_are_linked_and_an_unknown_link_is_refused(
    pool: tuple[WorkerPool, Controller], phones: MakePhone
) -> None:
    """A caller in worker 0 hears a phone bridged in worker 1 through a link (WorkerPool.link:
    a call from one worker to the other); an INVITE naming no link being made gets 403 and
    starts no call flow."""
    workers, controller = pool
    caller_phone = await phones("linked-caller")
    agent_phone = await phones("linked-agent", auto_answer=200)
    linked: asyncio.Future[tuple[Leg, Leg, Leg]] = asyncio.get_running_loop().create_future()

    async def flow(leg: Leg) -> None:
        if leg.worker_id == 0:
            await leg.answer()
            near, far = await workers.link(leg, 1)
            agent = await far.dial(f"sip:linked-agent@{agent_phone.address}", timeout=10)
            await agent.answered
            await far.bridge(agent)
            await leg.bridge(near)
            linked.set_result((leg, near, far))

    controller.reset(flow)
    call = await caller_phone.call(worker_uri(workers, 0))
    leg, near, far = await asyncio.wait_for(linked, 10)
    assert (near.worker_id, far.worker_id) == (0, 1)
    agent_call = await agent_phone.next_incoming()
    await assert_both_hear_each_other(call, agent_call)
    await leg.hangup()
    await near.hangup()
    assert (await asyncio.wait_for(far.ended, 5)).code == 200
    await agent_call.hangup()
    assert controller.legs.get_nowait() is leg and controller.legs.empty(), "the link's too"

    stranger = await caller_phone.call(worker_uri(workers, 1), headers={LINK_HEADER: "forged"})
    assert await asyncio.wait_for(stranger.ended, 5) == 403
    assert controller.legs.empty()


async def test_a_supervisor_hears_both_and_whisper_reaches_the_agent_and_barge_both(
    pool: tuple[WorkerPool, Controller], phones: MakePhone, prompts: Path, tmp_path: Path
) -> None:
    """The caller sends 440 Hz, the agent 660 Hz, the supervisor 880 Hz; what each phone
    hears is recorded at the phone and measured per frequency (Monitor's three modes)."""
    workers, controller = pool
    caller_phone = await phones("spied-caller")
    agent_phone = await phones("spied-agent", auto_answer=200)
    boss_phone = await phones("spying-boss", auto_answer=200)
    legs: asyncio.Future[tuple[Leg, Leg, Leg]] = asyncio.get_running_loop().create_future()

    async def flow(leg: Leg) -> None:
        await leg.answer()
        agent = await leg.dial(f"sip:spied-agent@{agent_phone.address}", timeout=10)
        await agent.answered
        await leg.bridge(agent)
        boss = await leg.dial(f"sip:spying-boss@{boss_phone.address}", timeout=10)
        await boss.answered
        legs.set_result((leg, agent, boss))

    controller.reset(flow)
    call = await caller_phone.call(worker_uri(workers, 0))
    leg, agent_leg, boss_leg = await asyncio.wait_for(legs, 10)
    agent_call = await agent_phone.next_incoming()
    boss_call = await boss_phone.next_incoming()
    await call.play(prompts / "greeting.wav", loop=True)
    await agent_call.play(prompts / "short.wav", loop=True)
    await boss_call.play(make_tone(tmp_path / "boss.wav", 2, 880), loop=True)

    async def heard(phone_call: TestCall, name: str) -> dict[int, float]:
        path = await phone_call.record_heard(tmp_path / name, 1.0)
        with wave.open(str(path)) as wav:
            samples = array.array("h", wav.readframes(wav.getnframes()))
        return {f: tone_strength(samples, f) for f in (440, 660, 880)}

    loud, faint = 0.005, 0.0005  # a tone heard scores far above the one, one not below the other
    for mode in ("listen", "whisper", "barge"):
        await boss_leg.monitor(leg, agent_leg, mode)  # type: ignore[arg-type]
        by_boss, by_agent, by_caller = await asyncio.gather(
            heard(boss_call, f"{mode}-boss.wav"), heard(agent_call, f"{mode}-agent.wav"),
            heard(call, f"{mode}-caller.wav"),
        )  # fmt: skip
        assert by_boss[440] > loud and by_boss[660] > loud, (mode, by_boss)
        assert (by_agent[880] > loud) == (mode != "listen"), (mode, by_agent)
        assert (by_caller[880] > loud) == (mode == "barge"), (mode, by_caller)
        if mode == "listen":
            assert by_agent[880] < faint and by_caller[880] < faint, (by_agent, by_caller)
        assert by_caller[660] > loud and by_agent[440] > loud, "the two still talk"
    await boss_leg.hangup()
    await leg.hangup()
    await agent_leg.hangup()
    await asyncio.wait_for(call.ended, 5)


async def test_killed_worker_ends_only_its_own_calls_and_comes_back(
    pool: tuple[WorkerPool, Controller], phones: MakePhone, prompts: Path
) -> None:
    workers, controller = pool

    async def keep_answered(leg: Leg) -> None:
        await leg.answer()
        await leg.ended

    controller.reset(keep_answered)
    phone = await phones("victim")
    doomed = await phone.call(worker_uri(workers, 0))
    survivor = await phone.call(worker_uri(workers, 1))
    await asyncio.wait_for(asyncio.gather(doomed.answered, survivor.answered), 5)
    doomed_leg, survivor_leg = sorted(
        [await controller.legs.get(), await controller.legs.get()], key=lambda leg: leg.worker_id
    )
    old_pid = workers.workers[0].pid
    await workers.kill_worker_for_test(0)
    end = await asyncio.wait_for(doomed_leg.ended, 5)
    assert (end.code, end.reason) == (500, "worker lost")
    with pytest.raises(LegGone):
        await asyncio.wait_for(doomed_leg.play(prompts / "short.wav"), 1)
    assert not survivor_leg.ended.done()
    # The pool forks a replacement into the free slot: same ports, a new process.
    await wait_until(
        lambda: (
            [(w.id, w.state) for w in workers.workers]
            == [(0, WorkerState.READY), (1, WorkerState.READY)]
        )
    )
    assert workers.workers[0].pid != old_pid
    assert workers.restarts == 1 and workers.workers_alive == 2
    again = await phone.call(worker_uri(workers, 0))
    await asyncio.wait_for(again.answered, 5)
    before = await survivor.rx_packets()
    await survivor_leg.play(prompts / "short.wav")
    await asyncio.sleep(0.3)
    assert await survivor.rx_packets() > before, "the other worker's call goes on"
    for call in (survivor, again):
        await call.hangup()
    # The dead worker's caller hears nothing more; its own phone ends it.
    with contextlib.suppress(RuntimeError):
        await doomed.hangup()


async def test_a_leg_whose_rtp_stops_is_hung_up_and_a_talking_one_is_not(
    phones: MakePhone, tmp_path: Path
) -> None:
    """A SIPp caller sends no RTP at all (a phone that lost its network, as the worker sees
    it); a PJSUA2 phone talks the whole time. Only the silent one is cut."""
    sipp_port, ua = free_port(), shared_user_agent()
    controller = Controller()
    settings = WorkerSettings(
        max_workers=1, spare_legs=4, first_sip_port=free_port_block(1),
        first_rtp_port=free_port_block(40),
        rtp_ports_per_worker=40, media_timeout=MEDIA_TIMEOUT_S,
    )  # fmt: skip
    workers = WorkerPool(
        settings, trusted=[f"127.0.0.1:{ua.sip_port}", f"127.0.0.1:{sipp_port}"],
        on_inbound=controller.on_inbound,
    )  # fmt: skip
    await workers.start()
    try:

        async def answer_and_wait(leg: Leg) -> None:
            await leg.answer()
            await leg.ended

        controller.reset(answer_and_wait)
        talker = await (await phones("talker")).call(worker_uri(workers, 0))
        await asyncio.wait_for(talker.answered, 5)
        started = asyncio.get_running_loop().time()
        silent = await call_number(
            tmp_path, workers.workers[0].sip_port, "company", hang_up="remote", timeout_s=15,
            local_port=sipp_port,
        )  # fmt: skip
        assert silent.succeeded, silent.output  # the worker's BYE came
        waited = asyncio.get_running_loop().time() - started
        assert MEDIA_TIMEOUT_S <= waited < MEDIA_TIMEOUT_S + 5, waited
        talker_leg, silent_leg = controller.legs.get_nowait(), controller.legs.get_nowait()
        end = silent_leg.ended.result()
        assert (end.reason, end.ended_by("caller")) == (MEDIA_TIMEOUT_REASON, "system")
        assert not talker.ended.done() and not talker_leg.ended.done()
        assert workers.media_timeouts == 1
        await talker.hangup()
        await asyncio.wait_for(talker_leg.ended, 5)
    finally:
        await workers.stop()


async def test_a_worker_whose_controller_dies_hangs_up_and_exits_0(phones: MakePhone) -> None:
    """Driven by hand over the protocol; then its socket and output break and SIGTERM comes,
    as when the controller is killed."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    output_read, output_write = os.pipe()
    sip_port = free_port_block(1)
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pbx.worker", "--worker-id", "7", "--sip-port", str(sip_port),
        "--rtp-port", str(free_port_block(40)), "--channel-fd", str(theirs.fileno()),
        "--trusted", f"127.0.0.1:{shared_user_agent().sip_port}",
        stdin=subprocess.DEVNULL, stdout=output_write, stderr=output_write,
        pass_fds=[theirs.fileno()],
    )  # fmt: skip
    theirs.close()
    os.close(output_write)
    with ours, ours.makefile("rb") as events:
        hello = decode_event(await asyncio.to_thread(events.readline))
        assert isinstance(hello, Hello) and (hello.worker_id, hello.sip_port) == (7, sip_port)
        call = await (await phones("orphan")).call(f"sip:x@127.0.0.1:{sip_port}")
        incoming = decode_event(await asyncio.to_thread(events.readline))
        assert isinstance(incoming, IncomingCall)
        ours.sendall(encode(Answer(cid=1, leg=incoming.leg)))
        await asyncio.wait_for(call.answered, 5)
    os.close(output_read)  # the worker's log and events now go nowhere
    worker.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(call.ended, 5) == 200
    assert await asyncio.wait_for(worker.wait(), 5) == 0


async def test_a_closed_workers_events_end_only_once_its_process_has_freed_its_port() -> None:
    """A worker closes its socket, lingers, then exits: a port reused when its events end
    must be free (else the next worker there fails with "Address already in use")."""
    sip_port = free_port_block(1)
    settings = WorkerSettings(
        max_workers=1,
        first_sip_port=sip_port,
        first_rtp_port=free_port_block(40),
        rtp_ports_per_worker=40,
    )
    launcher = ForkedWorkers(settings, trusted=[f"127.0.0.1:{shared_user_agent().sip_port}"])
    await launcher.start(lambda: None)
    try:
        channel = await launcher.launch(WorkerSpec(1, sip_port, settings.first_rtp_port, 8))
        events = channel.events()
        assert isinstance(await anext(events), Hello)
        channel.close()
        async for _ in events:
            pass
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", sip_port))
    finally:
        await launcher.stop()


async def test_the_pool_grows_with_its_callers_and_retires_idle_workers(
    phones: MakePhone,
) -> None:
    """Spare legs for two callers: filling a worker makes the pool fork the next, and once the
    callers are gone the extra workers retire after their grace."""
    ua, controller = shared_user_agent(), Controller()
    settings = WorkerSettings(
        spare_legs=4, max_workers=3, idle_retire_after=0.5, first_sip_port=free_port_block(3),
        first_rtp_port=free_port_block(120), rtp_ports_per_worker=40,
    )  # fmt: skip
    workers = WorkerPool(
        settings, trusted=[f"127.0.0.1:{ua.sip_port}"], on_inbound=controller.on_inbound
    )
    await workers.start()
    try:
        assert [w.id for w in workers.workers] == [0]

        async def answer_and_wait(leg: Leg) -> None:
            await leg.answer()
            await leg.ended

        controller.reset(answer_and_wait)
        phone = await phones("grower")
        calls = []
        for worker_id in (0, 1):
            for _ in range(2):  # two callers fill a worker (each keeps a leg for its agent)
                calls.append(await phone.call(worker_uri(workers, worker_id)))
                await asyncio.wait_for(calls[-1].answered, 5)
            # The next worker is forked and says hello before the spare legs are back.
            await wait_until(
                lambda n=worker_id + 2: (
                    [w.state for w in workers.workers] == [WorkerState.READY] * n
                )
            )
        assert workers.spare_legs == 4 and workers.legs_in_use == 4
        for call in calls:
            await call.hangup()
        # Two workers retire after their grace; the one left keeps the spare legs.
        await wait_until(lambda: len(workers.workers) == 1, timeout=15)
        assert workers.workers[0].state is WorkerState.READY and workers.spare_legs == 4
        assert workers.restarts == 0
    finally:
        await workers.stop()
