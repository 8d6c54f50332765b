"""Capacity rules of the media worker pool: legs a worker has promised, and how many workers
the pool should run. Pure: the worker, the pool and the tests share them.

A caller's leg and the agent leg bridged to it must live in one worker (one conference bridge
per process), so a worker that admits a caller keeps a second leg for that caller's dial. The
pool keeps `spare_legs` of such admissible room ahead of the load: it starts workers before
they are needed (a fork takes milliseconds, but a burst of callers arrives faster), and retires
a worker that has been idle for `idle_grace` seconds once the others hold enough room.
"""

from __future__ import annotations

import functools
import math
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from core.settings import WorkerSettings

# A caller leg plus the leg its dial will use.
LEGS_PER_INBOUND_CALL = 2
# The default upper bound of the pool (see default_max_workers).
WORKERS_PER_CPU = 250
MEMORY_PER_WORKER_MB = 16


def legs_reserved(holders: Iterable[str], outbound_parents: Iterable[str | None]) -> int:
    """Legs in use or promised: a holder (an inbound leg, or an outbound leg placed to dial
    one more, pbx.protocol.Dial.keep_room) counts as two until it has dialled, a dialled leg
    uses its parent's promise, and any other leg counts as one. `outbound_parents`: the
    parent of each outbound leg that is not a holder."""
    children = Counter(outbound_parents)
    held = 0
    for leg in holders:
        held += 1 + max(LEGS_PER_INBOUND_CALL - 1, children.pop(leg, 0))
    return held + sum(children.values())


def admissible_legs(max_legs: int, reserved: int) -> int:
    """Free legs that callers can use: whole pairs only (a caller needs two)."""
    free = max(0, max_legs - reserved)
    return free - free % LEGS_PER_INBOUND_CALL


class WorkerState(StrEnum):
    STARTING = "starting"  # forked, no hello yet
    READY = "ready"  # in the edge's dispatcher set
    RETIRING = "retiring"  # out of the set, shut down once its legs have ended


@dataclass(frozen=True)
class WorkerLoad:
    id: int
    state: WorkerState
    room: int  # admissible legs (the expected cap while starting)
    idle_since: float | None  # monotonic time since it holds no leg; None while it holds one


@dataclass(frozen=True)
class PoolLimits:
    spare_legs: int
    max_workers: int
    legs_per_worker: int  # the leg cap the first worker measured
    idle_grace: float


@dataclass(frozen=True)
class PoolPlan:
    start: int = 0
    revive: tuple[int, ...] = ()  # retiring workers taken back instead of starting new ones
    retire: tuple[int, ...] = ()
    # When to plan again if nothing else happens (an idle worker's grace ends then).
    next_check: float | None = None


def plan(workers: Sequence[WorkerLoad], limits: PoolLimits, now: float) -> PoolPlan:
    """What the pool should do now to keep `spare_legs` of room, within `max_workers`."""
    per_worker = max(LEGS_PER_INBOUND_CALL, admissible_legs(limits.legs_per_worker, 0))
    active = [w for w in workers if w.state is not WorkerState.RETIRING]
    room = sum(w.room for w in active)
    if room < limits.spare_legs:
        missing = math.ceil((limits.spare_legs - room) / per_worker)
        retiring = sorted(
            (w for w in workers if w.state is WorkerState.RETIRING),
            key=lambda w: w.room, reverse=True,
        )  # fmt: skip
        revive = tuple(w.id for w in retiring[:missing])
        start = min(missing - len(revive), limits.max_workers - len(workers))
        return PoolPlan(start=max(0, start), revive=revive)
    retire: list[int] = []
    next_check: float | None = None
    # Newest ids first: the pool stays on the low ports, and the oldest workers stay warm.
    idle = sorted(
        (w for w in active if w.state is WorkerState.READY and w.idle_since is not None),
        key=lambda w: w.id, reverse=True,
    )  # fmt: skip
    for worker in idle:
        assert worker.idle_since is not None
        if room - worker.room < limits.spare_legs:
            break
        due = worker.idle_since + limits.idle_grace
        if due <= now:
            retire.append(worker.id)
            room -= worker.room
        elif next_check is None or due < next_check:
            next_check = due
    return PoolPlan(retire=tuple(retire), next_check=next_check)


def default_max_workers(cpus: int, available_memory_mb: int, port_room: int) -> int:
    """The pool's upper bound when none is configured, from what the machine has.

    Measured here: a worker with two waiting callers costs ~0.4 % of a core and ~6 MB of its
    own memory; we allow 250 workers (500 callers) a core and spend at most half the memory
    that is free at start-up, at a conservative 16 MB a worker.
    """
    by_cpu = cpus * WORKERS_PER_CPU
    by_memory = available_memory_mb // 2 // MEMORY_PER_WORKER_MB
    return max(1, min(by_cpu, by_memory, port_room))


def max_workers(settings: WorkerSettings) -> int:
    """The configured bound, or the machine's (the same answer for the life of the process:
    the edge and the pool must agree on the workers' port range)."""
    if settings.max_workers:
        return settings.max_workers
    cpus, memory_mb = _machine()
    return default_max_workers(cpus, memory_mb, port_room(settings))


def port_room(settings: WorkerSettings) -> int:
    """How many workers fit in the SIP and RTP port ranges the settings give them."""
    last_port = 65535
    by_sip = last_port - settings.first_sip_port + 1
    by_rtp = (last_port - settings.first_rtp_port + 1) // settings.rtp_ports_per_worker
    return max(1, min(by_sip, by_rtp))


@functools.cache
def _machine() -> tuple[int, int]:
    """Cores and available memory (MB), read once."""
    memory_mb = 0
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                memory_mb = int(line.split()[1]) // 1024
    return os.cpu_count() or 1, memory_mb
