"""Which node runs the controller, when several share one PostgreSQL and one Redis
(`[cluster] node`): the one holding the lease (controller.lease). Every node serves the API;
the others stand by, trying for the lease every third of its term, and the first to get it
once it has run out takes over: it reads the id sequences again (rows written since its
start), closes the calls the old active left open (their media died with it), and starts the
controller, which takes presence, queues, chat dialogs and callbacks up from SQL and Redis.

Two tasks: one keeps the lease, one starts and stops the controller as the first says. A
controller takes seconds to start (it forks media workers), and the lease must be renewed
meanwhile; a node that cannot renew in time stops its controller (it no longer knows that no
other node has taken over).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from enum import StrEnum

import structlog

from controller.component import Controller
from controller.lease import RENEWALS_PER_TERM, RedisLease, still_held
from core.context import ServiceContext
from flows.call_recovery import close_interrupted_calls

log = structlog.get_logger(__name__)


class Role(StrEnum):
    SINGLE = "single"  # no cluster: this node's controller always runs
    ACTIVE = "active"
    STANDBY = "standby"


class ControllerSeat:
    def __init__(
        self, ctx: ServiceContext, lease: RedisLease, make_controller: Callable[[], Controller],
        term_s: float,
    ) -> None:  # fmt: skip
        self._ctx = ctx
        self._lease = lease
        self._make_controller = make_controller
        self._term_s = term_s
        self._node = ctx.settings.cluster.node
        self._holding = False
        self._renewed_at = 0.0
        self._changed = asyncio.Event()
        self._controller: Controller | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def controller(self) -> Controller | None:
        """The controller while it runs here (from the start of its start-up)."""
        return self._controller

    @property
    def node(self) -> str:
        return self._node

    @property
    def role(self) -> Role:
        return Role.ACTIVE if self._controller is not None else Role.STANDBY

    async def active_node(self) -> str | None:
        return await self._lease.holder()

    async def start(self) -> None:
        self._ctx.metrics.controller_active.set(0)
        self._tasks = [
            asyncio.create_task(self._keep_lease(), name="controller-lease"),
            asyncio.create_task(self._follow_lease(), name="controller-seat"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._step_down()
        if self._holding:
            await self._lease.release()  # a standby need not wait for it to run out
            self._holding = False

    async def _keep_lease(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self._term_s / RENEWALS_PER_TERM
        while True:
            sent = loop.time()
            held = await (self._lease.renew() if self._holding else self._lease.acquire())
            if held:
                self._renewed_at = sent
            elif self._holding and still_held(loop.time(), self._renewed_at, self._term_s):
                held = True  # not renewed this time, but not run out yet either
            if held != self._holding:
                self._holding = held
                log.warning("controller_lease_" + ("taken" if held else "lost"), node=self._node)
                self._changed.set()
            await asyncio.sleep(max(0.0, sent + interval - loop.time()))

    async def _follow_lease(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            if self._holding and self._controller is None:
                try:
                    await self._take_over()
                except Exception:
                    # Let another node try: this one takes its turn again later.
                    log.exception("controller_take_over_failed", node=self._node)
                    await self._step_down()
                    await self._lease.release()
                    self._holding = False
            elif not self._holding and self._controller is not None:
                await self._step_down()

    async def _take_over(self) -> None:
        log.warning("controller_taking_over", node=self._node)
        await self._ctx.writes.read_sequences()
        await close_interrupted_calls(self._ctx)
        controller = self._controller = self._make_controller()
        await controller.start()
        self._ctx.metrics.controller_active.set(1)
        async with self._ctx.sessions.begin() as session:
            event = await self._ctx.events.stage(session, "controller_activated",
                                                 {"node": self._node})  # fmt: skip
        await self._ctx.events.publish(event)
        log.warning("controller_active", node=self._node)

    async def _step_down(self) -> None:
        controller, self._controller = self._controller, None
        if controller is None:
            return
        self._ctx.metrics.controller_active.set(0)
        log.warning("controller_stepping_down", node=self._node)
        try:
            await controller.stop()
        except Exception:  # whatever failed, this node no longer acts
            log.exception("controller_stop_failed", node=self._node)
