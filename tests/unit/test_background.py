"""The background pass loop the dispatcher, chat assignment and reply delivery share."""

from __future__ import annotations

import asyncio
import json

from core.background import PassLoop


async def test_passes_repeat_at_once_sleep_as_told_and_wake_on_chosen_events() -> None:
    waits = [0.0, 0.0, 60.0, 60.0]
    passes = 0

    async def run_pass() -> float:
        nonlocal passes
        passes += 1
        return waits[min(passes, len(waits)) - 1]

    events: asyncio.Queue[str | None] = asyncio.Queue()
    loop = PassLoop("test", run_pass, wakes_on=lambda kind: kind == "wake_me", retry_s=60)
    loop.start(events)
    await asyncio.sleep(0.05)
    assert passes == 3  # two "at once", then a long sleep
    await events.put(json.dumps({"type": "ignore_me"}))
    await asyncio.sleep(0.05)
    assert passes == 3
    await events.put(json.dumps({"type": "wake_me"}))
    await asyncio.sleep(0.05)
    assert passes == 4
    await loop.stop()


async def test_a_failing_pass_is_retried_after_retry_s() -> None:
    passes = 0

    async def run_pass() -> float:
        nonlocal passes
        passes += 1
        if passes == 1:
            raise RuntimeError("a bad round")
        return 60

    loop = PassLoop("test", run_pass, wakes_on=lambda _: False, retry_s=0.05)
    loop.start()
    await asyncio.sleep(0.2)
    assert passes == 2
    await loop.stop()


async def test_stop_lets_a_pass_finish_or_cancels_it_after_the_timeout() -> None:
    finished: list[str] = []

    def slow(name: str, seconds: float) -> PassLoop:
        async def run_pass() -> float:
            await asyncio.sleep(seconds)
            finished.append(name)
            return 60

        return PassLoop(name, run_pass, wakes_on=lambda _: False, retry_s=60, stop_timeout_s=0.1)

    patient, hasty = slow("patient", 0.05), slow("hasty", 5.0)
    patient.start()
    hasty.start()
    await asyncio.sleep(0.01)
    await asyncio.gather(patient.stop(), hasty.stop())
    assert finished == ["patient"]
