"""The background pass loop the dispatcher, chat assignment and reply delivery share."""

from __future__ import annotations

import asyncio

from core.background import PassLoop
from core.wakeups import Wakeups


async def test_passes_repeat_at_once_sleep_as_told_and_wake_on_chosen_events() -> None:
    waits = [0.0, 0.0, 60.0, 60.0]
    passes = 0

    async def run_pass() -> float:
        nonlocal passes
        passes += 1
        return waits[min(passes, len(waits)) - 1]

    wakeups = Wakeups()
    loop = PassLoop("test", run_pass, wakes_on=lambda kind: kind == "wake_me", retry_s=60)
    loop.start(wakeups)
    await asyncio.sleep(0.05)
    assert passes == 3  # two "at once", then a long sleep
    wakeups.notify("ignore_me")
    await asyncio.sleep(0.05)
    assert passes == 3
    wakeups.notify("wake_me")
    await asyncio.sleep(0.05)
    assert passes == 4
    await loop.stop()
    wakeups.notify("wake_me")  # a stopped loop no longer listens
    await asyncio.sleep(0.05)
    assert passes == 4


async def test_a_burst_during_a_pass_coalesces_and_the_next_event_still_wakes() -> None:
    """The bug this replaced: a burst of more than CLIENT_BACKLOG events while a pass ran
    filled the loop's event queue, the hub dropped it, and it fell back to polling for good."""
    started: asyncio.Queue[int] = asyncio.Queue()  # each pass's number as it starts
    release_first_pass = asyncio.Event()
    passes = 0

    async def run_pass() -> float:
        nonlocal passes
        passes += 1
        started.put_nowait(passes)
        if passes == 1:
            await release_first_pass.wait()
        return 60  # within the test's timeouts only a wake-up starts another pass

    async def next_pass() -> int:
        async with asyncio.timeout(5):
            return await started.get()

    wakeups = Wakeups()
    loop = PassLoop("test", run_pass, wakes_on=lambda kind: kind.startswith("queue_"), retry_s=60)
    loop.start(wakeups)
    assert await next_pass() == 1
    for _ in range(5000):
        wakeups.notify("queue_changed")
    release_first_pass.set()
    assert await next_pass() == 2  # the whole burst: one more pass
    wakeups.notify("queue_changed")
    assert await next_pass() == 3
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
