"""The in-memory worker twin behind the real WorkerPool: the behaviours
tests/integration/test_media_workers.py checks on PJSUA2 workers, answered the same way
(events, codes, failures), in milliseconds."""

from __future__ import annotations

import asyncio
import wave
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from core.settings import WorkerSettings
from flows.calls import USER_HEADER
from pbx.capacity import WorkerState
from pbx.legs import WORKER_LOST, Leg, LegGone, WorkerCommandFailed
from pbx.memory_worker import PHONE_USER_HEADER, FarEnd, MemoryWorkers, ScriptError
from pbx.pool import WorkerPool
from pbx.protocol import SOURCE_HEADER, Answer, Dial, Play

Flow = Callable[[Leg], Awaitable[None]]


class Controller:
    """Hands each inbound leg to whichever flow the test installed."""

    def __init__(self) -> None:
        self.flow: Flow | None = None
        self.legs: asyncio.Queue[Leg] = asyncio.Queue()

    async def on_inbound(self, leg: Leg) -> None:
        await self.legs.put(leg)
        if self.flow is not None:
            await self.flow(leg)


@pytest.fixture
def prompt(tmp_path: Path) -> Path:
    path = tmp_path / "prompt.wav"
    path.write_bytes(b"RIFF")  # the twin opens no audio; a real worker needs the file
    return path


PoolFactory = Callable[..., Awaitable[tuple[WorkerPool, MemoryWorkers, Controller]]]


@pytest.fixture
async def make_pool() -> AsyncIterator[PoolFactory]:
    pools: list[WorkerPool] = []

    async def make(
        max_workers: int = 2, spare_legs: int = 4, prompt_seconds: float | None = 0.0
    ) -> tuple[WorkerPool, MemoryWorkers, Controller]:
        twin, controller = MemoryWorkers(prompt_seconds=prompt_seconds), Controller()
        settings = WorkerSettings(max_workers=max_workers, spare_legs=spare_legs)
        pool = WorkerPool(settings, trusted=[], on_inbound=controller.on_inbound,
                          edge=twin.edge, launcher=twin)  # fmt: skip
        await pool.start()
        pools.append(pool)
        return pool, twin, controller

    yield make
    for pool in pools:
        await pool.stop()
        assert pool.workers == []


async def settle() -> None:
    """Let the pool read what the twin has emitted so far."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_workers_say_hello_with_their_leg_cap_and_the_edge_lists_them(
    make_pool: PoolFactory,
) -> None:
    pool, twin, _ = await make_pool(spare_legs=8)
    assert [(w.state, w.max_legs) for w in pool.workers] == [(WorkerState.READY, 4)] * 2
    assert twin.edge.ready == set(pool.dispatcher_targets())
    assert pool.spare_legs == 8 and pool.legs_in_use == 0


async def test_greeting_digits_dial_bridge_and_hangup(make_pool: PoolFactory, prompt: Path) -> None:
    pool, twin, controller = await make_pool(prompt_seconds=None)
    digits_heard: asyncio.Future[tuple[str, bool]] = asyncio.get_running_loop().create_future()
    legs: asyncio.Future[tuple[Leg, Leg]] = asyncio.get_running_loop().create_future()

    async def flow(leg: Leg) -> None:
        await leg.answer()
        playback = await leg.play(prompt, barge_in=True)
        digits = ""
        while not digits.endswith("#"):
            digits += await leg.next_digit(5) or ""
        digits_heard.set_result((digits, await playback.finished))
        agent = await leg.dial("sip:1001@edge", timeout=10, headers={"X-PBX-Call": "42"})
        await agent.answered
        await leg.bridge(agent)
        legs.set_result((leg, agent))

    controller.flow = flow
    caller = twin.call_in("4930111", "4930700", headers={"X-PBX-Trunk": "provider"})
    await twin.until(lambda: caller.playing == prompt)
    inbound = controller.legs.get_nowait()
    assert inbound.headers == {SOURCE_HEADER: "trunk", "X-PBX-Trunk": "provider"}
    assert (inbound.caller, inbound.called, inbound.direction) == ("4930111", "4930700", "inbound")
    assert caller.answered.done() and inbound.answered.done() and inbound.sip_call_id

    caller.press("1001#")
    assert await asyncio.wait_for(digits_heard, 1) == ("1001#", True)  # the first digit cut it
    agent_phone = await twin.dialled("1001")
    assert agent_phone.headers == {"X-PBX-Call": "42"} and agent_phone.parent == inbound.id
    agent_phone.ring()
    agent_phone.answer()
    leg, agent_leg = await asyncio.wait_for(legs, 1)
    assert caller.bridged_to is agent_phone and pool.workers[0].legs_in_use == 2
    assert agent_leg.answered_contact == "sip:1001@127.0.0.1:5062"

    await agent_leg.send_dtmf("5*")
    assert agent_phone.dtmf_received == "5*"
    await leg.unbridge(agent_leg)
    assert caller.bridged_to is None
    agent_phone.hang_up()
    assert (await asyncio.wait_for(agent_leg.ended, 1)).code == 200
    await leg.hangup()
    assert await caller.ended == 200 and (await leg.ended).code == 200
    with pytest.raises(LegGone):
        await leg.play(prompt)
    assert pool.legs_in_use == 0


async def test_prompts_play_out_at_once_loops_until_stopped_and_recordings_complete(
    make_pool: PoolFactory, prompt: Path, tmp_path: Path
) -> None:
    _, twin, controller = await make_pool()
    caller = twin.call_in("4930222", "4930700")
    leg = await controller.legs.get()
    await leg.answer()
    once = await leg.play(prompt, barge_in=False)
    assert await asyncio.wait_for(once.finished, 1) is False
    looped = await leg.play(prompt, loop=True)
    await settle()
    assert not looped.finished.done() and caller.playing == prompt
    await leg.stop_playback()
    assert await asyncio.wait_for(looped.finished, 1) is True
    with pytest.raises(WorkerCommandFailed, match="no such file"):
        await leg.play(tmp_path / "missing.wav")

    recording = await leg.record(tmp_path / "one.wav", max_seconds=30, silence_s=2)
    caller.fall_silent()  # as if two seconds of silence had passed
    assert 0 <= await asyncio.wait_for(recording.finished, 1) < 1
    second = await leg.record(tmp_path / "two.wav", max_seconds=30)
    caller.hang_up()  # mid-message: the file is still completed and reported
    assert (await asyncio.wait_for(leg.ended, 1)).code == 200
    await asyncio.wait_for(second.finished, 1)
    with wave.open(str(tmp_path / "two.wav")) as wav:
        assert (wav.getframerate(), wav.getnchannels()) == (8000, 1)
    assert caller.recordings == [tmp_path / "one.wav", tmp_path / "two.wav"]


async def test_busy_ring_timeout_and_a_caller_leaving_are_reported_like_pjsua(
    make_pool: PoolFactory,
) -> None:
    _, twin, controller = await make_pool(max_workers=1, spare_legs=2)
    caller = twin.call_in("4930333", "4930700")
    leg = await controller.legs.get()
    await leg.answer()
    busy = await leg.dial("sip:busy@edge", timeout=10)
    (await twin.dialled("busy")).busy()
    assert (await asyncio.wait_for(busy.ended, 1)).code == 486
    silent = await leg.dial("sip:silent@edge", timeout=10)
    silent_phone = await twin.dialled("silent")
    silent_phone.ring()
    await asyncio.wait_for(silent.ringing, 1)
    silent_phone.ring_out()
    assert (await asyncio.wait_for(silent.ended, 1)).code == 408  # the worker's ring timeout
    assert await silent_phone.ended == 487  # the phone saw a CANCEL

    ringing = await leg.dial("sip:ringing@edge", timeout=30)
    ringing_phone = await twin.dialled("ringing")
    caller.hang_up()
    assert (await asyncio.wait_for(leg.ended, 1)).code == 200
    await ringing.hangup()  # the flow's job once its caller left: CANCEL
    assert (await asyncio.wait_for(ringing.ended, 1)).code == 487
    assert ringing_phone.ended.result() == 487


async def test_an_unanswered_caller_cancelling_and_the_worker_giving_up(
    make_pool: PoolFactory,
) -> None:
    _, twin, controller = await make_pool()
    gives_up = twin.call_in("4930444", "4930700", source="phone")
    leg = await controller.legs.get()
    assert leg.headers[PHONE_USER_HEADER] == "4930444"
    gives_up.hang_up()
    assert (await asyncio.wait_for(leg.ended, 1)).code == 487
    refused = twin.call_in("4930444", "4930701", source="phone")
    leg = await controller.legs.get()
    await leg.hangup()  # never answered: 480, not "busy"
    assert await refused.ended == 480
    with pytest.raises(ScriptError):
        refused.press("1")


async def test_a_failing_flow_rejects_the_caller_with_500(make_pool: PoolFactory) -> None:
    _, twin, controller = await make_pool()

    async def broken(leg: Leg) -> None:
        raise RuntimeError("a bug in a call flow")

    controller.flow = broken
    caller = twin.call_in("4930555", "4930700")
    assert await asyncio.wait_for(caller.ended, 1) == 500


async def test_a_full_worker_refuses_callers_and_a_worker_refuses_a_dial(
    make_pool: PoolFactory,
) -> None:
    pool, twin, controller = await make_pool(max_workers=1, spare_legs=2)
    callers = [twin.call_in(f"49306{i}", "4930700") for i in range(2)]
    legs = [await controller.legs.get() for _ in callers]
    refused = twin.call_in("4930699", "4930700")
    assert refused.ended.result() == 503
    await twin.until(lambda: pool.refused == {"worker_full": 1})
    # Every leg is promised: a second dial for one caller finds none free.
    first = await legs[0].dial("sip:a@edge", timeout=5)
    with pytest.raises(WorkerCommandFailed, match="no free leg in worker 0"):
        await legs[0].dial("sip:b@edge", timeout=5)
    twin.fail_next(Dial, "Invalid URI")
    with pytest.raises(WorkerCommandFailed, match="Invalid URI"):
        await legs[1].dial("sip:c@edge", timeout=5)
    assert [c.uri for c in twin.sent(Dial)] == ["sip:a@edge", "sip:b@edge", "sip:c@edge"]
    for leg in [*legs, first]:
        await leg.drop()


async def test_a_killed_worker_ends_only_its_legs_and_comes_back(
    make_pool: PoolFactory,
) -> None:
    pool, twin, controller = await make_pool(max_workers=2, spare_legs=4)
    doomed_caller = twin.call_in("4930777", "4930700")
    doomed = await controller.legs.get()
    await twin.until(lambda: len(twin.edge.ready) == 2)  # the pool keeps 4 spare legs
    survivor_caller = twin.call_in("4930778", "4930700")
    survivor = await controller.legs.get()
    assert doomed.worker_id != survivor.worker_id
    await pool.kill_worker_for_test(doomed.worker_id)
    end = await asyncio.wait_for(doomed.ended, 1)
    assert (end.code, end.reason) == (500, WORKER_LOST)
    assert not doomed_caller.ended.done()  # its far end hears nothing more
    assert not survivor.ended.done() and not survivor_caller.ended.done()
    # The pool starts a replacement in the free slot and lists it again.
    await twin.until(lambda: len(twin.edge.ready) == 2)
    assert [w.state for w in pool.workers] == [WorkerState.READY] * 2
    assert pool.restarts == 1 and doomed.worker_id in twin.workers
    await survivor.drop()


async def test_commands_cross_the_wire_encoding(make_pool: PoolFactory, prompt: Path) -> None:
    _, twin, controller = await make_pool()
    far: FarEnd = twin.call_in("4930888", "4930700")
    leg = await controller.legs.get()
    await leg.answer()
    await leg.play(prompt, barge_in=False)
    answer, play = twin.sent(Answer)[-1], twin.sent(Play)[-1]
    assert isinstance(answer, Answer) and answer.leg == leg.id
    assert isinstance(play, Play) and play.path == str(prompt) and not play.barge_in
    assert far.prompts == [prompt]
    await leg.hangup()


def test_the_twin_sets_the_phone_header_the_call_flows_read() -> None:
    assert PHONE_USER_HEADER == USER_HEADER
