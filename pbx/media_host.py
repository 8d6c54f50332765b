"""`pbx media`: a media host. It runs this machine's workers for the active controller, which
reaches it over one authenticated TCP link (pbx.media_wire) and drives them as its own.

The host decides nothing: the controller asks for each worker (Launch), their protocol lines
are relayed both ways unread, and a worker's end is reported (Gone). One controller at a
time: a new one that proves itself (the active controller after a takeover) replaces the
link. When a link is lost or replaced its workers are detached (protocol.Detach): calls
bridged there and answered callers go on without a controller, the rest are hung up, and
each worker exits once empty. The next controller to link (the new active one after a
takeover) takes the detached workers over (Welcome.adopted, then protocol.Attach), with the
same fork server, if it sees the cluster as the last one did. Workers it does not take keep
their SIP ports busy until they exit (Welcome.busy_ports, then SlotFree).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import structlog

from core.settings import Settings
from pbx.capacity import max_workers
from pbx.channel import WorkerSpec, WorkerStartFailed
from pbx.forked_workers import ForkedWorkers, SocketChannel
from pbx.media_metrics import MediaHostMetrics
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
    Refused,
    SlotFree,
    Welcome,
    control_line,
    new_nonce,
    proof_holds,
    prove,
    split_line,
    worker_line,
)
from pbx.protocol import Detach, encode

log = structlog.get_logger(__name__)

REFUSAL_SUMMARY_S = 10.0
# Connections still proving themselves at once (each may hold a line buffer for up to
# PROOF_TIMEOUT_S): beyond this, a new one is cut at once. Controllers link one at a time.
MAX_HANDSHAKES = 16


class MediaHost:
    """The link's listener, the one session it serves, and the detached ones draining."""

    def __init__(self, settings: Settings, metrics: MediaHostMetrics | None = None) -> None:
        self._settings = settings
        self.metrics = metrics or MediaHostMetrics()
        self._refusals = RefusalLog()
        self._server: asyncio.Server | None = None
        self._session: _Session | None = None
        self._draining: set[_Session] = set()
        # Each connection's writer and handler: stop cuts the one and waits for the other.
        self._links: dict[asyncio.StreamWriter, asyncio.Task[None]] = {}
        self._handshakes = 0
        self._stopping = False
        self.metrics.workers.labels(state="linked").set_function(
            lambda: len(self._session.channels) if self._session is not None else 0
        )
        self.metrics.workers.labels(state="detached").set_function(
            lambda: sum(len(session.channels) for session in self._draining)
        )

    @property
    def settings(self) -> Settings:
        return self._settings

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
        # Cut, not cancelled: each link's handler sees its connection end and ends its
        # session (every worker hangs up); wait for them all.
        handlers = list(self._links.values())
        for writer in list(self._links):
            writer.transport.abort()
        await asyncio.gather(*handlers, return_exceptions=True)
        await asyncio.gather(*(session.end() for session in list(self._draining)))
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._links[writer] = task
        try:
            await self._serve_link(reader, writer)
        finally:
            del self._links[writer]

    async def _serve_link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        if self._handshakes >= MAX_HANDSHAKES:
            self._refusals.refused(str(peer), f"over {MAX_HANDSHAKES} handshakes at once")
            self.metrics.refused.labels(reason="busy").inc()
            writer.transport.abort()
            return
        self._handshakes += 1
        try:
            proof, welcome, adoptable = await self._proof(reader, writer)
        except (
            LinkError, TimeoutError, ConnectionError, asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
        ) as exc:  # fmt: skip
            reason = str(exc) or type(exc).__name__
            self._refusals.refused(str(peer), reason)
            self.metrics.refused.labels(reason=_refusal_kind(exc)).inc()
            if isinstance(exc, LinkError) and not writer.is_closing():
                writer.write(control_line(Refused(reason=reason)))
                with contextlib.suppress(ConnectionError, TimeoutError):
                    async with asyncio.timeout(PROOF_TIMEOUT_S):
                        await writer.drain()
            writer.transport.abort()
            return
        finally:
            self._handshakes -= 1
        if self._stopping:
            writer.transport.abort()
            return
        adopted = [worker_id for worker_id, _ in welcome.adopted]
        if adoptable is not None and adoptable in self._draining and not adoptable.draining:
            self._draining.discard(adoptable)
            session = adoptable
            session.reattach(proof, reader, writer)
            log.info("media_workers_adopted", node=proof.node, workers=len(session.channels))
        else:
            session = _Session(self._settings, proof, reader, writer, self._slot_free,
                               self.metrics)  # fmt: skip
        previous, self._session = self._session, session
        if previous is not None:
            log.info("media_link_replaced", old=previous.node, new=proof.node)
            self._detach(previous)
        # A worker that exited during the handshake had nobody to tell: tell the new link.
        for port in sorted(set(welcome.busy_ports) - set(self._busy_ports())):
            session.send_soon(SlotFree(sip_port=port))
        for worker_id in adopted:
            if worker_id not in session.channels:
                session.send_soon(Gone(worker_id=worker_id))
        log.info("media_link_up", node=proof.node, peer=str(peer))
        self.metrics.links.inc()
        self.metrics.linked.set(1)
        try:
            await session.run()
        finally:
            if self._session is session:
                self._session = None
                self.metrics.linked.set(0)
            log.info("media_link_down", node=proof.node, reason=session.end_reason)
            if self._stopping:
                await session.end()
            else:
                self._detach(session)

    def _detach(self, session: _Session) -> None:
        """Kept until drained, also with no worker left (its fork server is stopping): stop
        waits for it."""
        self._draining.add(session)
        session.on_drained = self._draining.discard
        session.detach()

    def _slot_free(self, sip_port: int) -> None:
        """A detached worker exited: the controller linked now may start one there."""
        if self._session is not None:
            self._session.send_soon(SlotFree(sip_port=sip_port))

    def _busy_ports(self, adopted: _Session | None = None) -> list[int]:
        """Ports the next controller may not launch on: those of detached workers it does
        not adopt, and those of the session it replaces (detached as soon as it is proved)."""
        sessions = [*self._draining, *([self._session] if self._session else [])]
        return sorted(
            port for session in sessions if session is not adopted
            for port in session.ports.values()
        )  # fmt: skip

    def _adoptable(self, proof: ControllerProof) -> _Session | None:
        """The newest detached session with workers left that `proof`'s controller may
        take over (_Session.adoptable_by)."""
        candidates = [
            session for session in self._draining
            if session.channels and not session.draining and session.adoptable_by(proof)
        ]  # fmt: skip
        return max(candidates, key=lambda session: session.proof.term, default=None)

    async def _proof(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[ControllerProof, Welcome, _Session | None]:
        """The controller's proof, the welcome it was sent, and the session it adopts."""
        secret = self._settings.cluster.secret
        nonce = new_nonce()
        writer.write(control_line(Challenge(nonce=nonce)))
        async with asyncio.timeout(PROOF_TIMEOUT_S):
            answer = split_line(await reader.readuntil(b"\n"))
        if not isinstance(answer, ControllerProof):
            raise LinkError("the first line is not a controller's proof")
        if not proof_holds(secret, nonce, "controller", answer):
            raise LinkError("wrong proof: not the cluster's secret")
        # Fenced against the live link only: with none (its controller is gone), any proved
        # controller is taken, so a term that went back (Redis replaced) locks nobody out.
        live = self._session
        if live is not None and answer.term < live.proof.term:
            raise PastController(f"node {answer.node} is a past controller: term {answer.term}, "
                            f"linked now: node {live.node}, term {live.proof.term}")  # fmt: skip
        workers = self._settings.workers
        adoptable = self._adoptable(answer)
        welcome = Welcome(
            proof="", name=self.name, address=workers.host,
            first_sip_port=workers.first_sip_port, first_rtp_port=workers.first_rtp_port,
            rtp_ports_per_worker=workers.rtp_ports_per_worker, max_workers=max_workers(workers),
            busy_ports=self._busy_ports(adoptable),
            adopted=sorted(adoptable.ports.items()) if adoptable is not None else [],
        )  # fmt: skip
        proof = prove(secret, answer.nonce, "media", welcome)
        writer.write(control_line(welcome.model_copy(update={"proof": proof})))
        await writer.drain()
        return answer, welcome, adoptable


class PastController(LinkError):
    """A proved controller older than the one linked now (a node that stepped down)."""


def _refusal_kind(exc: Exception) -> str:
    if isinstance(exc, PastController):
        return "past_controller"
    if isinstance(exc, LinkError | asyncio.LimitOverrunError):  # not the link's protocol
        return "proof"
    return "handshake"


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
    metrics: MediaHostMetrics
    channels: dict[int, SocketChannel] = field(default_factory=dict)
    # Each worker's SIP port, by worker id, while it runs.
    ports: dict[int, int] = field(default_factory=dict)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    end_reason: str = "ended"
    on_drained: Callable[[_Session], None] = lambda session: None
    _launcher: ForkedWorkers | None = None
    _pinger: asyncio.Task[None] | None = None
    _detached: bool = False
    _draining_begun: bool = False
    _ended: bool = False

    @property
    def node(self) -> str:
        return self.proof.node

    @property
    def draining(self) -> bool:
        """Its last worker has exited: its fork server is going."""
        return self._draining_begun

    def adoptable_by(self, proof: ControllerProof) -> bool:
        """Whether a controller of `proof` may take these workers over: a newer one than
        the last that held them (a past controller relinking cannot take them back), that
        could have launched them (the same edges, each node naming its own first, and the
        same hosts in the same order: worker ids follow it)."""
        mine = self.proof
        return proof.term > mine.term and (
            set(mine.edges), mine.sibling_hosts, mine.sibling_ports,
        ) == (set(proof.edges), proof.sibling_hosts, proof.sibling_ports)  # fmt: skip

    def reattach(
        self, proof: ControllerProof, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """A new controller's link takes this detached session over, workers and fork server;
        run serves it. Each worker hears Attach from the controller itself."""
        self.proof, self.reader, self.writer = proof, reader, writer
        self._detached = False
        self.end_reason = "ended"
        self.on_drained = lambda session: None

    async def run(self) -> None:
        """Serve the link until it closes or goes quiet."""
        settings = self.settings
        if self._launcher is None:  # not a session taken over (reattach)
            self._launcher = ForkedWorkers(
                settings.workers, trusted=self.proof.edges,
                trunk_username=settings.trunk.username, trunk_password=settings.trunk.password,
                sibling_hosts=[h for h in self.proof.sibling_hosts if h != settings.workers.host],
                sibling_ports=self.proof.sibling_ports,
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
                self._to_worker(*message)
            elif isinstance(message, Launch):
                self._own(self._launch(message))
            elif isinstance(message, Close) and message.worker_id in self.channels:
                self.channels[message.worker_id].close()
            elif isinstance(message, Kill) and message.worker_id in self.channels:
                self.channels[message.worker_id].kill()

    def detach(self) -> None:
        """The link is gone: its workers keep their bridged calls, without a controller,
        and exit once empty (their ports are free again then); then on_drained."""
        if not self._detached:
            self._detached = True
            self.writer.transport.abort()  # what was not sent has nobody to go to
            if self._pinger is not None:
                self._pinger.cancel()
            for channel in self.channels.values():
                self._own(_send_detach(channel))
            log.info("media_workers_detached", node=self.node, workers=len(self.channels))
        if not self.channels:
            self._drain()

    async def end(self) -> None:
        """Every worker hangs up and exits (their sockets close), then the fork server."""
        if self._ended:
            await asyncio.gather(*self.tasks, return_exceptions=True)  # a drain under way
            return
        self._ended = True
        self.writer.transport.abort()
        for channel in self.channels.values():
            channel.close()
        for task in [*self.tasks, *([self._pinger] if self._pinger else [])]:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self._launcher is not None:
            await self._launcher.stop()

    def send_soon(self, message: SlotFree | Gone) -> None:
        if not self.writer.is_closing():
            self.writer.write(control_line(message))

    def _own(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _to_worker(self, worker_id: int, payload: bytes) -> None:
        """Never waits for the worker: one that stopped reading must not stop the link for
        all the others. A worker that far behind is stuck, and killed."""
        channel = self.channels.get(worker_id)
        if channel is None:
            return  # it is gone, and the controller is told so (Gone)
        try:
            taken = channel.send_line_nowait(payload)
        except ConnectionError:
            return
        if not taken:
            log.error("media_worker_stuck", worker=worker_id)
            channel.kill()
            channel.close()  # nothing more for it; its end follows as for any dead worker

    async def _launch(self, launch: Launch) -> None:
        assert self._launcher is not None
        worker_id = launch.worker_id
        spec = WorkerSpec(worker_id, launch.sip_port, launch.rtp_port, launch.max_legs)
        try:
            channel = await self._launcher.launch(spec)
        except (WorkerStartFailed, OSError) as exc:
            log.error("media_worker_start_failed", worker=worker_id, error=str(exc))
            self.metrics.worker_start_failures.inc()
            with contextlib.suppress(ConnectionError):
                await self._send(control_line(Gone(worker_id=worker_id, error=str(exc))))
            return
        # A worker the pool gave up on (it did not exit in time) may still be here under the
        # same id: both are followed, each by its own task, and only the newest is the id's.
        self.channels[worker_id] = channel
        self.ports[worker_id] = launch.sip_port
        if self._detached or self._ended:
            channel.close()  # the link went while it started: it has no call, it just goes
        try:
            async for line in channel.lines():
                if not self._detached:  # a detached worker's events have nobody to go to
                    with contextlib.suppress(ConnectionError):
                        await self._send(worker_line(worker_id, line))
        except ConnectionError:
            pass  # the worker died: as at EOF
        finally:
            channel.close()
            # Its socket closes before it exits (it hangs up, lingers, then goes): its port
            # is only free, and it only gone, once the process is.
            await channel.until_exited()
            if self.channels.get(worker_id) is channel:
                del self.channels[worker_id]
                port = self.ports.pop(worker_id)
                if self._detached:
                    self.slot_free(port)
                    if not self.channels:
                        self._drain()
                else:
                    with contextlib.suppress(ConnectionError):
                        await self._send(control_line(Gone(worker_id=worker_id)))

    def _drain(self) -> None:
        """Once: the link went and its last worker exited (or it had none), whichever of the
        two comes last calls this, and both may."""
        if not self._draining_begun:
            self._draining_begun = True
            self._own(self._drained())

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


async def _send_detach(channel: SocketChannel) -> None:
    with contextlib.suppress(ConnectionError):
        await channel.send_line(encode(Detach(cid=0)))
