"""The media worker pool: spawns and supervises worker processes and routes their events.

Each worker is a `python -m pbx.worker` child: commands go to its stdin, events come back on
a pipe. A worker that dies is restarted on the same ports; the legs it held end with
"worker lost" and nothing else notices.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog

from core.child_process import ChildProcess
from core.settings import WorkerSettings
from pbx.legs import WORKER_LOST, Leg, LegEnd, LegGone, WorkerCommandFailed
from pbx.protocol import (
    Command,
    CommandResult,
    Dial,
    DtmfReceived,
    Event,
    Hangup,
    Hello,
    IncomingCall,
    LegAnswered,
    LegEnded,
    LegRinging,
    PlaybackEnded,
    ProtocolError,
    RecordingEnded,
    Shutdown,
    decode_event,
    encode,
)

log = structlog.get_logger(__name__)

HELLO_TIMEOUT_S = 20.0
COMMAND_TIMEOUT_S = 10.0
RESTART_DELAYS_S = (0.2, 1.0, 2.0, 5.0, 10.0)
LOST_CODE = 500

InboundHandler = Callable[[Leg], Awaitable[None]]


@dataclass(frozen=True)
class WorkerStatus:
    id: int
    pid: int | None
    sip_port: int
    max_legs: int
    legs_in_use: int
    alive: bool
    restarts: int


@dataclass
class _Worker:
    id: int
    sip_port: int
    rtp_port: int
    process: ChildProcess | None = None
    max_legs: int = 0
    alive: bool = False
    restarts: int = 0
    legs: dict[str, Leg] = field(default_factory=dict)
    pending: dict[int, asyncio.Future[CommandResult]] = field(default_factory=dict)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class WorkerPool:
    def __init__(
        self,
        settings: WorkerSettings,
        *,
        trusted: list[str],
        on_inbound: InboundHandler,
        trunk_username: str = "",
        trunk_password: str = "",
        python: str = sys.executable,
    ) -> None:
        self._settings = settings
        self._trusted = trusted
        self._on_inbound = on_inbound
        self._trunk_username = trunk_username
        self._trunk_password = trunk_password
        self._python = python
        self._workers = [
            _Worker(
                id=i,
                sip_port=settings.first_sip_port + i,
                rtp_port=settings.first_rtp_port + i * settings.rtp_ports_per_worker,
            )
            for i in range(settings.count)
        ]
        self._command_ids = itertools.count(1)
        self._leg_ids = itertools.count(1)
        self._flows: set[asyncio.Task[None]] = set()
        self._stopping = False

    @property
    def workers(self) -> list[WorkerStatus]:
        return [
            WorkerStatus(
                id=w.id,
                pid=w.process.pid if w.process else None,
                sip_port=w.sip_port,
                max_legs=w.max_legs,
                legs_in_use=len(w.legs),
                alive=w.alive,
                restarts=w.restarts,
            )
            for w in self._workers
        ]

    def dispatcher_targets(self) -> list[str]:
        return [f"sip:{self._settings.host}:{w.sip_port}" for w in self._workers]

    async def start(self) -> None:
        """Start every worker and wait until each has said hello."""
        await asyncio.gather(*(self._spawn(w) for w in self._workers))
        legs = sum(w.max_legs for w in self._workers)
        log.info("worker_pool_started", workers=len(self._workers), legs=legs)

    async def stop(self) -> None:
        self._stopping = True
        for flow in list(self._flows):
            flow.cancel()
        await asyncio.gather(*(self._stop_worker(w) for w in self._workers))

    async def kill_worker_for_test(self, worker_id: int) -> None:
        """SIGKILL one worker (supervision tests); the pool restarts it."""
        process = self._workers[worker_id].process
        if process is not None and process.pid is not None:
            os.kill(process.pid, 9)

    # -- processes ----------------------------------------------------------------------

    async def _spawn(self, worker: _Worker) -> None:
        read_fd, write_fd = os.pipe()
        env = {**os.environ, "PBX_TRUNK_PASSWORD": self._trunk_password}
        argv = [
            self._python, "-m", "pbx.worker", "--worker-id", str(worker.id),
            "--host", self._settings.host, "--sip-port", str(worker.sip_port),
            "--rtp-port", str(worker.rtp_port),
            "--rtp-ports", str(self._settings.rtp_ports_per_worker),
            "--events-fd", str(write_fd), "--trunk-username", self._trunk_username,
            *itertools.chain.from_iterable(("--trusted", t) for t in self._trusted),
            "--pjsua-log-level", os.environ.get("PBX_WORKER_PJSUA_LOG_LEVEL", "1"),
        ]  # fmt: skip
        process = ChildProcess(
            f"worker-{worker.id}", argv, env=env, stdin_pipe=True, pass_fds=[write_fd]
        )
        hello: asyncio.Future[Hello] = asyncio.get_running_loop().create_future()
        try:
            await process.start()
        finally:
            os.close(write_fd)
        worker.process = process
        reader = asyncio.StreamReader(limit=1024 * 1024)
        transport, _ = await asyncio.get_running_loop().connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb", buffering=0)
        )
        worker.tasks = [
            asyncio.create_task(self._read_events(worker, reader, transport, hello)),
            asyncio.create_task(self._supervise(worker, process)),
        ]
        greeting = await asyncio.wait_for(hello, HELLO_TIMEOUT_S)
        worker.max_legs = greeting.max_legs
        worker.alive = True
        log.info("worker_ready", worker=worker.id, pid=greeting.pid, max_legs=greeting.max_legs)

    async def _supervise(self, worker: _Worker, process: ChildProcess) -> None:
        code = await process.wait()
        worker.alive = False
        if self._stopping:
            return
        log.error("worker_lost", worker=worker.id, returncode=code, legs=len(worker.legs))
        self._end_all_legs(worker)
        for attempt in itertools.count():
            delay = RESTART_DELAYS_S[min(attempt, len(RESTART_DELAYS_S) - 1)]
            await asyncio.sleep(delay)
            if self._stopping:
                return
            worker.restarts += 1
            try:
                await self._spawn(worker)
            except (OSError, TimeoutError) as exc:
                log.error("worker_restart_failed", worker=worker.id, error=str(exc))
                continue
            log.info("worker_restarted", worker=worker.id, restarts=worker.restarts)
            return

    def _end_all_legs(self, worker: _Worker) -> None:
        for pending in worker.pending.values():
            if not pending.done():
                pending.set_exception(WorkerCommandFailed(WORKER_LOST))
        worker.pending.clear()
        for leg in list(worker.legs.values()):
            leg.on_ended(LegEnd(LOST_CODE, WORKER_LOST))
        worker.legs.clear()

    async def _stop_worker(self, worker: _Worker) -> None:
        process = worker.process
        if process is None:
            return
        if worker.alive:
            with contextlib.suppress(WorkerCommandFailed, LegGone, TimeoutError, OSError):
                await self._command(worker, lambda cid: Shutdown(cid=cid))
        with contextlib.suppress(OSError, RuntimeError):
            process.stdin.close()
        await process.stop(timeout=3.0)
        for task in worker.tasks:
            task.cancel()
        self._end_all_legs(worker)

    # -- commands and events ------------------------------------------------------------

    async def _command(self, worker: _Worker, make: Callable[[int], Command]) -> None:
        if not worker.alive or worker.process is None:
            raise WorkerCommandFailed(WORKER_LOST)
        cid = next(self._command_ids)
        result: asyncio.Future[CommandResult] = asyncio.get_running_loop().create_future()
        worker.pending[cid] = result
        try:
            worker.process.stdin.write(encode(make(cid)))
            await worker.process.stdin.drain()
            answer = await asyncio.wait_for(result, COMMAND_TIMEOUT_S)
        except (ConnectionError, RuntimeError) as exc:
            raise WorkerCommandFailed(WORKER_LOST) from exc
        finally:
            worker.pending.pop(cid, None)
        if not answer.ok:
            raise WorkerCommandFailed(answer.error or "failed")

    async def _read_events(
        self,
        worker: _Worker,
        reader: asyncio.StreamReader,
        transport: asyncio.BaseTransport,
        hello: asyncio.Future[Hello],
    ) -> None:
        try:
            async for line in reader:
                try:
                    event = decode_event(line)
                except ProtocolError as exc:
                    log.error("bad_worker_event", worker=worker.id, error=str(exc))
                    continue
                if isinstance(event, Hello):
                    if not hello.done():
                        hello.set_result(event)
                    continue
                self._on_event(worker, event)
        finally:
            transport.close()

    def _on_event(self, worker: _Worker, event: Event) -> None:
        if isinstance(event, CommandResult):
            pending = worker.pending.get(event.cid)
            if pending is not None and not pending.done():
                pending.set_result(event)
            return
        if isinstance(event, IncomingCall):
            leg = self._new_leg(
                worker, event.leg, "inbound", event.from_uri, event.to_uri, event.request_uri,
                event.headers, event.sip_call_id,
            )  # fmt: skip
            flow = asyncio.create_task(self._run_inbound(leg))
            self._flows.add(flow)
            flow.add_done_callback(self._flows.discard)
            return
        if isinstance(event, Hello):
            return
        found = worker.legs.get(event.leg)
        if found is None:
            return
        leg = found
        if isinstance(event, LegRinging):
            leg.on_ringing()
        elif isinstance(event, LegAnswered):
            leg.on_answered(event.sip_call_id)
        elif isinstance(event, DtmfReceived):
            leg.on_digit(event.digit)
        elif isinstance(event, PlaybackEnded):
            leg.on_playback_ended(event.interrupted)
        elif isinstance(event, RecordingEnded):
            leg.on_recording_ended(event.seconds)
        elif isinstance(event, LegEnded):
            worker.legs.pop(event.leg, None)
            leg.on_ended(LegEnd(event.code, event.reason))

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
    ) -> Leg:
        async def send(make: Callable[[int], Command]) -> None:
            await self._command(worker, make)

        leg = Leg(
            leg_id=leg_id, worker_id=worker.id,
            direction="inbound" if direction == "inbound" else "outbound",
            from_uri=from_uri, to_uri=to_uri, request_uri=request_uri, headers=headers,
            sip_call_id=sip_call_id, send=send, dial=self._dial,
        )  # fmt: skip
        worker.legs[leg_id] = leg
        return leg

    async def _dial(
        self,
        parent: Leg,
        uri: str,
        timeout: float,  # noqa: ASYNC109  # the ring timeout, enforced by a timer below
        from_uri: str | None,
        headers: dict[str, str],
    ) -> Leg:
        worker = self._workers[parent.worker_id]
        leg_id = f"w{worker.id}-o{next(self._leg_ids)}"
        leg = self._new_leg(worker, leg_id, "outbound", from_uri or "", uri, uri, headers, None)
        try:
            await self._command(
                worker,
                lambda cid: Dial(
                    cid=cid,
                    leg=leg_id,
                    parent=parent.id,
                    uri=uri,
                    from_uri=from_uri,
                    headers=headers,
                ),
            )
        except WorkerCommandFailed:
            worker.legs.pop(leg_id, None)
            raise
        # The controller owns timers: an unanswered leg is cancelled after the ring timeout.
        timer = asyncio.get_running_loop().call_later(
            timeout, lambda: asyncio.ensure_future(self._cancel_unanswered(worker, leg))
        )
        leg.answered.add_done_callback(lambda _: timer.cancel())
        leg.ended.add_done_callback(lambda _: timer.cancel())
        return leg

    async def _cancel_unanswered(self, worker: _Worker, leg: Leg) -> None:
        if leg.answered.done() or leg.ended.done():
            return
        log.info("ring_timeout", leg=leg.id)
        with contextlib.suppress(LegGone, WorkerCommandFailed):
            await self._command(worker, lambda cid: Hangup(cid=cid, leg=leg.id))
