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
from typing import Any

import structlog

from core.child_process import ChildProcess, ChildProcessFailed
from core.settings import WorkerSettings
from pbx.legs import WORKER_LOST, Leg, LegEnd, LegGone, WorkerCommandFailed
from pbx.protocol import (
    MEDIA_TIMEOUT_REASON,
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
    ProtocolError,
    RecordingEnded,
    Shutdown,
    decode_event,
    encode,
)

log = structlog.get_logger(__name__)

HELLO_TIMEOUT_S = 20.0
COMMAND_TIMEOUT_S = 10.0
# After Shutdown a worker hangs up and exits by itself; SIGTERM only after this.
EXIT_GRACE_S = 3.0
RESTART_DELAYS_S = (0.2, 1.0, 2.0, 5.0, 10.0)
LOST_CODE = 500


class WorkerStartFailed(Exception):
    """A worker exited or stayed silent before its Hello."""


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
    # Ended legs whose recording the worker is still closing (RecordingEnded follows).
    closing: dict[str, Leg] = field(default_factory=dict)
    pending: dict[int, asyncio.Future[CommandResult]] = field(default_factory=dict)
    reader: asyncio.Task[None] | None = None
    supervisor: asyncio.Task[None] | None = None


class WorkerPool:
    """N media workers, each one process with its own SIP port and RTP range, supervised."""

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
        self._media_timeouts = 0

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

    # Counts for the metrics endpoint.
    @property
    def workers_alive(self) -> int:
        return sum(1 for w in self._workers if w.alive)

    @property
    def legs_capacity(self) -> int:
        """Legs the live workers may hold (a bridged call takes two of one worker)."""
        return sum(w.max_legs for w in self._workers if w.alive)

    @property
    def legs_in_use(self) -> int:
        return sum(len(w.legs) for w in self._workers)

    def live_legs(self) -> list[Leg]:
        """Every leg the workers hold now (to name a leak, not to drive calls)."""
        return [leg for w in self._workers for leg in w.legs.values()]

    @property
    def restarts(self) -> int:
        return sum(w.restarts for w in self._workers)

    @property
    def media_timeouts(self) -> int:
        """Legs the workers hung up because their RTP stopped."""
        return self._media_timeouts

    def dispatcher_targets(self) -> list[str]:
        return [f"sip:{self._settings.host}:{w.sip_port}" for w in self._workers]

    async def start(self) -> None:
        """Start every worker and wait until each has said hello (WorkerStartFailed if not)."""
        await asyncio.gather(*(self._spawn(w) for w in self._workers))
        for worker in self._workers:
            worker.supervisor = asyncio.create_task(self._supervise(worker))
        legs = sum(w.max_legs for w in self._workers)
        log.info("worker_pool_started", workers=len(self._workers), legs=legs)

    async def stop(self) -> None:
        """Shut every worker down (its calls are hung up); safe to repeat."""
        for flow in list(self._flows):
            flow.cancel()
        supervisors = [w.supervisor for w in self._workers if w.supervisor is not None]
        for task in supervisors:
            task.cancel()
        # A supervisor may be half-way through a restart: it cleans that process up first.
        await asyncio.gather(*supervisors, return_exceptions=True)
        await asyncio.gather(*(self._stop_worker(w) for w in self._workers))

    async def kill_worker_for_test(self, worker_id: int) -> None:
        """SIGKILL one worker (supervision tests); the pool restarts it."""
        process = self._workers[worker_id].process
        if process is not None and process.pid is not None:
            os.kill(process.pid, 9)

    # -- processes ----------------------------------------------------------------------

    async def _spawn(self, worker: _Worker) -> None:
        """Start the worker's process and wait for its Hello; on failure nothing is left."""
        read_fd, write_fd = os.pipe()
        env = {**os.environ, "PBX_TRUNK_PASSWORD": self._trunk_password}
        argv = [
            self._python, "-m", "pbx.worker", "--worker-id", str(worker.id),
            "--host", self._settings.host, "--sip-port", str(worker.sip_port),
            "--rtp-port", str(worker.rtp_port),
            "--rtp-ports", str(self._settings.rtp_ports_per_worker),
            "--media-timeout", str(self._settings.media_timeout),
            "--events-fd", str(write_fd), "--trunk-username", self._trunk_username,
            *itertools.chain.from_iterable(("--trusted", t) for t in self._trusted),
            "--pjsua-log-level", os.environ.get("PBX_WORKER_PJSUA_LOG_LEVEL", "1"),
        ]  # fmt: skip
        process = ChildProcess(
            f"worker-{worker.id}", argv, env=env, stdin_pipe=True, pass_fds=[write_fd]
        )
        loop = asyncio.get_running_loop()
        hello: asyncio.Future[Hello] = loop.create_future()
        try:
            await process.start()
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        reader = asyncio.StreamReader(limit=1024 * 1024)
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb", buffering=0)
        )
        worker.process = process
        worker.reader = asyncio.create_task(self._read_events(worker, reader, transport, hello))
        exited = asyncio.ensure_future(process.wait())
        try:
            watched: set[asyncio.Future[Any]] = {hello, exited}
            done, _ = await asyncio.wait(
                watched, timeout=HELLO_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
            )
            if hello not in done:
                problem = "exited" if exited in done else f"said nothing in {HELLO_TIMEOUT_S:g} s"
                output = "\n".join(process.last_output[-10:])
                raise WorkerStartFailed(f"worker {worker.id} {problem} before its hello:\n{output}")
        except BaseException:
            exited.cancel()
            await process.stop(timeout=1.0)
            worker.reader.cancel()
            raise
        exited.cancel()
        greeting = hello.result()
        worker.max_legs = greeting.max_legs
        worker.alive = True
        log.info("worker_ready", worker=worker.id, pid=greeting.pid, max_legs=greeting.max_legs)

    async def _supervise(self, worker: _Worker) -> None:
        """Restart the worker whenever its process ends (until stop), with backoff."""
        while True:
            assert worker.process is not None
            code = await worker.process.wait()
            worker.alive = False
            log.error("worker_lost", worker=worker.id, returncode=code, legs=len(worker.legs))
            self._end_all_legs(worker)
            for attempt in itertools.count():
                await asyncio.sleep(RESTART_DELAYS_S[min(attempt, len(RESTART_DELAYS_S) - 1)])
                worker.restarts += 1
                try:
                    await self._spawn(worker)
                except (OSError, ChildProcessFailed, WorkerStartFailed) as exc:
                    log.error("worker_restart_failed", worker=worker.id, error=str(exc))
                    continue
                log.info("worker_restarted", worker=worker.id, restarts=worker.restarts)
                break

    def _end_all_legs(self, worker: _Worker) -> None:
        for pending in worker.pending.values():
            if not pending.done():
                pending.set_exception(WorkerCommandFailed(WORKER_LOST))
        worker.pending.clear()
        for leg in [*worker.legs.values(), *worker.closing.values()]:
            leg.on_ended(LegEnd(LOST_CODE, WORKER_LOST))
        worker.legs.clear()
        worker.closing.clear()

    async def _stop_worker(self, worker: _Worker) -> None:
        process = worker.process
        if process is None:
            return
        if worker.alive:
            with contextlib.suppress(WorkerCommandFailed):
                await self._command(worker, lambda cid: Shutdown(cid=cid))
        worker.alive = False
        with contextlib.suppress(OSError, RuntimeError):
            process.stdin.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(EXIT_GRACE_S):
                await process.wait()
        await process.stop(timeout=3.0)
        if worker.reader is not None:
            await asyncio.gather(worker.reader, return_exceptions=True)
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
        except TimeoutError:
            raise WorkerCommandFailed(
                f"worker {worker.id} did not answer within {COMMAND_TIMEOUT_S:g} s"
            ) from None
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
        elif isinstance(event, LegEnded):
            worker.legs.pop(event.leg, None)
            if event.reason == MEDIA_TIMEOUT_REASON:
                self._media_timeouts += 1
                log.warning("leg_media_timeout", leg=event.leg, worker=worker.id,
                            caller=leg.from_uri, called=leg.to_uri)  # fmt: skip
            if leg.recording_open:
                worker.closing[event.leg] = leg
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
        timeout: float,  # noqa: ASYNC109  # the ring timeout, sent to the worker
        from_uri: str | None,
        headers: dict[str, str],
    ) -> Leg:
        worker = self._workers[parent.worker_id]
        leg_id = f"w{worker.id}-o{next(self._leg_ids)}"
        # Known before the Dial goes out: its first events may come before its result.
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
                    timeout_s=timeout,
                    headers=headers,
                ),
            )
        except WorkerCommandFailed:
            worker.legs.pop(leg_id, None)
            raise
        return leg
