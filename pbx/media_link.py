"""The controller's links to its media hosts (`[cluster] media_hosts`, `pbx media` on each).

Each host is linked while this controller runs, and again after a loss. While a link is up
the host is one more place for the pool's workers (WorkerPool.add_host): the link launches
them and carries their protocol lines (pbx.media_wire). When it closes or goes quiet the
host leaves the pool and its workers' channels end, so their legs end as a dead worker's do
and the edge ends their calls; the other hosts' calls go on. Workers a lost controller left
on a host with calls come with its welcome, and the pool takes them over (Welcome.adopted).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Protocol

import structlog

from core.metrics import Metrics
from core.settings import Settings
from pbx.capacity import max_workers
from pbx.channel import WorkerHost, WorkerLauncher, WorkerSpec, WorkerStartFailed
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
from pbx.pool import AdoptedWorker
from pbx.protocol import Command, Event, ProtocolError, decode_event, encode

log = structlog.get_logger(__name__)

RELINK_DELAYS_S = (0.2, 0.5, 1.0, 2.0, 5.0)


class HostRegistry(Protocol):
    """Where linked hosts go (pbx.pool.WorkerPool)."""

    def add_host(
        self, place: WorkerHost, launcher: WorkerLauncher, adopted: Sequence[AdoptedWorker] = ()
    ) -> None: ...

    def remove_host(self, name: str) -> None: ...


class RemoteChannel:
    """One worker on a media host (pbx.channel.WorkerChannel)."""

    def __init__(self, link: HostLink, worker_id: int) -> None:
        self._link = link
        self._worker_id = worker_id
        self._lines: asyncio.Queue[bytes | None] = asyncio.Queue()

    async def send(self, command: Command) -> None:
        await self._link.send(worker_line(self._worker_id, encode(command)))

    async def events(self) -> AsyncIterator[Event]:
        while (line := await self._lines.get()) is not None:
            try:
                yield decode_event(line)
            except ProtocolError as exc:
                log.error("bad_worker_event", worker=self._worker_id, error=str(exc))

    def close(self) -> None:
        self._link.send_soon(Close(worker_id=self._worker_id))

    def kill(self) -> None:
        self._link.send_soon(Kill(worker_id=self._worker_id))

    def deliver(self, line: bytes | None) -> None:
        """The worker's next line; None: it is gone."""
        self._lines.put_nowait(line)


class HostLink:
    """One linked media host, as the pool's launcher there (pbx.channel.WorkerLauncher)."""

    def __init__(self, name: str, writer: asyncio.StreamWriter, busy_ports: list[int]) -> None:
        self.name = name
        self._writer = writer
        self._channels: dict[int, RemoteChannel] = {}
        # Held by workers a lost controller left with calls there (media_host).
        self._busy_ports = set(busy_ports)
        self._on_available: Callable[[], None] = lambda: None

    @property
    def available(self) -> bool:
        return not self._writer.is_closing()

    async def start(self, on_available: Callable[[], None]) -> None:
        """Linked already (MediaHosts); `on_available` when a busy port is free."""
        self._on_available = on_available

    def can_launch_on(self, sip_port: int) -> bool:
        return sip_port not in self._busy_ports

    def slot_free(self, sip_port: int) -> None:
        self._busy_ports.discard(sip_port)
        self._on_available()

    async def launch(self, spec: WorkerSpec) -> RemoteChannel:
        if not self.available:
            raise WorkerStartFailed(f"media host {self.name} is not linked")
        channel = self._channels[spec.worker_id] = RemoteChannel(self, spec.worker_id)
        launch = Launch(worker_id=spec.worker_id, sip_port=spec.sip_port,
                        rtp_port=spec.rtp_port, max_legs=spec.max_legs)  # fmt: skip
        try:
            await self.send(control_line(launch))
        except ConnectionError as exc:
            self._channels.pop(spec.worker_id, None)
            raise WorkerStartFailed(f"media host {self.name}: {exc}") from None
        return channel

    def adopt(self, worker_id: int, sip_port: int) -> AdoptedWorker:
        """A detached worker there that this link carries now (Welcome.adopted)."""
        channel = self._channels[worker_id] = RemoteChannel(self, worker_id)
        return AdoptedWorker(worker_id, sip_port, channel)

    async def stop(self) -> None:
        """The link is MediaHosts' to close."""

    async def send(self, line: bytes) -> None:
        if self._writer.is_closing():
            raise ConnectionError(f"media host {self.name} is not linked")
        self._writer.write(line)
        await self._writer.drain()

    def send_soon(self, message: Close | Kill | Ping) -> None:
        if not self._writer.is_closing():
            self._writer.write(control_line(message))

    def received(self, worker_id: int, line: bytes) -> None:
        channel = self._channels.get(worker_id)
        if channel is not None:
            channel.deliver(line)

    def gone(self, message: Gone) -> None:
        channel = self._channels.pop(message.worker_id, None)
        if channel is not None:
            if message.error:
                log.error("media_worker_not_started", host=self.name,
                          worker=message.worker_id, error=message.error)  # fmt: skip
            channel.deliver(None)

    def close(self) -> None:
        """Lost or left: every worker's channel ends."""
        self._writer.transport.abort()  # what was not sent has nobody to go to
        for channel in self._channels.values():
            channel.deliver(None)
        self._channels.clear()


class MediaHosts:
    """Keeps every configured media host linked and in the pool while linked."""

    def __init__(
        self, settings: Settings, pool: HostRegistry, *, term: int, metrics: Metrics | None = None
    ) -> None:
        """`term`: this controller's (controller.seat), which the hosts check."""
        self._settings = settings
        self._pool = pool
        self._term = term
        self._metrics = metrics
        self._keepers: list[asyncio.Task[None]] = []
        self._linked: set[str] = set()
        self._closing = False

    @property
    def linked(self) -> list[str]:
        """The links up now, by address."""
        return sorted(self._linked)

    def start(self) -> None:
        for address in self._settings.cluster.media_hosts:
            self._keepers.append(asyncio.create_task(self._keep(address)))

    def closing(self) -> None:
        """The controller is stopping: a link lost from now on is not made again (the pool
        still uses the others to hang its calls up)."""
        self._closing = True

    async def stop(self) -> None:
        """Close every link: each host's workers hang up and exit."""
        self._closing = True
        for keeper in self._keepers:
            keeper.cancel()
        await asyncio.gather(*self._keepers, return_exceptions=True)
        self._keepers.clear()

    async def _keep(self, address: str) -> None:
        failures = 0
        last_problem = ""
        while not self._closing:
            try:
                await self._serve(address)
                failures = 0
                last_problem = ""
            except (
                OSError, LinkError, TimeoutError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError,
            ) as exc:  # fmt: skip
                problem = str(exc) or type(exc).__name__
                # Said once per cause, not once per try: a host down for an hour is one line.
                if problem != last_problem:
                    log.warning("media_host_unreachable", host=address, error=problem)
                    last_problem = problem
                failures += 1
            except Exception:
                # The one broad catch here: whatever a host (or an impostor) sends, this
                # loop must go on, or the host would never be linked again.
                log.exception("media_link_failed", host=address)
                failures += 1
            await asyncio.sleep(RELINK_DELAYS_S[min(failures, len(RELINK_DELAYS_S) - 1)])

    async def _serve(self, address: str) -> None:
        """Link, prove, hand the host to the pool, relay until the link ends."""
        host, _, port = address.rpartition(":")
        async with asyncio.timeout(PROOF_TIMEOUT_S):
            reader, writer = await asyncio.open_connection(host, int(port), limit=LINE_LIMIT)
        try:
            async with asyncio.timeout(PROOF_TIMEOUT_S):
                welcome = await self._prove(reader, writer)
            place = self._place(host, welcome)
            link = HostLink(place.name, writer, welcome.busy_ports)
            if welcome.busy_ports:
                log.info("media_host_ports_busy", host=place.name, ports=welcome.busy_ports)
            adopted = [link.adopt(worker_id, port) for worker_id, port in welcome.adopted]
            try:
                self._pool.add_host(place, link, adopted)
            except ValueError as exc:
                raise LinkError(str(exc)) from None
            self._linked.add(address)
            self._count_hosts()
            log.info("media_host_linked", host=place.name, address=address,
                     max_workers=place.max_workers)  # fmt: skip
            try:
                reason = await self._relay(reader, link)
            finally:
                link.close()
                self._pool.remove_host(place.name)
                self._linked.discard(address)
                self._count_hosts()
            log.warning("media_host_lost", host=place.name, address=address, reason=reason)
            if self._metrics is not None:
                self._metrics.media_hosts_lost.inc()
        finally:
            writer.close()

    async def _prove(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Welcome:
        settings = self._settings
        secret = settings.cluster.secret
        challenge = split_line(await reader.readuntil(b"\n"))
        if not isinstance(challenge, Challenge):
            raise LinkError("the host did not begin with a challenge")
        ours = ControllerProof(
            proof="", nonce=new_nonce(), node=settings.cluster.node or "single", term=self._term,
            edges=settings.edges,
            sibling_hosts=settings.cluster.media_host_addresses,
            sibling_ports=(settings.workers.first_sip_port, max_workers(settings.workers)),
        )  # fmt: skip
        proof = prove(secret, challenge.nonce, "controller", ours)
        writer.write(control_line(ours.model_copy(update={"proof": proof})))
        await writer.drain()
        welcome = split_line(await reader.readuntil(b"\n"))
        if isinstance(welcome, Refused):
            raise LinkError(f"the host refused this controller: {welcome.reason}")
        if not isinstance(welcome, Welcome):
            raise LinkError("the host did not answer with a welcome")
        if not proof_holds(secret, ours.nonce, "media", welcome):
            raise LinkError("the host's proof is wrong: not the cluster's secret")
        return welcome

    def _place(self, host: str, welcome: Welcome) -> WorkerHost:
        """Where the pool may start workers there: only where the edge takes calls from
        (this node's [workers] SIP ports, on the configured address)."""
        ours = self._settings.workers
        if welcome.address != host:
            raise LinkError(f"its workers listen on {welcome.address}, not on {host}")
        if welcome.first_sip_port != ours.first_sip_port:
            raise LinkError(f"its workers' SIP ports start at {welcome.first_sip_port}; the "
                            f"edge takes workers' calls from {ours.first_sip_port} on")  # fmt: skip
        return WorkerHost(
            welcome.name, welcome.address, welcome.first_sip_port, welcome.first_rtp_port,
            welcome.rtp_ports_per_worker, min(welcome.max_workers, max_workers(ours)),
        )  # fmt: skip

    async def _relay(self, reader: asyncio.StreamReader, link: HostLink) -> str:
        """Worker lines to their channels, until the link closes or goes quiet."""
        pinger = asyncio.create_task(self._ping(link))
        try:
            while True:
                try:
                    async with asyncio.timeout(SILENCE_LIMIT_S):
                        line = await reader.readuntil(b"\n")
                except TimeoutError:
                    return f"silent for {SILENCE_LIMIT_S:g} s"
                except (asyncio.IncompleteReadError, ConnectionError):
                    return "closed"
                except asyncio.LimitOverrunError:
                    return "a line too long"
                try:
                    message = split_line(line)
                except LinkError as exc:
                    return str(exc)
                if isinstance(message, tuple):
                    link.received(*message)
                elif isinstance(message, Gone):
                    link.gone(message)
                elif isinstance(message, SlotFree):
                    link.slot_free(message.sip_port)
        finally:
            pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pinger

    async def _ping(self, link: HostLink) -> None:
        while link.available:
            link.send_soon(Ping())
            await asyncio.sleep(PING_INTERVAL_S)

    def _count_hosts(self) -> None:
        if self._metrics is not None:
            self._metrics.media_hosts_linked.set(len(self._linked))
