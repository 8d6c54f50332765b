"""`pbx media`: a media host. It runs this machine's workers for the active controller, which
reaches it over one authenticated TCP link (pbx.media_wire) and drives them as its own.

The host decides nothing: the controller asks for each worker (Launch), their protocol lines
are relayed both ways unread, and a worker's end is reported (Gone). One controller at a
time: a new one that proves itself (the active controller after a takeover) replaces the
link. When a link is lost or replaced its workers are detached (protocol.Detach): calls
bridged there go on without a controller until a party hangs up, the rest are hung up, and
each worker exits once empty. Until then its SIP port is busy: the next controller is told
(Welcome.busy_ports, then SlotFree).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import structlog

from core.settings import Settings
from pbx.capacity import max_workers
from pbx.channel import WorkerSpec, WorkerStartFailed
from pbx.forked_workers import ForkedWorkers, SocketChannel
from pbx.media_wire import (
    LINE_LIMIT,
    PING_INTERVAL_S,
    PROOF_TIMEOUT_S,
    SILENCE_LIMIT_S,
    Challenge,
    Close,
    ControllerProof,
    Gone,
    Kill,
    Launch,
    LinkError,
    Ping,
    SlotFree,
    Welcome,
    control_line,
    new_nonce,
    proof_holds,
    prove,
    split_line,
    worker_line,
)
from pbx.protocol import Detach, Hello, ProtocolError, decode_event, encode

log = structlog.get_logger(__name__)

REFUSAL_SUMMARY_S = 10.0
# A worker whose socket closed hangs up and exits within about a second (pbx.worker).
WORKER_EXIT_S = 5.0
EXIT_POLL_S = 0.05


class MediaHost:
    """The link's listener, the one session it serves, and the detached ones draining."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._refusals = RefusalLog()
        self._server: asyncio.Server | None = None
        self._session: _Session | None = None
        self._draining: set[_Session] = set()
        self._links: set[asyncio.Task[None]] = set()
        self._stopping = False

    @property
    def name(self) -> str:
        return self._settings.media.name or self._settings.workers.host

    async def start(self) -> None:
        workers = self._settings.workers
        self._server = await asyncio.start_server(
            self._serve, workers.host, self._settings.media.port, limit=LINE_LIMIT
        )
        log.info("media_host_listening", host=self.name, address=workers.host,
                 port=self._settings.media.port, max_workers=max_workers(workers))  # fmt: skip

    async def stop(self) -> None:
        """Every worker hangs up and exits, detached ones too."""
        self._stopping = True
        if self._server is not None:
            self._server.close()
        for task in list(self._links):
            task.cancel()
        await asyncio.gather(*self._links, return_exceptions=True)
        await asyncio.gather(*(session.end() for session in list(self._draining)))
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._links.add(task)
        try:
            await self._serve_link(reader, writer)
        finally:
            self._links.discard(task)

    async def _serve_link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        try:
            proof = await self._proof(reader, writer)
        except (LinkError, TimeoutError, ConnectionError, asyncio.IncompleteReadError) as exc:
            self._refusals.refused(str(peer), str(exc) or type(exc).__name__)
            writer.close()
            return
        session = _Session(self._settings, proof, reader, writer, self._slot_free)
        previous, self._session = self._session, session
        if previous is not None:
            log.info("media_link_replaced", old=previous.node, new=proof.node)
            self._detach(previous)
        log.info("media_link_up", node=proof.node, peer=str(peer))
        try:
            await session.run()
        finally:
            if self._session is session:
                self._session = None
            log.info("media_link_down", node=proof.node, reason=session.end_reason)
            if self._stopping:
                await session.end()
            else:
                self._detach(session)

    def _detach(self, session: _Session) -> None:
        if session.detach():
            self._draining.add(session)
            session.on_drained = self._draining.discard

    def _slot_free(self, sip_port: int) -> None:
        """A detached worker exited: the controller linked now may start one there."""
        if self._session is not None:
            self._session.send_soon(SlotFree(sip_port=sip_port))

    def _busy_ports(self) -> list[int]:
        return sorted(port for session in self._draining for port in session.ports.values())

    async def _proof(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> ControllerProof:
        secret = self._settings.cluster.secret
        nonce = new_nonce()
        writer.write(control_line(Challenge(nonce=nonce)))
        async with asyncio.timeout(PROOF_TIMEOUT_S):
            answer = split_line(await reader.readuntil(b"\n"))
        if not isinstance(answer, ControllerProof):
            raise LinkError("the first line is not a controller's proof")
        if not proof_holds(secret, nonce, "controller", answer.proof):
            raise LinkError("wrong proof: not the cluster's secret")
        workers = self._settings.workers
        writer.write(control_line(Welcome(
            proof=prove(secret, answer.nonce, "media"), name=self.name, address=workers.host,
            first_sip_port=workers.first_sip_port, first_rtp_port=workers.first_rtp_port,
            rtp_ports_per_worker=workers.rtp_ports_per_worker, max_workers=max_workers(workers),
            busy_ports=self._busy_ports(),
        )))  # fmt: skip
        await writer.drain()
        return answer


@dataclass
class RefusalLog:
    """Refused connections, summarised: a scan or a flood is a line every REFUSAL_SUMMARY_S,
    not a line per connection."""

    said_at: float = -REFUSAL_SUMMARY_S
    unsaid: int = 0

    def refused(self, peer: str, reason: str) -> None:
        now = time.monotonic()
        if now - self.said_at < REFUSAL_SUMMARY_S:
            self.unsaid += 1
            return
        log.warning("media_link_refused", peer=peer, reason=reason, more_since_last=self.unsaid)
        self.said_at, self.unsaid = now, 0


@dataclass(eq=False)
class _Session:
    """One controller's link and the workers it asked for."""

    settings: Settings
    proof: ControllerProof
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    slot_free: Callable[[int], None]
    channels: dict[int, SocketChannel] = field(default_factory=dict)
    # Each worker's SIP port, by worker id, while it runs.
    ports: dict[int, int] = field(default_factory=dict)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    end_reason: str = "ended"
    on_drained: Callable[[_Session], None] = lambda session: None
    _launcher: ForkedWorkers | None = None
    _pinger: asyncio.Task[None] | None = None
    _detached: bool = False
    _ended: bool = False

    @property
    def node(self) -> str:
        return self.proof.node

    async def run(self) -> None:
        """Serve the link until it closes or goes quiet."""
        settings = self.settings
        self._launcher = ForkedWorkers(
            settings.workers, trusted=[self.proof.edge],
            trunk_username=settings.trunk.username, trunk_password=settings.trunk.password,
            sibling_hosts=[h for h in self.proof.sibling_hosts if h != settings.workers.host],
        )  # fmt: skip
        await self._launcher.start(on_available=lambda: None)
        self._pinger = asyncio.create_task(self._ping())
        while not self._detached:
            try:
                async with asyncio.timeout(SILENCE_LIMIT_S):
                    line = await self.reader.readuntil(b"\n")
            except TimeoutError:
                self.end_reason = f"silent for {SILENCE_LIMIT_S:g} s"
                return
            except (asyncio.IncompleteReadError, ConnectionError):
                self.end_reason = "closed"
                return
            except asyncio.LimitOverrunError:
                self.end_reason = "a line too long"
                return
            try:
                message = split_line(line)
            except LinkError as exc:
                self.end_reason = str(exc)
                return
            if isinstance(message, tuple):
                await self._to_worker(*message)
            elif isinstance(message, Launch):
                self._own(self._launch(message))
            elif isinstance(message, Close) and message.worker_id in self.channels:
                self.channels[message.worker_id].close()
            elif isinstance(message, Kill) and message.worker_id in self.channels:
                self.channels[message.worker_id].kill()

    def detach(self) -> bool:
        """The link is gone: its workers keep their bridged calls, without a controller,
        and exit once empty (their ports are free again then). Whether any is left."""
        if not self._detached:
            self._detached = True
            self.writer.close()
            if self._pinger is not None:
                self._pinger.cancel()
            for channel in self.channels.values():
                self._own(_send_detach(channel))
            log.info("media_workers_detached", node=self.node, workers=len(self.channels))
        if not self.channels:
            self._own(self._drained())
            return False
        return True

    async def end(self) -> None:
        """Every worker hangs up and exits (their sockets close), then the fork server."""
        if self._ended:
            return
        self._ended = True
        self.writer.close()
        for channel in self.channels.values():
            channel.close()
        for task in [*self.tasks, *([self._pinger] if self._pinger else [])]:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self._launcher is not None:
            await self._launcher.stop()

    def send_soon(self, message: SlotFree) -> None:
        if not self.writer.is_closing():
            self.writer.write(control_line(message))

    def _own(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _to_worker(self, worker_id: int, payload: bytes) -> None:
        channel = self.channels.get(worker_id)
        if channel is None:
            return  # it is gone, and the controller is told so (Gone)
        with contextlib.suppress(ConnectionError):
            await channel.send_line(payload)

    async def _launch(self, launch: Launch) -> None:
        assert self._launcher is not None
        spec = WorkerSpec(launch.worker_id, launch.sip_port, launch.rtp_port, launch.max_legs)
        try:
            channel = await self._launcher.launch(spec)
        except (WorkerStartFailed, OSError) as exc:
            log.error("media_worker_start_failed", worker=launch.worker_id, error=str(exc))
            with contextlib.suppress(ConnectionError):
                await self._send(control_line(Gone(worker_id=launch.worker_id, error=str(exc))))
            return
        self.channels[launch.worker_id] = channel
        self.ports[launch.worker_id] = launch.sip_port
        pid: int | None = None
        try:
            async for line in channel.lines():
                if pid is None:
                    pid = _pid_in_hello(line)
                if not self._detached:  # a detached worker's events have nobody to go to
                    with contextlib.suppress(ConnectionError):
                        await self._send(worker_line(launch.worker_id, line))
        except ConnectionError:
            pass  # the worker died: as at EOF
        finally:
            channel.close()
            # Its socket closes before it exits (it hangs up, lingers, then goes): its port
            # is only free, and it only gone, once the process is.
            if pid is not None:
                await _until_exited(pid)
            del self.channels[launch.worker_id]
            port = self.ports.pop(launch.worker_id)
            if self._detached:
                self.slot_free(port)
                if not self.channels:
                    self._own(self._drained())
            else:
                with contextlib.suppress(ConnectionError):
                    await self._send(control_line(Gone(worker_id=launch.worker_id)))

    async def _drained(self) -> None:
        """The last detached worker exited: the fork server goes too."""
        if self._launcher is not None and not self._ended:
            self._ended = True
            await self._launcher.stop()
        log.info("media_workers_drained", node=self.node)
        self.on_drained(self)

    async def _ping(self) -> None:
        with contextlib.suppress(ConnectionError):
            while True:
                await self._send(control_line(Ping()))
                await asyncio.sleep(PING_INTERVAL_S)

    async def _send(self, line: bytes) -> None:
        if self.writer.is_closing():
            raise ConnectionError("the link is closed")
        self.writer.write(line)
        await self.writer.drain()


def _pid_in_hello(line: bytes) -> int | None:
    with contextlib.suppress(ProtocolError):
        event = decode_event(line)
        if isinstance(event, Hello):
            return event.pid
    return None


async def _until_exited(pid: int) -> None:
    """Wait for a worker process (the fork server's child, reaped there) to be gone: SIGKILL
    after WORKER_EXIT_S, and after as long again, give up (a zombie nobody reaps)."""
    for last_resort in (signal.SIGKILL, None):
        deadline = time.monotonic() + WORKER_EXIT_S
        while _alive(pid):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(EXIT_POLL_S)
        else:
            return
        log.warning(
            "media_worker_did_not_exit", pid=pid, action="kill" if last_resort else "give_up"
        )
        if last_resort is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, last_resort)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def _send_detach(channel: SocketChannel) -> None:
    with contextlib.suppress(ConnectionError):
        await channel.send_line(encode(Detach(cid=0)))
