"""Media workers against real PJSUA2 phones, without the edge: commands, events, capacity.

The controller side here is a small inline call flow; the real flows are tested through
Kamailio in test_calls.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from core.settings import WorkerSettings
from pbx.legs import Leg, LegGone
from pbx.pool import WorkerPool
from pbx.ua_thread import shared_user_agent
from tests.support.phone import TestCall, TestPhone
from tests.support.ports import free_port_block

Flow = Callable[[Leg], Awaitable[None]]


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


@pytest.fixture(scope="module")
def greeting(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("prompts") / "greeting.wav"
    subprocess.run(
        ["sox", "-n", "-r", "8000", "-c", "1", "-b", "16", str(path), "synth", "3", "sine", "440"],
        check=True,
    )
    return path


@pytest.fixture(scope="module")
async def pool() -> AsyncIterator[tuple[WorkerPool, Controller]]:
    ua = shared_user_agent()
    controller = Controller()
    first_sip = free_port_block(2)
    settings = WorkerSettings(
        count=2, first_sip_port=first_sip, first_rtp_port=free_port_block(80),
        rtp_ports_per_worker=40,
    )  # fmt: skip
    workers = WorkerPool(
        settings, trusted=[f"127.0.0.1:{ua.sip_port}"], on_inbound=controller.on_inbound
    )
    await workers.start()
    yield workers, controller
    await workers.stop()


@pytest.fixture
async def phones() -> AsyncIterator[Callable[..., Awaitable[TestPhone]]]:
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


async def collect_until_hash(leg: Leg) -> str:
    digits = ""
    while not digits.endswith("#"):
        digit = await leg.next_digit(timeout=5.0)
        assert digit is not None, f"no digit after {digits!r}"
        digits += digit
    return digits


async def assert_both_hear_each_other(a: TestCall, b: TestCall) -> None:
    """Each phone plays a tone: after a bridge each must hear it, not silence."""
    before = (await a.rx_packets(), await b.rx_packets())
    await asyncio.sleep(1.0)
    after = (await a.rx_packets(), await b.rx_packets())
    assert after[0] - before[0] > 35 and after[1] - before[1] > 35, (before, after)
    levels = (await a.rx_level(), await b.rx_level())
    assert min(levels) > 10, f"rx levels {levels}: one side hears silence"


async def test_workers_discover_their_leg_cap(pool: tuple[WorkerPool, Controller]) -> None:
    workers, _ = pool
    assert all(w.alive and w.max_legs >= 2 for w in workers.workers)
    assert len(workers.dispatcher_targets()) == 2


async def test_greeting_digits_dial_bridge_and_hangup(
    pool: tuple[WorkerPool, Controller],
    phones: Callable[..., Awaitable[TestPhone]],
    greeting: Path,
) -> None:
    workers, controller = pool
    caller_phone = await phones("caller")
    agent_phone = await phones("agent", auto_answer=200)
    outcome: asyncio.Future[tuple[str, bool]] = asyncio.get_running_loop().create_future()

    async def flow(leg: Leg) -> None:
        await leg.answer()
        playback = await leg.play(greeting, barge_in=True)
        digits = await collect_until_hash(leg)
        interrupted = await playback.finished
        agent = await leg.dial(f"sip:agent@{agent_phone.address}", timeout=10)
        await agent.answered
        await leg.bridge(agent)
        outcome.set_result((digits, interrupted))
        await asyncio.wait({leg.ended, agent.ended}, return_when=asyncio.FIRST_COMPLETED)
        for each in (leg, agent):
            with contextlib.suppress(LegGone):
                await each.hangup()

    controller.reset(flow)
    call = await caller_phone.call(worker_uri(workers, 0))
    await asyncio.wait_for(call.progress.answered, 5)
    await asyncio.sleep(0.5)
    assert await call.rx_level() > 10, "the caller should hear the greeting"
    await call.send_dtmf("1001#")
    digits, interrupted = await asyncio.wait_for(outcome, 10)
    assert digits == "1001#"
    assert interrupted, "the first digit should have stopped the greeting"
    agent_call = await agent_phone.next_incoming()
    await assert_both_hear_each_other(call, agent_call)
    await agent_call.hangup()
    assert await asyncio.wait_for(call.progress.ended, 5) in (200, 487)


async def test_busy_and_ring_timeout_are_reported(
    pool: tuple[WorkerPool, Controller], phones: Callable[..., Awaitable[TestPhone]]
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
        ends = [await busy.ended, await silent.ended]
        codes.set_result([end.code for end in ends])
        await leg.hangup()

    controller.reset(flow)
    await caller_phone.call(worker_uri(workers, 1))
    busy_code, timeout_code = await asyncio.wait_for(codes, 10)
    assert busy_code == 486
    assert timeout_code == 487  # cancelled by the ring timeout
    silent_call = await silent_phone.next_incoming()
    assert await asyncio.wait_for(silent_call.progress.ended, 5) == 487


async def test_caller_leaving_cancels_the_ringing_leg(
    pool: tuple[WorkerPool, Controller], phones: Callable[..., Awaitable[TestPhone]]
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
    await asyncio.wait_for(call.progress.answered, 5)
    agent_leg = await asyncio.wait_for(ringing_leg, 5)
    await asyncio.wait_for(agent_leg.ringing, 5)
    incoming = await ringing_phone.next_incoming()
    await call.hangup()
    assert await asyncio.wait_for(incoming.progress.ended, 5) == 487
    assert (await asyncio.wait_for(agent_leg.ended, 5)).code == 487


async def test_full_worker_answers_503(
    pool: tuple[WorkerPool, Controller], phones: Callable[..., Awaitable[TestPhone]]
) -> None:
    workers, controller = pool
    controller.reset(None)  # legs ring; the test keeps them
    capacity = workers.workers[1].max_legs // 2
    caller_phone = await phones("filler")
    calls = [await caller_phone.call(worker_uri(workers, 1)) for _ in range(capacity)]
    legs = [await asyncio.wait_for(controller.legs.get(), 5) for _ in range(capacity)]
    overflow = await caller_phone.call(worker_uri(workers, 1))
    assert await asyncio.wait_for(overflow.progress.ended, 5) == 503
    for leg in legs:
        await leg.reject(480)
    for call in calls:
        assert await asyncio.wait_for(call.progress.ended, 5) == 480


async def test_killed_worker_ends_only_its_own_calls_and_comes_back(
    pool: tuple[WorkerPool, Controller], phones: Callable[..., Awaitable[TestPhone]]
) -> None:
    workers, controller = pool

    async def keep_answered(leg: Leg) -> None:
        await leg.answer()
        await leg.ended

    controller.reset(keep_answered)
    phone = await phones("victim")
    doomed = await phone.call(worker_uri(workers, 0))
    survivor = await phone.call(worker_uri(workers, 1))
    await asyncio.wait_for(asyncio.gather(doomed.progress.answered, survivor.progress.answered), 5)
    doomed_leg, survivor_leg = sorted(
        [await controller.legs.get(), await controller.legs.get()], key=lambda leg: leg.worker_id
    )
    await workers.kill_worker_for_test(0)
    end = await asyncio.wait_for(doomed_leg.ended, 5)
    assert (end.code, end.reason) == (500, "worker lost")
    assert not survivor_leg.ended.done()
    for _ in range(100):
        if workers.workers[0].alive:
            break
        await asyncio.sleep(0.1)
    assert workers.workers[0].alive and workers.workers[0].restarts == 1
    again = await phone.call(worker_uri(workers, 0))
    await asyncio.wait_for(again.progress.answered, 5)
    for call in (survivor, again):
        await call.hangup()
    # The caller of the dead worker hears nothing more; its own phone ends it.
    with contextlib.suppress(RuntimeError):
        await doomed.hangup()
