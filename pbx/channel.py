"""How the worker pool reaches a media worker: a channel of protocol messages, and a launcher
that starts workers and hands the pool each one's channel.

The pool knows workers only through these two interfaces. The real launcher forks PJSUA2
processes and talks JSON lines over a socket to each (pbx.forked_workers); the in-memory twin
(pbx.memory_worker) runs the same protocol inside the event loop, so call flows and the ACD
are tested without PJSUA2, SIP or Kamailio. Both carry the frozen messages of pbx.protocol.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

from pbx.protocol import Command, Event


class WorkerStartFailed(Exception):
    """A worker exited or stayed silent before its Hello, or could not be started at all."""


@dataclass(frozen=True)
class WorkerHost:
    """A machine workers run on, as its launcher describes it: this one (`local`), or a
    media host (`pbx media`, pbx.media_link). Worker i there listens for SIP on
    first_sip_port + i and sends RTP from first_rtp_port + i * rtp_ports_per_worker."""

    name: str
    address: str
    first_sip_port: int
    first_rtp_port: int
    rtp_ports_per_worker: int
    max_workers: int


@dataclass(frozen=True)
class WorkerSpec:
    """What the pool decides about a worker before it starts: its slot and ports."""

    worker_id: int
    sip_port: int
    rtp_port: int
    # The leg cap the first worker measured; 0: this worker measures it (and says so in Hello).
    max_legs: int


class WorkerChannel(Protocol):
    """One worker as the pool sees it: commands out, events in, and the end of the events when
    the worker is gone (its death, or the exit that follows `close`)."""

    async def send(self, command: Command) -> None:
        """Hand one command to the worker; its CommandResult arrives among the events.
        Raises ConnectionError once the worker is gone."""
        ...

    def events(self) -> AsyncIterator[Event]:
        """Every event in the order the worker emitted it, Hello first; ends when it is gone."""
        ...

    def close(self) -> None:
        """No more commands: the worker hangs up whatever legs it holds and exits."""
        ...

    def kill(self) -> None:
        """End the worker at once, without hanging up (it ignored `close`, or a test)."""
        ...


class WorkerLauncher(Protocol):
    """Starts workers for the pool."""

    @property
    def available(self) -> bool:
        """Whether `launch` can start a worker now (the fork server may be restarting)."""
        ...

    async def start(self, on_available: Callable[[], None]) -> None:
        """Be ready to launch; call `on_available` whenever launching works again after a
        spell when it did not (the pool then plans its size again)."""
        ...

    def can_launch_on(self, sip_port: int) -> bool:
        """Whether a worker may start on this port now (on a media host, a worker a lost
        controller left with calls may still hold it)."""
        ...

    async def launch(self, spec: WorkerSpec) -> WorkerChannel:
        """Start one worker; its Hello is the first event of the returned channel.
        Raises WorkerStartFailed or OSError."""
        ...

    async def stop(self) -> None:
        """After the pool has closed every channel: release what `start` took; repeatable."""
        ...
