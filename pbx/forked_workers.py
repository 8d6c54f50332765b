"""Real media workers: PJSUA2 processes forked by the warmed-up fork server (pbx.forkserver),
each reached over its own socket of JSON lines (pbx.protocol): the pool's default launcher.

The socket is the whole contract: commands out, events in, and EOF when the worker dies, so
nothing pings workers. The fork server only forks and reaps; if it dies, the workers it forked
go on and it is started again.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable, Sequence

import structlog

from core.child_process import ChildProcess, ChildProcessFailed
from core.settings import WorkerSettings
from pbx.capacity import max_workers
from pbx.channel import WorkerSpec, WorkerStartFailed
from pbx.protocol import Command, Event, Hello, ProtocolError, decode_event, encode

log = structlog.get_logger(__name__)

# The fork server exits by itself once its control socket closes; SIGKILL only after this.
FORKSERVER_EXIT_S = 3.0
FORKSERVER_RESTART_DELAYS_S = (0.2, 1.0, 2.0, 5.0, 10.0)
# One event line is far below this; a longer one is not ours.
LINE_LIMIT = 1024 * 1024
# Commands a worker has not read yet, in bytes: a worker this far behind is stuck.
UNREAD_LIMIT = 1024 * 1024
# A worker closes its socket, lingers to finish its SIP transactions, then exits: SIGKILL
# after this, and after as long again, give up (a zombie nobody reaps).
WORKER_EXIT_S = 5.0


class SocketChannel:
    """One forked worker's socket (pbx.channel.WorkerChannel)."""

    def __init__(
        self, worker_id: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._worker_id = worker_id
        self._reader = reader
        self._writer = writer
        self._pid: int | None = None  # from its Hello
        # The process itself, whatever becomes of its pid once it has gone (os.pidfd_open).
        self._pidfd: int | None = None

    async def send(self, command: Command) -> None:
        await self.send_line(encode(command))

    async def send_line(self, line: bytes) -> None:
        if not self.send_line_nowait(line):
            await self._writer.drain()

    def send_line_nowait(self, line: bytes) -> bool:
        """One protocol line as it is (a media host relays the controller's), without waiting
        for the worker to read it; False once more than UNREAD_LIMIT waits unread."""
        if self._writer.is_closing():
            raise ConnectionError(f"worker {self._worker_id}'s socket is closed")
        self._writer.write(line)
        return self._writer.transport.get_write_buffer_size() <= UNREAD_LIMIT

    async def lines(self) -> AsyncIterator[bytes]:
        """The worker's event lines as it wrote them (a media host relays them); ends at EOF."""
        async for line in self._reader:
            if self._pid is None:
                with contextlib.suppress(ProtocolError):
                    hello = decode_event(line)
                    if isinstance(hello, Hello):
                        self._pid = hello.pid
                        with contextlib.suppress(OSError):  # gone already
                            self._pidfd = os.pidfd_open(hello.pid)
            yield line

    async def events(self) -> AsyncIterator[Event]:
        """Its events; they end once the process has exited, not at EOF already: until then
        its ports are still taken."""
        async for line in self.lines():
            try:
                yield decode_event(line)
            except ProtocolError as exc:
                log.error("bad_worker_event", worker=self._worker_id, error=str(exc))
        await self.until_exited()

    async def until_exited(self) -> None:
        """Wait for the process to be gone (closed: it hangs up, lingers, then exits):
        SIGKILL after WORKER_EXIT_S, and after as long again, give up."""
        pidfd = self._pidfd
        if pidfd is None:
            return
        try:
            for last_resort in (signal.SIGKILL, None):
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(WORKER_EXIT_S):
                        await _until_readable(pidfd)
                    return
                log.warning("media_worker_did_not_exit", worker=self._worker_id, pid=self._pid,
                            action="kill" if last_resort else "give_up")  # fmt: skip
                if last_resort is not None:
                    with contextlib.suppress(ProcessLookupError):
                        signal.pidfd_send_signal(pidfd, last_resort)
        finally:
            self._pidfd = None
            os.close(pidfd)

    def close(self) -> None:
        self._writer.close()  # EOF: the worker hangs up whatever is left and exits

    def kill(self) -> None:
        """SIGKILL through the pidfd: never another process that got its pid since."""
        if self._pidfd is not None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)


async def _until_readable(fd: int) -> None:
    """Until `fd` is readable (a pidfd: its process exited)."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def settle() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, settle)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


class ForkedWorkers:
    """Forks workers through one fork server, started again if it dies
    (pbx.channel.WorkerLauncher)."""

    def __init__(
        self,
        settings: WorkerSettings,
        *,
        trusted: list[str],
        trunk_username: str = "",
        trunk_password: str = "",
        python: str = sys.executable,
        sibling_hosts: Sequence[str] = (),
        sibling_ports: tuple[int, int] | None = None,
    ) -> None:
        """`sibling_hosts`: the other media hosts, whose workers may link to these from
        `sibling_ports` (first, count; default: this host's own range)."""
        self._settings = settings
        self._trusted = trusted
        self._sibling_hosts = list(sibling_hosts)
        self._sibling_ports = sibling_ports or (settings.first_sip_port, max_workers(settings))
        self._trunk_username = trunk_username
        self._trunk_password = trunk_password
        self._python = python
        self._forkserver: ChildProcess | None = None
        self._control: socket.socket | None = None
        self._watch: asyncio.Task[None] | None = None

    @property
    def available(self) -> bool:
        return self._control is not None

    async def start(self, on_available: Callable[[], None]) -> None:
        await self._start_forkserver()
        self._watch = asyncio.create_task(self._watch_forkserver(on_available))

    def can_launch_on(self, sip_port: int) -> bool:
        return True

    async def launch(self, spec: WorkerSpec) -> SocketChannel:
        """Fork a worker with its end of a new socket pair; its Hello comes on ours."""
        settings = self._settings
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        argv = [
            "--worker-id", str(spec.worker_id), "--host", settings.host,
            "--sip-port", str(spec.sip_port), "--rtp-port", str(spec.rtp_port),
            "--rtp-ports", str(settings.rtp_ports_per_worker),
            "--media-timeout", str(settings.media_timeout),
            "--drop-unheard-speech" if settings.drop_unheard_speech
            else "--no-drop-unheard-speech",
            "--trunk-username", self._trunk_username,
            "--max-legs", str(spec.max_legs),
            # The edge, and the sibling workers: a link between two (WorkerPool.link) is an
            # INVITE from one to the other.
            *itertools.chain.from_iterable(("--trusted", t) for t in self._trusted),
            "--sibling-ports", "{}:{}".format(*self._sibling_ports),
            *itertools.chain.from_iterable(("--sibling-host", h) for h in self._sibling_hosts),
            "--pjsua-log-level", os.environ.get("PBX_WORKER_PJSUA_LOG_LEVEL", "1"),
        ]  # fmt: skip
        request = json.dumps({"worker_id": spec.worker_id, "argv": argv}).encode()
        try:
            if self._control is None:
                raise WorkerStartFailed("the fork server is not running")
            socket.send_fds(self._control, [request], [theirs.fileno()])
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours, limit=LINE_LIMIT)
        return SocketChannel(spec.worker_id, reader, writer)

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
            self._watch = None
        if self._control is not None:
            self._control.close()  # the fork server reaps its workers and exits
            self._control = None
        if self._forkserver is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FORKSERVER_EXIT_S):
                    await self._forkserver.wait()
            await self._forkserver.stop(timeout=FORKSERVER_EXIT_S)

    async def _start_forkserver(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {**os.environ, "PBX_TRUNK_PASSWORD": self._trunk_password}
        argv = [self._python, "-m", "pbx.forkserver", "--control-fd", str(theirs.fileno())]
        process = ChildProcess("forkserver", argv, env=env, pass_fds=[theirs.fileno()])
        try:
            await process.start()
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._forkserver, self._control = process, ours

    async def _watch_forkserver(self, on_available: Callable[[], None]) -> None:
        """Start the fork server again if it dies; the workers it forked go on."""
        while True:
            assert self._forkserver is not None
            code = await self._forkserver.wait()
            log.error("forkserver_lost", returncode=code)
            if self._control is not None:
                self._control.close()
                self._control = None
            for attempt in itertools.count():
                delays = FORKSERVER_RESTART_DELAYS_S
                await asyncio.sleep(delays[min(attempt, len(delays) - 1)])
                try:
                    await self._start_forkserver()
                except (OSError, ChildProcessFailed) as exc:
                    log.error("forkserver_restart_failed", error=str(exc))
                    continue
                break
            on_available()
