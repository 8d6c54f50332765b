"""Which node runs the controller, when several share one PostgreSQL and one Redis
(`[cluster] node`): the one holding the lease (controller.lease). Every node serves the API;
the others stand by, trying for the lease every third of its term, and the first to get it
once it has run out takes over: it reads the id sequences again (rows written since its
start), closes the calls the old active left open (their media died with it), and starts the
controller, which takes presence, queues, chat dialogs and callbacks up from SQL and Redis.

Two tasks: one keeps the lease, one starts and stops the controller as the first says. A
controller takes seconds to start (it forks media workers), and the lease must be renewed
meanwhile. A node that finds the lease gone steps down at once; one that cannot reach Redis
steps down a renewal interval before its lease can have run out, so that it is still by the
time another node may take over (controller.lease.acting_deadline).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from enum import StrEnum

import structlog

from controller.component import Controller
from controller.lease import (
    RENEWALS_PER_TERM,
    Membership,
    NodeInUse,
    RedisLease,
    Renewal,
    acting_deadline,
)
from controller.shared_edge import EdgeFollower
from core.context import ServiceContext
from flows.call_recovery import close_interrupted_calls

log = structlog.get_logger(__name__)


class Role(StrEnum):
    SINGLE = "single"  # no cluster: this node's controller always runs
    ACTIVE = "active"
    STANDBY = "standby"


class ControllerSeat:
    def __init__(
        self, ctx: ServiceContext, lease: RedisLease, membership: Membership,
        make_controller: Callable[[int], Controller], term_s: float,
        edge_follower: EdgeFollower | None = None,
    ) -> None:  # fmt: skip
        """`edge_follower`: keeps this node's edge to the active node's workers while it
        stands by (controller.shared_edge)."""
        self._ctx = ctx
        self._lease = lease
        self._membership = membership
        self._make_controller = make_controller
        self._term_s = term_s
        self._node = ctx.settings.cluster.node
        self._holding = False
        self._renewed_at = 0.0
        self._changed = asyncio.Event()
        self._controller: Controller | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._stopping = False
        self._follower: asyncio.Task[None] | None = None
        self._edge_follower = edge_follower

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
        """NodeInUse when another live node has this one's name or index."""
        try:
            await self._membership.claim()
        except NodeInUse:
            await self._lease.close()
            raise
        self._ctx.metrics.controller_active.set(0)
        self._follow_edge()
        self._keeper = asyncio.create_task(self._keep_lease(), name="controller-lease")
        self._follower = asyncio.create_task(self._follow_lease(), name="controller-seat")

    async def stop(self) -> None:
        """The controller stops while the lease is still renewed, its rows are written, and
        only then is the lease given up: a standby taking over finds everything in SQL."""
        # Also ends the loops when a Redis call swallowed their cancellation (asyncio.timeout
        # in 3.11 can turn it into a TimeoutError, which those calls suppress).
        self._stopping = True
        await _cancel(self._follower)
        await self._step_down()
        await self._stop_following_edge()
        await self._ctx.writes.flush()
        await _cancel(self._keeper)
        if self._holding:
            await self._lease.release()  # a standby need not wait for it to run out
            self._holding = False
        await self._lease.close()
        await self._membership.release()

    async def _keep_lease(self) -> None:
        """The one writer of `_holding`: renew every third of the term; a renewal that finds
        the key gone or another node's loses it at once, one Redis does not answer loses it
        at the acting deadline."""
        loop = asyncio.get_running_loop()
        interval = self._term_s / RENEWALS_PER_TERM
        while not self._stopping:
            sent = loop.time()
            await self._membership.renew()
            answer = await (self._lease.renew() if self._holding else self._lease.acquire())
            if answer is Renewal.RENEWED:
                self._renewed_at = sent
            held = answer is Renewal.RENEWED or (
                answer is Renewal.UNKNOWN and self._holding
                and loop.time() < acting_deadline(self._renewed_at, self._term_s)
            )  # fmt: skip
            if held != self._holding:
                self._holding = held
                log.warning("controller_lease_" + ("taken" if held else "lost"), node=self._node)
                self._changed.set()
            next_round = sent + interval
            if held:  # wake up at the acting deadline at the latest
                next_round = min(next_round, acting_deadline(self._renewed_at, self._term_s))
            await asyncio.sleep(max(0.0, next_round - loop.time()))

    async def _follow_lease(self) -> None:
        while not self._stopping:
            await self._changed.wait()
            self._changed.clear()
            if self._holding and self._controller is None:
                await self._take_over_unless_lost()
            elif not self._holding and self._controller is not None:
                await self._step_down()

    async def _take_over_unless_lost(self) -> None:
        """A start takes seconds: losing the lease meanwhile cancels it."""
        taking = asyncio.create_task(self._take_over())
        lost = asyncio.create_task(self._changed.wait())
        try:
            await asyncio.wait([taking, lost], return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
        if not taking.done():
            taking.cancel()
        try:
            await taking
        except asyncio.CancelledError:
            log.warning("controller_take_over_cut", node=self._node)
            await self._step_down()
        except Exception:
            # Let another node try: giving the lease up makes the keeper see it lost.
            log.exception("controller_take_over_failed", node=self._node)
            await self._step_down()
            await self._lease.release()

    async def _take_over(self) -> None:
        log.warning("controller_taking_over", node=self._node)
        await self._ctx.writes.read_sequences()
        await close_interrupted_calls(self._ctx)
        await self._stop_following_edge()  # the pool drives it now
        controller = self._controller = self._make_controller(await self._lease.next_term())
        await controller.start()
        self._ctx.metrics.controller_active.set(1)
        async with self._ctx.sessions.begin() as session:
            event = await self._ctx.events.stage(session, "controller_activated",
                                                 {"node": self._node})  # fmt: skip
        await self._ctx.events.publish(event)
        log.warning("controller_active", node=self._node)

    async def _step_down(self) -> None:
        """Also after a takeover that failed before its controller was made: the edge
        follows the active node's list again either way."""
        controller, self._controller = self._controller, None
        if controller is not None:
            self._ctx.metrics.controller_active.set(0)
            log.warning("controller_stepping_down", node=self._node)
            try:
                await controller.stop()
            except Exception:  # whatever failed, this node no longer acts
                log.exception("controller_stop_failed", node=self._node)
        if not self._stopping:
            self._follow_edge()

    def _follow_edge(self) -> None:
        if self._edge_follower is not None:
            self._edge_follower.start()

    async def _stop_following_edge(self) -> None:
        if self._edge_follower is not None:
            await self._edge_follower.stop()


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
