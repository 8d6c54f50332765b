"""The worker pool's capacity rules: reserved legs, admissible room, and the sizing plan."""

from __future__ import annotations

import pytest

from pbx.capacity import (
    PoolLimits,
    PoolPlan,
    WorkerLoad,
    WorkerState,
    admissible_legs,
    default_max_workers,
    legs_reserved,
    plan,
)

READY, STARTING, RETIRING = WorkerState.READY, WorkerState.STARTING, WorkerState.RETIRING
LIMITS = PoolLimits(spare_legs=8, max_workers=10, legs_per_worker=4, idle_grace=60.0)


def worker(
    id: int, room: int = 4, state: WorkerState = READY, idle_since: float | None = None
) -> WorkerLoad:
    return WorkerLoad(id=id, state=state, room=room, idle_since=idle_since)


@pytest.mark.parametrize(
    ("inbound", "outbound_parents", "reserved"),
    [
        ([], [], 0),
        (["in1"], [], 2),  # a caller keeps a leg for its agent
        (["in1"], ["in1"], 2),  # the agent leg uses that promise
        (["in1", "in2"], ["in1"], 4),
        ([], [None], 1),  # a leg dialled for no caller (a test, a spare)
        (["in1"], ["in1", "in1"], 3),  # ring then re-dial while the first still ends
        ([], ["gone"], 1),  # its caller ended first: the leg still counts
    ],
)
def test_legs_reserved(
    inbound: list[str], outbound_parents: list[str | None], reserved: int
) -> None:
    assert legs_reserved(inbound, outbound_parents) == reserved


@pytest.mark.parametrize(
    ("max_legs", "reserved", "room"), [(4, 0, 4), (4, 1, 2), (4, 2, 2), (4, 3, 0), (4, 5, 0)]
)
def test_room_counts_whole_pairs_only(max_legs: int, reserved: int, room: int) -> None:
    assert admissible_legs(max_legs, reserved) == room


@pytest.mark.parametrize(
    ("workers", "expected"),
    [
        # Empty pool: enough workers for the spare legs.
        ([], PoolPlan(start=2)),
        # Busy workers: start more, counting the ones already starting.
        ([worker(0, room=0), worker(1, room=0)], PoolPlan(start=2)),
        ([worker(0, room=0), worker(1, state=STARTING)], PoolPlan(start=1)),
        ([worker(0, room=2), worker(1, room=2), worker(2, room=2)], PoolPlan(start=1)),
        # Exactly the spare legs: nothing to do.
        ([worker(0), worker(1)], PoolPlan()),
        # A retiring worker comes back before a new one is forked.
        ([worker(0), worker(1, state=RETIRING)], PoolPlan(revive=(1,))),
        ([worker(0, room=0), worker(1, state=RETIRING)], PoolPlan(start=1, revive=(1,))),
    ],
)
def test_the_pool_keeps_spare_legs_ahead(workers: list[WorkerLoad], expected: PoolPlan) -> None:
    assert plan(workers, LIMITS, now=100.0) == expected


def test_the_pool_never_grows_past_its_bound() -> None:
    busy = [worker(i, room=0) for i in range(9)]
    assert plan(busy, LIMITS, now=0.0) == PoolPlan(start=1)
    assert plan([*busy, worker(9, room=0)], LIMITS, now=0.0) == PoolPlan()
    # Retiring workers still hold their ports and memory.
    assert plan([*busy, worker(9, state=RETIRING, room=0)], LIMITS, now=0.0) == PoolPlan(
        revive=(9,)
    )


def test_idle_workers_retire_after_their_grace_newest_first() -> None:
    workers = [worker(0, idle_since=0.0), worker(1, idle_since=0.0), worker(2, idle_since=50.0)]
    # Worker 2 is still in its grace: worker 1 goes now, and the pool looks again at 110.
    assert plan(workers, LIMITS, now=100.0) == PoolPlan(retire=(1,), next_check=110.0)
    assert plan(workers, LIMITS, now=110.0) == PoolPlan(retire=(2,))
    later = [worker(0, idle_since=0.0), worker(1, idle_since=0.0), worker(2, idle_since=0.0)]
    assert plan(later, LIMITS, now=100.0) == PoolPlan(retire=(2,))


def test_a_busy_worker_is_never_retired() -> None:
    workers = [worker(0, idle_since=0.0), worker(1, idle_since=0.0), worker(2, room=2)]
    assert plan(workers, LIMITS, now=1000.0) == PoolPlan(retire=())


@pytest.mark.parametrize(
    ("cpus", "memory_mb", "ports", "bound"),
    [
        (2, 24_000, 10_000, 500),  # this machine: cores decide
        (2, 2_000, 10_000, 62),  # a small VM: memory decides
        (64, 512_000, 1_000, 1_000),  # the port ranges decide
        (1, 0, 10, 1),  # never zero
    ],
)
def test_the_default_bound_comes_from_the_machine(
    cpus: int, memory_mb: int, ports: int, bound: int
) -> None:
    assert default_max_workers(cpus, memory_mb, ports) == bound
