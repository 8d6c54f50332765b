"""The service's background passes: the ACD dispatcher, chat assignment and reply delivery
each run one task that repeats a pass, sleeping in between until the pass's own wait runs
out or an event published in this process wakes it early (see core.wakeups: the wake-up is
one coalescing flag, so no burst of events can make a loop miss the next one)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

from core.wakeups import Wakeups

log = structlog.get_logger(__name__)

# One pass; returns how long to sleep before the next one (0: go again at once).
Pass = Callable[[], Awaitable[float]]


class PassLoop:
    """Runs `run_pass` until stopped. A pass that raises is logged and tried again after
    `retry_s`: a bad round must never end the work for good."""

    def __init__(
        self,
        name: str,
        run_pass: Pass,
        *,
        wakes_on: Callable[[str], bool],
        retry_s: float,
        stop_timeout_s: float | None = None,
    ) -> None:
        self._name = name
        self._run_pass = run_pass
        self._wakes_on = wakes_on
        self._retry_s = retry_s
        self._stop_timeout_s = stop_timeout_s
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._wakeups: Wakeups | None = None
        self._stopping = False

    def start(self, wakeups: Wakeups | None = None) -> None:
        """`wakeups`: the events published in this process; a type `wakes_on` accepts starts
        the next pass at once."""
        self._task = asyncio.create_task(self._run(), name=self._name)
        if wakeups is not None:
            wakeups.add_listener(self._notice)
            self._wakeups = wakeups

    async def stop(self) -> None:
        """Lets a pass under way finish (cancelling one inside an aiosqlite call can hang);
        with `stop_timeout_s`, cancels it after that long."""
        self._stopping = True
        self.wake()
        if self._wakeups is not None:
            self._wakeups.remove_listener(self._notice)
            self._wakeups = None
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), self._stop_timeout_s)
        except TimeoutError:
            log.warning("background_pass_cancelled", loop=self._name)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def wake(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        while not self._stopping:
            try:
                wait = await self._run_pass()
            except Exception:  # the one place a broad catch is right: see the class doc
                log.exception("background_pass_failed", loop=self._name)
                wait = self._retry_s
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=wait)
            self._wake.clear()

    def _notice(self, event_type: str) -> None:
        if self._wakes_on(event_type):
            self.wake()
