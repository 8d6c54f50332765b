"""The controller: call flows, the ACD, chat assignment, reply delivery, retention of history and
the media worker pool, started and stopped as one component, apart from the web app.

`pbx run` starts it beside the API in one process; they share the plumbing of
core.context.ServiceContext (SQL, Redis, events, the write-behind journal) and nothing else.
The API reads the controller through the few methods below (waiting callers, figures for the
metrics); the controller never calls the API. Either side runs without the other: the API
alone (`create_app(..., controller=False)`) answers everything but live queue state, and the
controller alone takes calls and chats with no HTTP server at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import structlog

from acd.agents import recover_after_restart
from acd.callbacks import Callback, cancel_callback
from acd.dispatcher import Dispatcher
from acd.queues import get_queue
from chat.assigner import ChatAssigner
from chat.outbox import OutboxDelivery
from controller.retention import RetentionJob
from controller.shared_edge import SharedEdge
from core.context import PhoneContacts, ServiceContext
from core.db import utcnow
from core.errors import Conflict
from flows.calls import CallFlows, Tones
from flows.supervision import SupervisionMode
from pbx.capacity import WorkerState
from pbx.channel import WorkerLauncher
from pbx.edge_mirror import WorkerEdge
from pbx.kamailio import EdgeWorkerSet, KamailioRpc, dispatcher_list_path
from pbx.media_link import MediaHosts
from pbx.pool import WorkerPool
from pbx.tones import make_beep_tone, make_hold_music, make_ringback_tone

log = structlog.get_logger(__name__)


class NoCallControl(Conflict):
    code = "no_call_control"


@dataclass(frozen=True)
class MediaWorkers:
    """Media workers that are not forked PJSUA2 processes behind Kamailio, such as the
    in-memory twin (pbx.memory_worker): what starts them, the edge's list of them, and where
    the phones they ring are registered."""

    launcher: WorkerLauncher
    edge: WorkerEdge
    contacts: PhoneContacts


@dataclass(frozen=True)
class WaitingCall:
    call_id: int
    position: int
    wait_seconds: float
    ringing: bool  # an agent's phone rings for the caller (or has answered)
    callback_id: int | None  # a callback waiting in the caller's place (nobody on the line)


@dataclass(frozen=True)
class PoolFigures:
    workers_alive: int
    legs_capacity: int
    legs_in_use: int
    restarts: int
    spare_legs: int
    max_workers: int
    workers_by_state: dict[WorkerState, int]
    media_timeouts: int


class Controller:
    def __init__(
        self,
        ctx: ServiceContext,
        edge: KamailioRpc,
        *,
        media_workers: bool | MediaWorkers = True,
        clock: Callable[[], datetime] = utcnow,
        term: int = 0,
    ) -> None:
        """`media_workers=False`: no worker pool and no call flows (the ACD decides for
        whoever joins its queues; chat runs as always).
        `clock`: what call flows decide business hours with (tests fix it)."""
        self._ctx = ctx
        self._edge = edge
        self._media_workers = media_workers
        self._clock = clock
        # Grows with each takeover (controller.seat); media hosts serve no older controller.
        self._term = term
        # Chat needs no media: its assigner and reply delivery run with or without workers.
        self.chat_assigner = ChatAssigner(ctx)
        # One capacity model: enough open chat dialogs keep calls away (chat.block_calls_at),
        # asked of the assigner's memory.
        self.dispatcher = Dispatcher(ctx, self.chat_assigner.blocked_for_calls)
        self._outbox = OutboxDelivery(ctx)
        self._retention = RetentionJob(ctx)
        self.pool: WorkerPool | None = None
        self.media_hosts: MediaHosts | None = None
        self._flows: CallFlows | None = None
        self._shared_edge: SharedEdge | None = None
        self._unclaimed_places: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # Calls do not outlive the controller: whatever "ringing" or "in call" Redis
        # remembers from the last run is stale.
        await recover_after_restart(self._ctx)
        await self.chat_assigner.start()
        await self.dispatcher.start()
        self._outbox.start()
        self._retention.start()
        if self._media_workers:
            self.pool = await self._start_pool()
        log.info("controller_started", media_workers=bool(self._media_workers))

    async def stop(self) -> None:
        if self._unclaimed_places is not None:
            self._unclaimed_places.cancel()
            await asyncio.gather(self._unclaimed_places, return_exceptions=True)
        if self.media_hosts is not None:
            self.media_hosts.closing()  # no new link while the pool hangs up through them
        if self._flows is not None:
            await self._flows.callbacks.stop()  # before the pool: its calls end cleanly
        if self.pool is not None:
            await self.pool.stop()
        if self.media_hosts is not None:
            await self.media_hosts.stop()  # after the pool: its workers' calls ended cleanly
        if self._shared_edge is not None:
            await self._shared_edge.stop()
        await self._retention.stop()
        await self.dispatcher.stop()
        await self._outbox.stop()
        await self.chat_assigner.stop()

    # -- what the API may read --------------------------------------------------------------

    def waiting_callers(self, queue_id: int) -> list[WaitingCall]:
        """Callers in the queue now, longest waiting first."""
        return [
            WaitingCall(entry.call_id, position, round(entry.waited(), 3),
                        self.dispatcher.ringing(entry), entry.callback_id)
            for position, entry in enumerate(self.dispatcher.waiting(queue_id), start=1)
        ]  # fmt: skip

    def queue_figures(self) -> dict[int, tuple[int, float]]:
        """Per queue: callers waiting and the longest wait."""
        return self.dispatcher.queue_figures()

    async def supervise(
        self, call_id: int, supervisor_user_id: int, supervisor_extension: str,
        mode: SupervisionMode,
    ) -> None:  # fmt: skip
        """Ring the supervisor's phone to hear a live call (flows.supervision)."""
        if self._flows is None:
            raise NoCallControl("this service takes no calls (no media workers)")
        await self._flows.supervise(call_id, supervisor_user_id, supervisor_extension, mode)

    async def request_callback(
        self, queue_id: int, number: str, priority: int, shown_number: str | None
    ) -> Callback:
        """A callback asked for outside a call (flows.callback.request_from_outside)."""
        if self._flows is None:
            raise NoCallControl("this service takes no calls (no media workers)")
        queue = await get_queue(self._ctx, queue_id)
        return await self._flows.callbacks.request_from_outside(queue, number, priority,
                                                                shown_number)  # fmt: skip

    async def cancel_callback(self, callback_id: int) -> Callback:
        """Take back a pending callback; it leaves its queue at once (flows.callback)."""
        if self._flows is None:
            return await cancel_callback(self._ctx, callback_id)
        return await self._flows.callbacks.cancel(callback_id)

    def media_host_links(self) -> dict[str, bool]:
        """Each configured media host: linked now or not (empty: workers run here)."""
        if self.media_hosts is None:
            return {}
        linked = set(self.media_hosts.linked)
        return {host: host in linked for host in self._ctx.settings.cluster.media_hosts}

    def pool_figures(self) -> PoolFigures | None:
        pool = self.pool
        if pool is None:
            return None
        return PoolFigures(
            workers_alive=pool.workers_alive, legs_capacity=pool.legs_capacity,
            legs_in_use=pool.legs_in_use, restarts=pool.restarts, spare_legs=pool.spare_legs,
            max_workers=pool.max_workers, workers_by_state=pool.workers_by_state(),
            media_timeouts=pool.media_timeouts,
        )  # fmt: skip

    # -- the media side ---------------------------------------------------------------------

    def _worker_edge(self, remote: bool) -> WorkerEdge:
        """This node's edge; a cluster's nodes with media hosts share the list with the
        other nodes' edges (controller.shared_edge)."""
        local = EdgeWorkerSet(dispatcher_list_path(self._ctx.settings), self._edge)
        cluster = self._ctx.settings.cluster
        if not (remote and cluster.node and cluster.edges):
            return local
        self._shared_edge = SharedEdge(local, self._ctx.redis, self._term, self._ctx.metrics)
        self._shared_edge.start()
        return self._shared_edge

    async def _start_pool(self) -> WorkerPool:
        settings = self._ctx.settings
        folder = settings.data_dir / "tones"
        tones = Tones(
            ringback=await asyncio.to_thread(make_ringback_tone, folder),
            hold_music=await asyncio.to_thread(make_hold_music, folder),
            beep=await asyncio.to_thread(make_beep_tone, folder),
        )
        other = self._media_workers if isinstance(self._media_workers, MediaWorkers) else None
        contacts = other.contacts if other else self._edge
        # With media hosts, every worker runs there (pbx.media_link), none here.
        remote = bool(settings.cluster.media_hosts) and other is None
        flows = CallFlows(self._ctx, contacts, self.dispatcher, tones, clock=self._clock)
        await flows.warm()
        pool = WorkerPool(
            settings.workers,
            # Kamailio sends every INVITE from its SIP socket; nothing else may reach a worker.
            trusted=settings.edges,
            on_inbound=flows.handle,
            on_adopted=flows.adopted,
            edge=other.edge if other else self._worker_edge(remote),
            launcher=other.launcher if other else None,
            media_hosts=settings.cluster.media_host_addresses if remote else (),
            metrics=self._ctx.metrics,
            trunk_username=settings.trunk.username,
            trunk_password=settings.trunk.password,
        )
        flows.use_links(pool.link)
        flows.callbacks.use_originate(pool.originate)
        self._flows = flows
        self.pool = pool  # stopped by stop() also when its start is cut short
        await pool.start()
        if remote:
            self.media_hosts = MediaHosts(settings, pool, term=self._term,
                                          metrics=self._ctx.metrics)  # fmt: skip
            self.media_hosts.start()
            self._unclaimed_places = asyncio.create_task(flows.close_unclaimed_places())
        await flows.callbacks.start()
        return pool
