"""Child processes die loudly and leave nothing behind (core.child_process), with real
processes: a child killed while its own children hold its pipes, as Kamailio's workers do."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from core.child_process import ChildProcess

# The shell starts a grandchild that inherits stdout/stderr and outlives it, then waits.
PARENT_WITH_GRANDCHILD = 'sleep 300 & echo "grandchild $!"; wait'


async def _grandchild_pid(child: ChildProcess) -> int:
    async with asyncio.timeout(10):
        while not any(line.startswith("grandchild") for line in child.last_output):
            await asyncio.sleep(0.01)
    line = next(line for line in child.last_output if line.startswith("grandchild"))
    return int(line.split()[1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie waiting for its reaper counts as gone.
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


async def test_a_child_killed_while_its_children_hold_its_pipes_is_noticed_at_once() -> None:
    child = ChildProcess("parent", ["sh", "-c", PARENT_WITH_GRANDCHILD])
    await child.start()
    grandchild = await _grandchild_pid(child)
    assert child.pid is not None
    os.kill(child.pid, signal.SIGKILL)
    async with asyncio.timeout(5):
        assert await child.wait() == -signal.SIGKILL
    assert _alive(grandchild)  # still holding the pipes: what used to hang wait()
    await child.stop(timeout=2)
    async with asyncio.timeout(5):
        while _alive(grandchild):  # reaped by init, not by us
            await asyncio.sleep(0.01)


async def test_stop_ends_the_child_and_everything_it_started() -> None:
    child = ChildProcess("parent", ["sh", "-c", PARENT_WITH_GRANDCHILD])
    await child.start()
    grandchild = await _grandchild_pid(child)
    await child.stop(timeout=2)
    assert child.returncode is not None
    async with asyncio.timeout(5):
        while _alive(grandchild):
            await asyncio.sleep(0.01)
