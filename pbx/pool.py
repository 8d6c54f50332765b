"""The media worker pool: starts workers as demand grows, retires idle ones, routes events.

Workers run on hosts, each with a launcher (pbx.channel): this machine's forks them from one
warmed-up fork server (pbx.forked_workers), in tests possibly the in-memory twin
(pbx.memory_worker); media hosts (`pbx media`) join and leave over the network
(pbx.media_link). Each worker talks to the pool over its own channel: commands out, events
in, their end when it dies. The pool keeps spare legs ahead of the load (pbx.capacity),
spreads new workers over the hosts, tells the edge which workers take calls, and ends the
legs of a worker that died (or whose host was lost) with "worker lost", having the edge end
its calls for the far ends; nothing else notices.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from core.context import EdgeUnavailable
from core.metrics import Metrics
from core.settings import WorkerSettings
from pbx.capacity import (
    LEGS_PER_INBOUND_CALL,
    PoolLimits,
    WorkerLoad,
    WorkerState,
    admissible_legs,
    legs_reserved,
    max_workers,
    plan,
)
from pbx.channel import WorkerChannel, WorkerHost, WorkerLauncher, WorkerSpec, WorkerStartFailed
from pbx.edge_mirror import EdgeMirror, WorkerEdge
from pbx.forked_workers import ForkedWorkers
from pbx.kamailio import WorkerSlot
from pbx.legs import (
    WORKER_LOST,
    Leg,
    LegEnd,
    LegGone,
    TransferRequest,
    WorkerCommandFailed,
)
from pbx.protocol import (
    LINK_HEADER,
    MEDIA_TIMEOUT_REASON,
    Attach,
    Attached,
    CallRefused,
    Command,
    CommandResult,
    Dial,
    DtmfReceived,
    Event,
    Hello,
    IncomingCall,
    LegAnswered,
    LegEnded,
    LegRinging,
    PlaybackEnded,
    RecordingEnded,
    Shutdown,
    TransferRequested,
)

log = structlog.get_logger(__name__)

HELLO_TIMEOUT_S = 20.0
# A link between two workers is answered by the other worker within milliseconds.
LINK_TIMEOUT_S = 5.0
COMMAND_TIMEOUT_S = 10.0
# After Shutdown a worker hangs up and exits by itself; SIGKILL only after this.
EXIT_GRACE_S = 3.0
# A retiring worker left the edge's set; an INVITE the edge relayed just before may still
# arrive (the edge gives a worker 2 s to answer), so it shuts down only after this.
RETIRE_DRAIN_S = 3.0
# A worker slot whose process failed to start is not tried again for this long.
BAD_SLOT_S = 60.0
# Leg changes within this long are planned for together (each plan looks at every worker).
RESIZE_COALESCE_S = 0.02
# The edge did not take the worker list (Kamailio busy or restarting): try again after this.
PUBLISH_RETRY_S = 0.5
LOST_CODE = 500
# Worker ids on the n-th media host (cluster.media_hosts) start at n times this (this
# machine's at 0): unique across hosts, and the same when a host comes back.
HOST_ID_STRIDE = 10_000
LOCAL_HOST = "local"


InboundHandler = Callable[[Leg], Awaitable[None]]
# A call a detached worker kept, now this pool's: a caller alone (peer None), or a bridged
# pair (caller first when there is one).
AdoptedHandler = Callable[[Leg, Leg | None], Awaitable[None]]


@dataclass(frozen=True)
class AdoptedWorker:
    """A worker a lost controller left on a media host, with its calls (pbx.media_link)."""

    worker_id: int
    sip_port: int
    channel: WorkerChannel


@dataclass(frozen=True)
class WorkerStatus:
    id: int
    host: str
    pid: int | None
    sip_port: int
    rtp_port: int  # the first of its range
    state: WorkerState
    max_legs: int
    legs_in_use: int


@dataclass(eq=False)
class _Host:
    place: WorkerHost
    launcher: WorkerLauncher
    first_id: int

    def sip_uri(self, sip_port: int) -> str:
        return f"sip:{self.place.address}:{sip_port}"


@dataclass
class _Worker:
    id: int
    host: _Host
    sip_port: int
    rtp_port: int
    state: WorkerState = WorkerState.STARTING
    pid: int | None = None
    max_legs: int = 0
    channel: WorkerChannel | None = None
    legs: dict[str, Leg] = field(default_factory=dict)
    # The inbound leg each outbound leg was dialled for (None: a spare leg).
    parents: dict[str, str | None] = field(default_factory=dict)
    # Outbound legs placed to dial one more (Dial.keep_room): holders, like inbound legs.
    holders: set[str] = field(default_factory=set)
    # Ended legs whose recording the worker is still closing (RecordingEnded follows).
    closing: dict[str, Leg] = field(default_factory=dict)
    pending: dict[int, asyncio.Future[CommandResult]] = field(default_factory=dict)
    hello: asyncio.Future[Hello] | None = None
    reader: asyncio.Task[None] | None = None
    idle_since: float | None = field(default_factory=time.monotonic)
    retire_at: float | None = None
    # Legs in use or promised (pbx.capacity.legs_reserved), kept as legs come and go.
    reserved: int = 0

    def count_reserved(self) -> None:
        holders = [
            leg_id for leg_id, leg in self.legs.items()
            if leg.direction == "inbound" or leg_id in self.holders
        ]  # fmt: skip
        self.reserved = legs_reserved(holders, self.parents.values())


class WorkerPool:
    """Media workers started on demand, each with its own SIP port and RTP range.

    `launcher` starts this machine's; by default they are forked PJSUA2 processes (`trusted`,
    the trunk credentials and `python` are theirs). With `media_hosts` (their addresses),
    none here: only on those hosts, while they are linked (add_host)."""

    def __init__(
        self,
        settings: WorkerSettings,
        *,
        trusted: list[str],
        on_inbound: InboundHandler,
        edge: WorkerEdge | None = None,
        metrics: Metrics | None = None,
        trunk_username: str = "",
        trunk_password: str = "",
        python: str = sys.executable,
        launcher: WorkerLauncher | None = None,
        media_hosts: Sequence[str] = (),
        on_adopted: AdoptedHandler | None = None,
    ) -> None:
        self._settings = settings
        self._on_inbound = on_inbound
        self._on_adopted = on_adopted
        self._edge = edge
        self._metrics = metrics
        self._hosts: dict[str, _Host] = {}
        self._local: _Host | None = None
        # Every address workers may run on, with the first worker id there. The edge lists
        # all their slots once (off until a worker is ready in one), so a host that comes or
        # goes only turns slots on and off: no reload, which would lose the edge's call counts.
        self._first_ids = {
            address: HOST_ID_STRIDE * (index + 1) for index, address in enumerate(media_hosts)
        } or {settings.host: 0}
        if not media_hosts:
            here = WorkerHost(
                LOCAL_HOST, settings.host, settings.first_sip_port, settings.first_rtp_port,
                settings.rtp_ports_per_worker, max_workers(settings),
            )  # fmt: skip
            self._local = self._hosts[LOCAL_HOST] = _Host(here, launcher or ForkedWorkers(
                settings, trusted=trusted, trunk_username=trunk_username,
                trunk_password=trunk_password, python=python,
            ), first_id=0)  # fmt: skip
        self._workers: dict[int, _Worker] = {}
        self._bad_slots: dict[int, float] = {}
        # Slots of dead workers whose calls the edge is still ending: a replacement there would
        # have the same URI, and its new calls would be ended with the old ones.
        self._slots_ending_calls: set[int] = set()
        self._legs_per_worker = 0  # measured by the first worker
        self._command_ids = itertools.count(1)
        self._leg_ids = itertools.count(1)
        # In outbound leg ids: a worker taken over from a lost controller still holds legs
        # that controller named, from the same counter.
        self._leg_prefix = uuid.uuid4().hex[:6]
        self._flows: set[asyncio.Task[None]] = set()
        # Links being made (link), by their token: the far worker's leg, once it arrives.
        self._links: dict[str, asyncio.Future[Leg]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._media_timeouts = 0
        self._restarts = 0
        self._refused: dict[str, int] = {}
        self._resize_wanted = asyncio.Event()
        # Set while no worker is starting and the spare legs are there (or the pool is full).
        self._settled = asyncio.Event()
        self._resizer: asyncio.Task[None] | None = None
        self._edge_mirror = EdgeMirror()
        # Set while the edge does not take our changes: one retry at a time, said once.
        self._publish_retry: asyncio.Task[None] | None = None
        self._publishing = asyncio.Lock()
        self._stopping = False

    # -- what the pool holds ------------------------------------------------------------

    @property
    def max_workers(self) -> int:
        """On every host there is now."""
        return sum(host.place.max_workers for host in self._hosts.values())

    @property
    def hosts(self) -> list[str]:
        return sorted(self._hosts)

    @property
    def workers(self) -> list[WorkerStatus]:
        return [
            WorkerStatus(
                id=w.id,
                host=w.host.place.name,
                pid=w.pid,
                sip_port=w.sip_port,
                rtp_port=w.rtp_port,
                state=w.state,
                max_legs=w.max_legs,
                legs_in_use=len(w.legs),
            )
            for w in sorted(self._workers.values(), key=lambda w: w.id)
        ]

    @property
    def workers_alive(self) -> int:
        return sum(1 for w in self._workers.values() if w.state is not WorkerState.STARTING)

    def workers_by_state(self) -> dict[WorkerState, int]:
        counts = dict.fromkeys(WorkerState, 0)
        for worker in self._workers.values():
            counts[worker.state] += 1
        return counts

    @property
    def legs_capacity(self) -> int:
        """Legs the ready workers may hold (a bridged call takes two of one worker)."""
        return sum(w.max_legs for w in self._workers.values() if w.state is WorkerState.READY)

    @property
    def legs_in_use(self) -> int:
        return sum(len(w.legs) for w in self._workers.values())

    @property
    def spare_legs(self) -> int:
        """Legs callers could still take in the ready workers."""
        return sum(
            admissible_legs(w.max_legs, w.reserved)
            for w in self._workers.values()
            if w.state is WorkerState.READY
        )

    def live_legs(self) -> list[Leg]:
        """Every leg the workers hold now (to name a leak, not to drive calls)."""
        return [leg for w in self._workers.values() for leg in w.legs.values()]

    @property
    def restarts(self) -> int:
        """Workers that died unexpectedly (the pool replaces them as demand needs)."""
        return self._restarts

    @property
    def refused(self) -> dict[str, int]:
        """INVITEs the workers refused before any call flow, by reason."""
        return dict(self._refused)

    @property
    def media_timeouts(self) -> int:
        """Legs the workers hung up because their RTP stopped."""
        return self._media_timeouts

    def dispatcher_targets(self) -> list[str]:
        """The workers that take new calls, as the edge's dispatcher lists them."""
        return [
            _uri(w)
            for w in sorted(self._workers.values(), key=lambda w: w.id)
            if w.state is WorkerState.READY
        ]

    def _slots(self) -> list[WorkerSlot]:
        """Every place a worker may run, on every host there may be."""
        settings = self._settings
        return [
            WorkerSlot(
                uri=f"sip:{address}:{settings.first_sip_port + slot}",
                duid=f"w{first_id + slot}",
                max_calls=max(1, self._legs_per_worker // LEGS_PER_INBOUND_CALL),
            )
            for address, first_id in self._first_ids.items()
            for slot in range(max_workers(settings))
        ]

    # -- life cycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Start this machine's launcher and first workers; return once the spare legs are
        up. Without local workers, at once: workers start as media hosts join."""
        if self._local is not None:
            await self._local.launcher.start(on_available=self._resize_wanted.set)
            first = self._new_worker()
            if first is None:
                raise WorkerStartFailed("no worker slot is free")
            await self._spawn(first)  # it measures the leg cap every later worker is told
        self._resizer = asyncio.create_task(self._resize_loop())
        if self._local is not None:
            async with asyncio.timeout(HELLO_TIMEOUT_S):
                await self._settled.wait()
        await self._publish()
        log.info("worker_pool_started", workers=len(self._workers), legs=self.legs_capacity,
                 max_workers=self.max_workers)  # fmt: skip

    async def stop(self) -> None:
        """Shut every worker down (its calls are hung up), then the launcher; repeatable."""
        self._stopping = True
        for flow in list(self._flows):
            flow.cancel()
        for task in [self._resizer, *self._tasks]:
            if task is not None:
                task.cancel()
        await asyncio.gather(
            *(t for t in [self._resizer, *self._tasks] if t), return_exceptions=True
        )
        await asyncio.gather(*(self._stop_worker(w) for w in list(self._workers.values())))
        if self._local is not None:
            await self._local.launcher.stop()  # a media host's link is its own (pbx.media_link)

    def add_host(
        self, place: WorkerHost, launcher: WorkerLauncher, adopted: Sequence[AdoptedWorker] = ()
    ) -> None:
        """A media host joined: its workers start as demand needs; those a lost controller
        left there with calls (`adopted`) are taken over. ValueError if it is not one of
        `media_hosts`, holds more workers or other ports than the edge lists, or one of its
        name or address is in the pool already."""
        first_id = self._first_ids.get(place.address)
        if first_id is None or first_id == 0:
            raise ValueError(f"{place.address} is not a media host of this node")
        if place.first_sip_port != self._settings.first_sip_port or place.max_workers > (
            max_workers(self._settings)
        ):
            raise ValueError(f"media host {place.name}'s SIP ports are not the edge's")
        if place.name in self._hosts or any(
            host.place.address == place.address for host in self._hosts.values()
        ):
            raise ValueError(f"media host {place.name} ({place.address}) is in the pool already")
        host = self._hosts[place.name] = _Host(place, launcher, first_id)
        for worker in adopted:
            self._adopt(host, worker)
        self._own(launcher.start(on_available=self._resize_wanted.set))
        log.info("media_host_joined", host=place.name, address=place.address,
                 max_workers=place.max_workers)  # fmt: skip
        self._own(self._publish())
        self._resize_wanted.set()

    def remove_host(self, name: str) -> None:
        """A media host was lost or left: no new worker starts there. Its workers' channels
        end with the host's link, which ends their legs as any dead worker's and turns their
        slots off at the edge (kept listed: the host may come back on the same ones)."""
        if self._hosts.pop(name, None) is None:
            return
        workers = sum(1 for w in self._workers.values() if w.host.place.name == name)
        log.warning("media_host_left", host=name, workers=workers)
        self._resize_wanted.set()

    async def kill_worker_for_test(self, worker_id: int) -> None:
        """Kill one worker (supervision tests); the pool replaces it as demand needs."""
        channel = self._workers[worker_id].channel
        if channel is not None:
            channel.kill()

    # -- sizing -------------------------------------------------------------------------

    def _starting(self) -> bool:
        return any(w.state is WorkerState.STARTING for w in self._workers.values())

    async def _resize_loop(self) -> None:
        """Act on the capacity plan whenever load changes, or an idle worker's grace ends."""
        loop = asyncio.get_running_loop()
        while True:
            next_check = self._resize()
            settled = not self._starting() and (
                self.spare_legs >= self._settings.spare_legs
                or len(self._workers) >= self.max_workers
            )
            if settled:
                self._settled.set()
            else:
                self._settled.clear()
            wait = None if next_check is None else max(0.0, next_check - time.monotonic())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(None if wait is None else loop.time() + wait):
                    await self._resize_wanted.wait()
                # Calls come in bursts: one look at the pool for all the changes of a moment.
                await asyncio.sleep(RESIZE_COALESCE_S)
            self._resize_wanted.clear()

    def _resize(self) -> float | None:
        now = time.monotonic()
        limits = PoolLimits(
            spare_legs=self._settings.spare_legs,
            max_workers=self.max_workers,
            legs_per_worker=self._legs_per_worker,
            idle_grace=self._settings.idle_retire_after,
        )
        loads = [
            WorkerLoad(
                id=w.id,
                state=w.state,
                room=admissible_legs(w.max_legs or self._legs_per_worker, w.reserved),
                idle_since=w.idle_since,
            )
            for w in self._workers.values()
        ]
        decision = plan(loads, limits, now)
        for worker_id in decision.revive:
            worker = self._workers[worker_id]
            worker.state, worker.retire_at = WorkerState.READY, None
            log.info("worker_revived", worker=worker_id)
        for _ in range(decision.start):
            # None, e.g. while the fork server is being restarted: it asks again when back.
            new = self._new_worker()
            if new is None:
                break
            self._own(self._spawn_quietly(new))
        for worker_id in decision.retire:
            worker = self._workers[worker_id]
            worker.state = WorkerState.RETIRING
            worker.retire_at = now + RETIRE_DRAIN_S
            log.info("worker_retiring", worker=worker_id)
            self._own(self._retire(worker))
        if decision.revive or decision.retire:
            self._own(self._publish())
        return decision.next_check

    def _legs_changed(self, worker: _Worker) -> None:
        worker.count_reserved()
        worker.idle_since = None if worker.legs else time.monotonic()
        if worker.state is WorkerState.RETIRING and not worker.legs:
            self._own(self._retire(worker))
        self._resize_wanted.set()

    def _new_worker(self) -> _Worker | None:
        """A free slot on the host that runs the fewest workers (whose launcher works)."""
        now = time.monotonic()
        running = {name: 0 for name in self._hosts}
        for worker in self._workers.values():
            running[worker.host.place.name] = running.get(worker.host.place.name, 0) + 1
        hosts = sorted(
            (host for host in self._hosts.values() if host.launcher.available),
            key=lambda host: (running[host.place.name], host.first_id),
        )  # fmt: skip
        for host in hosts:
            place = host.place
            for slot in range(place.max_workers):
                worker_id = host.first_id + slot
                if (
                    not host.launcher.can_launch_on(place.first_sip_port + slot)
                    or worker_id in self._workers
                    or worker_id in self._slots_ending_calls
                    or self._bad_slots.get(worker_id, 0.0) > now
                ):
                    continue
                worker = _Worker(
                    id=worker_id, host=host, sip_port=place.first_sip_port + slot,
                    rtp_port=place.first_rtp_port + slot * place.rtp_ports_per_worker,
                )  # fmt: skip
                self._workers[worker_id] = worker
                return worker
        return None

    async def _retire(self, worker: _Worker) -> None:
        """Shut a retiring worker down once its drain time has passed and it holds no leg."""
        await self._publish()
        if worker.retire_at is not None:
            await asyncio.sleep(max(0.0, worker.retire_at - time.monotonic()))
        current = self._workers.get(worker.id) is worker
        if current and worker.state is WorkerState.RETIRING and not worker.legs:
            await self._stop_worker(worker)
            log.info("worker_retired", worker=worker.id)

    async def _publish(self) -> None:
        """Bring the edge up to date with the ready workers; while it does not take changes
        (Kamailio busy or restarting), one retry loop keeps trying, said once."""
        if self._edge is None:
            return
        try:
            await self._update_edge(self._edge)
        except EdgeUnavailable as exc:
            if self._publish_retry is None:
                log.warning("edge_worker_update_failed", error=str(exc))
                self._publish_retry = asyncio.create_task(self._retry_publish(self._edge))
                self._own(self._publish_retry)

    async def _retry_publish(self, edge: WorkerEdge) -> None:
        while True:
            await asyncio.sleep(PUBLISH_RETRY_S)
            try:
                await self._update_edge(edge)
            except EdgeUnavailable:
                continue
            self._publish_retry = None
            log.info("edge_worker_update_done")
            return

    async def _update_edge(self, edge: WorkerEdge) -> None:
        """One update at a time, each with the newest state (pbx.edge_mirror). Raises
        EdgeUnavailable."""
        async with self._publishing:
            slots = self._slots()
            if not self._legs_per_worker and slots:
                return  # each slot's call limit comes from the first worker's cap
            await self._edge_mirror.bring(edge, slots, set(self.dispatcher_targets()))

    def _own(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("worker_pool_task_failed", error=repr(task.exception()))

    # -- processes ----------------------------------------------------------------------

    async def _spawn_quietly(self, worker: _Worker) -> None:
        try:
            await self._spawn(worker)
        except (OSError, WorkerStartFailed) as exc:
            if worker.host not in self._hosts.values():
                return  # its host left meanwhile: nothing wrong with the slot
            log.error("worker_start_failed", worker=worker.id, error=str(exc))
            self._bad_slots[worker.id] = time.monotonic() + BAD_SLOT_S
        else:
            await self._publish()

    async def _spawn(self, worker: _Worker) -> None:
        """Start a worker and wait for its Hello; on failure its slot is free again."""
        started = time.perf_counter()
        spec = WorkerSpec(worker.id, worker.sip_port, worker.rtp_port, self._legs_per_worker)
        try:
            channel = await worker.host.launcher.launch(spec)
        except BaseException:
            self._workers.pop(worker.id, None)
            raise
        worker.channel = channel
        worker.hello = asyncio.get_running_loop().create_future()
        worker.reader = asyncio.create_task(self._read_events(worker, channel))
        try:
            async with asyncio.timeout(HELLO_TIMEOUT_S):
                greeting = await worker.hello
        except (TimeoutError, WorkerStartFailed) as exc:
            channel.close()
            worker.reader.cancel()
            self._workers.pop(worker.id, None)
            problem = "said nothing in time" if isinstance(exc, TimeoutError) else str(exc)
            raise WorkerStartFailed(f"worker {worker.id} {problem}") from None
        worker.pid, worker.max_legs = greeting.pid, greeting.max_legs
        self._legs_per_worker = self._legs_per_worker or greeting.max_legs
        worker.state = WorkerState.READY
        seconds = time.perf_counter() - started
        if self._metrics is not None:
            self._metrics.worker_start_seconds.observe(seconds)
        log.info("worker_ready", worker=worker.id, pid=greeting.pid, max_legs=greeting.max_legs,
                 start_ms=round(seconds * 1000, 1))  # fmt: skip
        self._resize_wanted.set()

    def _adopt(self, host: _Host, adopted: AdoptedWorker) -> None:
        """Take a detached worker over, its slot at once (no new worker starts there): Attach,
        then its legs arrive (Attached) and their calls go to on_adopted. One that does not
        answer is gone, as a dead worker."""
        place = host.place
        slot = adopted.sip_port - place.first_sip_port
        if (
            not 0 <= slot < place.max_workers
            or adopted.worker_id != host.first_id + slot
            or adopted.worker_id in self._workers
        ):
            log.error("worker_not_adopted", worker=adopted.worker_id, sip_port=adopted.sip_port)
            adopted.channel.close()
            return
        worker = _Worker(
            id=adopted.worker_id, host=host, sip_port=adopted.sip_port,
            rtp_port=place.first_rtp_port + slot * place.rtp_ports_per_worker,
            channel=adopted.channel,
        )  # fmt: skip
        self._workers[worker.id] = worker
        worker.reader = asyncio.create_task(self._read_events(worker, adopted.channel))
        self._own(self._attach(worker))

    async def _attach(self, worker: _Worker) -> None:
        try:
            await self._command(worker, lambda cid: Attach(cid=cid))
        except WorkerCommandFailed as exc:
            log.error("worker_not_adopted", worker=worker.id, error=str(exc))
            if worker.channel is not None:
                worker.channel.close()
            return
        await self._publish()

    def _attached(self, worker: _Worker, attached: Attached) -> None:
        """The legs an adopted worker holds: this pool's from now on."""
        worker.pid, worker.max_legs = attached.pid, attached.max_legs
        self._legs_per_worker = self._legs_per_worker or attached.max_legs
        hello: asyncio.Future[Hello] = asyncio.get_running_loop().create_future()
        hello.set_result(Hello(worker_id=worker.id, max_legs=attached.max_legs,
                               sip_port=worker.sip_port, pid=attached.pid))  # fmt: skip
        worker.hello = hello
        held = {leg.leg: leg for leg in attached.legs}
        legs: dict[str, Leg] = {}
        for each in attached.legs:
            # No source edge: the one a call came through may be the lost controller's node's,
            # so whoever it rings is reached through this node's edge (flows.calls._edge_of).
            leg = self._new_leg(
                worker, each.leg, each.direction, each.from_uri, each.to_uri, each.to_uri, {},
                each.sip_call_id,
            )  # fmt: skip
            leg.on_answered(each.sip_call_id, None)
            legs[each.leg] = leg
            if each.direction == "outbound":
                worker.parents[each.leg] = each.peer
        worker.state = WorkerState.READY
        self._legs_changed(worker)
        log.info("worker_adopted", worker=worker.id, pid=attached.pid, legs=len(legs))
        for each in attached.legs:
            peer_id = each.peer if each.peer in legs else None
            if peer_id is not None and (each.direction, each.leg) > (
                held[peer_id].direction,
                held[peer_id].leg,
            ):
                continue  # a pair once, its inbound (or first) leg first
            self._adopted_call(legs[each.leg], legs[peer_id] if peer_id else None)

    def _adopted_call(self, leg: Leg, peer: Leg | None) -> None:
        flow = asyncio.create_task(self._run_adopted(leg, peer))
        self._flows.add(flow)
        flow.add_done_callback(self._flows.discard)

    async def _run_adopted(self, leg: Leg, peer: Leg | None) -> None:
        try:
            if self._on_adopted is not None:
                await self._on_adopted(leg, peer)
                return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("adopted_call_failed", leg=leg.id)
        for each in (leg, peer):  # nobody to take the call on: it ends
            if each is not None:
                with contextlib.suppress(LegGone, WorkerCommandFailed):
                    await each.hangup()

    def _worker_gone(self, worker: _Worker) -> None:
        """Its socket closed: a planned stop, or a death the pool did not ask for."""
        if self._workers.get(worker.id) is not worker:
            return
        del self._workers[worker.id]
        if worker.hello is not None and not worker.hello.done():
            worker.hello.set_exception(WorkerStartFailed("exited before its hello"))
        elif not self._stopping and worker.state is not WorkerState.RETIRING:
            self._restarts += 1
            if self._metrics is not None:
                self._metrics.worker_restarts.inc()
            log.error("worker_lost", worker=worker.id, pid=worker.pid, legs=len(worker.legs))
            self._own(self._publish())
            if self._edge is not None:
                self._slots_ending_calls.add(worker.id)
                self._own(self._end_calls_at_edge(self._edge, worker))
        self._end_all_legs(worker)
        self._resize_wanted.set()

    async def _end_calls_at_edge(self, edge: WorkerEdge, worker: _Worker) -> None:
        """The far ends of a dead worker's calls hear nothing from it: the edge ends them
        (BYE, or CANCEL while a phone rings). Its slot is free again afterwards."""
        try:
            ended = await edge.end_calls(_uri(worker))
        except EdgeUnavailable as exc:
            # The far ends keep a dead call until they hang up; nothing to retry against.
            log.error("worker_calls_not_ended_at_edge", worker=worker.id, error=str(exc))
        else:
            if self._metrics is not None:
                self._metrics.dead_worker_calls_ended.inc(ended)
            log.info("worker_calls_ended_at_edge", worker=worker.id, calls=ended)
        finally:
            self._slots_ending_calls.discard(worker.id)
            self._resize_wanted.set()

    def _end_all_legs(self, worker: _Worker) -> None:
        for pending in worker.pending.values():
            if not pending.done():
                pending.set_exception(WorkerCommandFailed(WORKER_LOST))
        worker.pending.clear()
        for leg in [*worker.legs.values(), *worker.closing.values()]:
            leg.on_ended(LegEnd(LOST_CODE, WORKER_LOST))
        worker.legs.clear()
        worker.parents.clear()
        worker.holders.clear()
        worker.closing.clear()
        worker.reserved = 0

    async def _stop_worker(self, worker: _Worker) -> None:
        worker.state = WorkerState.RETIRING
        if worker.channel is not None and worker.hello is not None and worker.hello.done():
            with contextlib.suppress(WorkerCommandFailed):
                await self._command(worker, lambda cid: Shutdown(cid=cid))
        if worker.channel is not None:
            worker.channel.close()  # the worker hangs up whatever is left and exits
        if worker.reader is not None:
            try:
                async with asyncio.timeout(EXIT_GRACE_S):
                    await asyncio.gather(worker.reader, return_exceptions=True)
            except TimeoutError:
                log.warning("worker_did_not_exit", worker=worker.id, pid=worker.pid)
                if worker.channel is not None:
                    worker.channel.kill()
                worker.reader.cancel()
        self._worker_gone(worker)

    # -- commands and events ------------------------------------------------------------

    async def _command(self, worker: _Worker, make: Callable[[int], Command]) -> None:
        channel = worker.channel
        if channel is None:
            raise WorkerCommandFailed(WORKER_LOST)
        cid = next(self._command_ids)
        result: asyncio.Future[CommandResult] = asyncio.get_running_loop().create_future()
        worker.pending[cid] = result
        try:
            await channel.send(make(cid))
            answer = await asyncio.wait_for(result, COMMAND_TIMEOUT_S)
        except (ConnectionError, RuntimeError) as exc:
            raise WorkerCommandFailed(WORKER_LOST) from exc
        except TimeoutError:
            raise WorkerCommandFailed(
                f"worker {worker.id} did not answer within {COMMAND_TIMEOUT_S:g} s"
            ) from None
        finally:
            worker.pending.pop(cid, None)
        if not answer.ok:
            raise WorkerCommandFailed(answer.error or "failed")

    async def _read_events(self, worker: _Worker, channel: WorkerChannel) -> None:
        try:
            async for event in channel.events():
                if isinstance(event, Hello):
                    if worker.hello is not None and not worker.hello.done():
                        worker.hello.set_result(event)
                    continue
                self._on_event(worker, event)
        except ConnectionError:
            pass  # the worker died; its legs end below as at EOF
        finally:
            channel.close()
            self._worker_gone(worker)

    def _on_event(self, worker: _Worker, event: Event) -> None:
        if isinstance(event, CommandResult):
            pending = worker.pending.get(event.cid)
            if pending is not None and not pending.done():
                pending.set_result(event)
            return
        if isinstance(event, IncomingCall):
            leg = self._new_leg(
                worker, event.leg, "inbound", event.from_uri, event.to_uri, event.request_uri,
                event.headers, event.sip_call_id, source=event.source,
            )  # fmt: skip
            if LINK_HEADER in event.headers:
                self._link_arrived(leg, event.headers[LINK_HEADER])
                return
            flow = asyncio.create_task(self._run_inbound(leg))
            self._flows.add(flow)
            flow.add_done_callback(self._flows.discard)
            return
        if isinstance(event, CallRefused):
            self._count_refused(event.reason)
            return
        if isinstance(event, Hello):
            return
        if isinstance(event, Attached):
            self._attached(worker, event)
            return
        found = worker.legs.get(event.leg)
        if found is None:
            if isinstance(event, RecordingEnded) and event.leg in worker.closing:
                worker.closing.pop(event.leg).on_recording_ended(event.seconds)
            return
        leg = found
        if isinstance(event, LegRinging):
            leg.on_ringing()
        elif isinstance(event, LegAnswered):
            leg.on_answered(event.sip_call_id, event.contact)
        elif isinstance(event, DtmfReceived):
            leg.on_digit(event.digit)
        elif isinstance(event, PlaybackEnded):
            leg.on_playback_ended(event.interrupted)
        elif isinstance(event, RecordingEnded):
            leg.on_recording_ended(event.seconds)
        elif isinstance(event, TransferRequested):
            request = TransferRequest(event.request, event.target, event.replaces)
            if not leg.on_transfer_requested(request):
                log.info("transfer_not_taken", leg=leg.id, target=event.target)
                self._own(_decline_transfer(leg, request))
        elif isinstance(event, LegEnded):
            worker.legs.pop(event.leg, None)
            worker.parents.pop(event.leg, None)
            worker.holders.discard(event.leg)
            self._legs_changed(worker)
            if event.reason == MEDIA_TIMEOUT_REASON:
                self._media_timeouts += 1
                if self._metrics is not None:
                    self._metrics.media_timeouts.inc()
                log.warning("leg_media_timeout", leg=event.leg, worker=worker.id,
                            caller=leg.from_uri, called=leg.to_uri)  # fmt: skip
            if leg.recording_open:
                worker.closing[event.leg] = leg
            leg.on_ended(LegEnd(event.code, event.reason))

    # -- links between two workers ----------------------------------------------------------

    async def link(self, near: Leg, far_worker_id: int) -> tuple[Leg, Leg]:
        """Join two workers' conference bridges with a call from one to the other: an
        outbound leg in `near`'s worker (dialled like any leg for `near`) and an inbound one
        in the other, both answered. Bridge each to a leg of its own worker, as to a party
        that lives there. WorkerCommandFailed if the other worker is gone, full or silent."""
        far = self._workers.get(far_worker_id)
        if far is None:
            raise WorkerCommandFailed(WORKER_LOST)
        token = uuid.uuid4().hex
        arrived: asyncio.Future[Leg] = asyncio.get_running_loop().create_future()
        self._links[token] = arrived
        try:
            out = await near.dial(
                _uri(far).replace("sip:", "sip:link@", 1), timeout=LINK_TIMEOUT_S,
                headers={LINK_HEADER: token},
            )  # fmt: skip
            try:
                async with asyncio.timeout(LINK_TIMEOUT_S):
                    await _first(arrived, out.ended)
                    if not arrived.done():
                        raise WorkerCommandFailed(f"worker {far_worker_id} refused the link")
                    inbound = arrived.result()
                    await inbound.answer()
                    await _first(out.answered, out.ended)
                    if not out.answered.done() or out.ended.done():
                        await inbound.drop()
                        raise WorkerCommandFailed("the link ended as it was made")
            except (TimeoutError, LegGone) as exc:
                await out.drop()
                raise WorkerCommandFailed(f"no link to worker {far_worker_id}") from exc
            except BaseException:
                await out.drop()
                raise
        finally:
            self._links.pop(token, None)
        log.info("workers_linked", near=out.id, far=inbound.id)
        return out, inbound

    def _link_arrived(self, leg: Leg, token: str) -> None:
        waiting = self._links.pop(token, None)
        if waiting is None or waiting.done():
            log.warning("unknown_link_refused", leg=leg.id)
            self._own(leg.reject(403, "Unknown link"))
            return
        waiting.set_result(leg)

    async def _run_inbound(self, leg: Leg) -> None:
        try:
            await self._on_inbound(leg)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The one place a broad catch is right: a flow's bug must not leave a caller
            # ringing forever, and the traceback goes to the log.
            log.exception("call_flow_failed", leg=leg.id)
            with contextlib.suppress(LegGone, WorkerCommandFailed):
                if leg.answered.done():
                    await leg.hangup()
                else:
                    await leg.reject(500, "Call flow failed")

    def _new_leg(
        self,
        worker: _Worker,
        leg_id: str,
        direction: str,
        from_uri: str,
        to_uri: str,
        request_uri: str,
        headers: dict[str, str],
        sip_call_id: str | None,
        *,
        source: str = "",
    ) -> Leg:
        async def send(make: Callable[[int], Command]) -> None:
            await self._command(worker, make)

        leg = Leg(
            leg_id=leg_id, worker_id=worker.id,
            direction="inbound" if direction == "inbound" else "outbound",
            from_uri=from_uri, to_uri=to_uri, request_uri=request_uri, headers=headers,
            sip_call_id=sip_call_id, send=send, dial=self._dial, source=source,
        )  # fmt: skip
        worker.legs[leg_id] = leg
        self._legs_changed(worker)
        return leg

    def _count_refused(self, reason: str) -> None:
        self._refused[reason] = self._refused.get(reason, 0) + 1
        if self._metrics is not None:
            self._metrics.calls_refused.labels(reason=reason).inc()

    async def originate(
        self,
        uri: str,
        *,
        timeout: float,  # noqa: ASYNC109  # the ring timeout, sent to the worker
        from_uri: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Leg:
        """A call placed for no caller (a callback's agent leg), in the ready worker with the
        most room; room for the one leg it will dial itself (the customer's) is kept as for
        an inbound caller (Dial.keep_room). WorkerCommandFailed when no worker has room."""
        roomy = [
            w for w in self._workers.values()
            if w.state is WorkerState.READY
            and admissible_legs(w.max_legs, w.reserved) >= LEGS_PER_INBOUND_CALL
        ]  # fmt: skip
        if not roomy:
            raise WorkerCommandFailed("no room for a call in any worker")
        worker = max(roomy, key=lambda w: admissible_legs(w.max_legs, w.reserved))
        return await self._dial_in(
            worker, None, uri, timeout, from_uri, headers or {}, None, keep_room=True
        )

    async def _dial(
        self,
        parent: Leg,
        uri: str,
        timeout: float,  # noqa: ASYNC109  # the ring timeout, sent to the worker
        from_uri: str | None,
        headers: dict[str, str],
        route: str | None,
    ) -> Leg:
        worker = self._workers.get(parent.worker_id)
        if worker is None:
            raise WorkerCommandFailed(WORKER_LOST)
        return await self._dial_in(worker, parent, uri, timeout, from_uri, headers, route)

    async def _dial_in(
        self,
        worker: _Worker,
        parent: Leg | None,
        uri: str,
        timeout: float,  # noqa: ASYNC109  # the ring timeout, sent to the worker
        from_uri: str | None,
        headers: dict[str, str],
        route: str | None,
        *,
        keep_room: bool = False,
    ) -> Leg:
        leg_id = f"w{worker.id}-o{self._leg_prefix}.{next(self._leg_ids)}"
        # Known before the Dial goes out: its first events may come before its result.
        parent_id = parent.id if parent is not None else None
        if keep_room:
            worker.holders.add(leg_id)
        else:
            holder = parent is not None and (
                parent.direction == "inbound" or parent.id in worker.holders
            )
            worker.parents[leg_id] = parent_id if holder else None
        # Its parent's edge: the flows reach a call's parties through the edge it came by.
        leg = self._new_leg(worker, leg_id, "outbound", from_uri or "", uri, uri, headers, None,
                            source=parent.source if parent is not None else "")  # fmt: skip
        dial = Dial(
            cid=0, leg=leg_id, parent=parent_id, uri=uri, from_uri=from_uri, timeout_s=timeout,
            headers=headers, route=route, keep_room=keep_room,
        )  # fmt: skip
        sending = asyncio.ensure_future(self._send_dial(worker, dial))
        try:
            await asyncio.shield(sending)
        except asyncio.CancelledError:
            # Whoever dialled stopped waiting, but the Dial may be out: the leg must not ring
            # on with nobody to take it.
            self._own(_drop_once_sent(sending, leg))
            raise
        return leg

    async def _send_dial(self, worker: _Worker, dial: Dial) -> None:
        try:
            await self._command(worker, lambda cid: dial.model_copy(update={"cid": cid}))
        except WorkerCommandFailed:
            worker.legs.pop(dial.leg, None)
            worker.parents.pop(dial.leg, None)
            worker.holders.discard(dial.leg)
            self._legs_changed(worker)
            raise


def _uri(worker: _Worker) -> str:
    """The worker as the edge's dispatcher lists it."""
    return worker.host.sip_uri(worker.sip_port)


async def _drop_once_sent(sending: asyncio.Future[None], leg: Leg) -> None:
    with contextlib.suppress(WorkerCommandFailed):
        await sending
        await leg.drop()


async def _decline_transfer(leg: Leg, request: TransferRequest) -> None:
    """A transfer asked for while the call is in no state for one (ringing, in a menu):
    the phone keeps its call, as after any refusal."""
    with contextlib.suppress(LegGone, WorkerCommandFailed):
        await leg.report_transfer(request, 603, "Decline")


async def _first(*futures: asyncio.Future[Any]) -> None:
    await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
