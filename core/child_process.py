"""Supervised child processes for asyncio: output into the log, readiness checks, clean stops."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import functools
import os
import signal
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

_PR_SET_PDEATHSIG = 1
# Looked up in the parent: a symbol lookup (dlsym) between fork and exec could wait forever on
# a loader lock that another thread of the parent held at the fork.
_prctl = ctypes.CDLL(None, use_errno=True).prctl
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_prctl.restype = ctypes.c_int
_OUTPUT_LINES_KEPT = 30
_READY_POLL_SECONDS = 0.05
_DRAIN_SECONDS = 1.0
_LINE_LIMIT = 1024 * 1024


class ChildProcessFailed(Exception):
    """A child process could not start, exited early or never became ready."""


def check_ports_free(name: str, endpoints: Iterable[tuple[str, int, socket.SocketKind]]) -> None:
    """Raise ChildProcessFailed if any (host, port, kind) cannot be bound right now.

    Checked before starting a server, so a leftover instance on the same port is reported
    instead of answering the readiness check in the new one's place.
    """
    for host, port, kind in endpoints:
        with socket.socket(socket.AF_INET, kind) as probe:
            if kind == socket.SOCK_STREAM:
                # Servers set SO_REUSEADDR too; without it a TIME_WAIT socket looks like a user.
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as exc:
                transport = "TCP" if kind == socket.SOCK_STREAM else "UDP"
                raise ChildProcessFailed(
                    f"{name} cannot listen on {host}:{port}/{transport}: {exc.strerror}"
                    " (is another instance still running, or is the port used by something else?)"
                ) from exc


def _die_with_parent(parent_pid: int) -> None:
    # Runs in the child between fork and exec. SIGTERM rather than SIGKILL: a forking server
    # such as Kamailio then takes its own worker processes down with it.
    if _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    # The parent may have died before prctl took effect; nobody would signal us then.
    if os.getppid() != parent_pid:
        os._exit(1)


def _kill_group(group: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, sig)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


class ChildProcess:
    """One child process whose stdout and stderr go to the log line by line.

    The child runs in its own session (a terminal's Ctrl-C reaches only the parent, which stops
    children in order) and gets SIGTERM when the thread that started it dies. That thread is
    the event loop's, so run the loop on a thread that lives as long as the service.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        stdin_pipe: bool = False,
        pass_fds: Sequence[int] = (),
    ) -> None:
        self.name = name
        self.argv = list(argv)
        # A protocol channel: commands on stdin, and extra descriptors (e.g. an event pipe).
        self._stdin_pipe = stdin_pipe
        self._pass_fds = tuple(pass_fds)
        self._cwd = cwd
        self._env = dict(env) if env is not None else None
        self._process: asyncio.subprocess.Process | None = None
        self._exit_fd: int | None = None
        self._exited = asyncio.Event()
        self._readers: list[asyncio.Task[None]] = []
        self._last_lines: collections.deque[str] = collections.deque(maxlen=_OUTPUT_LINES_KEPT)
        self._log = log.bind(process=name)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def returncode(self) -> int | None:
        """None while the process runs (or before it started)."""
        return self._process.returncode if self._process is not None else None

    @property
    def stdin(self) -> asyncio.StreamWriter:
        """The child's stdin (only with stdin_pipe=True)."""
        stdin = self._started().stdin
        if stdin is None:
            raise RuntimeError(f"{self.name} was started without a stdin pipe")
        return stdin

    @property
    def last_output(self) -> list[str]:
        return list(self._last_lines)

    async def start(self) -> None:
        if self._process is not None:
            raise RuntimeError(f"{self.name} was already started")
        try:
            self._process = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.PIPE if self._stdin_pipe else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=self._cwd,
                env=self._env,
                start_new_session=True,
                preexec_fn=functools.partial(_die_with_parent, os.getpid()),
                limit=_LINE_LIMIT,
                pass_fds=self._pass_fds,
            )
        except OSError as exc:
            raise ChildProcessFailed(
                f"{self.name}: cannot run {self.argv[0]}: {exc.strerror or exc}"
            ) from exc
        try:
            # Readable once the process has exited (Linux 5.3+), whoever holds its pipes.
            self._exit_fd = os.pidfd_open(self._process.pid)
            asyncio.get_running_loop().add_reader(self._exit_fd, self._on_exit)
        except ProcessLookupError:
            self._exit_fd = None  # gone already: returncode follows from the child watcher
        assert self._process.stdout is not None and self._process.stderr is not None
        self._readers = [
            asyncio.create_task(self._forward(self._process.stdout, "stdout")),
            asyncio.create_task(self._forward(self._process.stderr, "stderr")),
        ]
        self._log.info("child_started", pid=self._process.pid, argv=self.argv)

    async def wait_ready(
        self,
        check: Callable[[], Awaitable[bool]],
        timeout: float,  # noqa: ASYNC109  # the deadline is reported with the child's output
    ) -> None:
        """Poll `check` until it returns True; fail if the process exits or `timeout` passes."""
        process = self._started()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if process.returncode is not None:
                await self._drain_output()
                raise ChildProcessFailed(
                    self._with_output(f"exited with code {process.returncode} before it was ready")
                )
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise ChildProcessFailed(self._with_output(f"was not ready after {timeout:g} s"))
            try:
                async with asyncio.timeout(remaining):
                    if await check():
                        return
            except TimeoutError:
                continue
            await asyncio.sleep(_READY_POLL_SECONDS)

    async def wait(self) -> int:
        """Wait until the process exits and its output is logged; return its exit code.

        The process itself, not its pipes: asyncio's Process.wait() (3.11) also waits for
        stdout and stderr to close, which never happens while a grandchild holds them, as
        Kamailio's workers do after its main process was killed."""
        process = self._started()
        if process.returncode is None and self._exit_fd is not None:
            await self._exited.wait()
        # The pidfd says it exited; the child watcher sets the code a moment later.
        while process.returncode is None:  # noqa: ASYNC110  # set from the watcher's thread
            await asyncio.sleep(_READY_POLL_SECONDS)
        await self._drain_output()
        return process.returncode

    async def stop(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109  # grace before SIGKILL
        """SIGTERM, then SIGKILL to the whole process group after `timeout`; safe to repeat.
        Also when the child itself has died: what it started (its session) must not outlive
        the service, e.g. Kamailio's workers holding the SIP port for the next run."""
        process = self._process
        if process is None:
            return
        if process.returncode is None:
            # It may exit between the check and the signal.
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(timeout):
                    await self.wait()
            except TimeoutError:
                self._log.warning("child_killed", pid=process.pid, after_seconds=timeout)
                _kill_group(process.pid, signal.SIGKILL)
                await self.wait()
            self._log.info("child_stopped", pid=process.pid, returncode=process.returncode)
        await self._stop_leftovers(process.pid, timeout)
        await self._drain_output()

    def _on_exit(self) -> None:
        if self._exit_fd is not None:
            asyncio.get_running_loop().remove_reader(self._exit_fd)
            os.close(self._exit_fd)
            self._exit_fd = None
        self._exited.set()

    async def _stop_leftovers(self, group: int, timeout: float) -> None:  # noqa: ASYNC109
        """Whatever is left in the child's process group: SIGTERM, then SIGKILL."""
        if not _group_alive(group):
            return
        self._log.info("child_leftovers_stopped", pgid=group)
        _kill_group(group, signal.SIGTERM)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while _group_alive(group) and loop.time() < deadline:  # noqa: ASYNC110  # no event for it
            await asyncio.sleep(_READY_POLL_SECONDS)
        _kill_group(group, signal.SIGKILL)

    def _started(self) -> asyncio.subprocess.Process:
        if self._process is None:
            raise RuntimeError(f"{self.name} was not started")
        return self._process

    async def _forward(self, stream: asyncio.StreamReader, channel: str) -> None:
        async for raw in stream:
            line = raw.decode(errors="replace").rstrip()
            if line:
                self._last_lines.append(line)
                self._log.info(line, stream=channel)

    async def _drain_output(self) -> None:
        # Grandchildren that outlive the child can hold the pipes open: do not wait for them.
        if not self._readers:
            return
        _done, pending = await asyncio.wait(self._readers, timeout=_DRAIN_SECONDS)
        for task in pending:
            task.cancel()
        self._readers = []

    def _with_output(self, problem: str) -> str:
        output = "\n".join(f"  {line}" for line in self._last_lines) or "  (no output)"
        return f"{self.name} {problem}; its last output:\n{output}"
