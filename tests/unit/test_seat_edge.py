"""A standby node's edge follows the active node's worker list (controller.shared_edge) while
the node stands by: the seat stops the follower before it takes over, and starts it again
when it steps down, also when the takeover failed before a controller was made."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

import controller.seat as seat_module
from controller.component import Controller
from controller.lease import Membership, RedisLease, Renewal
from controller.seat import ControllerSeat
from controller.shared_edge import EdgeFollower
from core.context import ServiceContext
from core.metrics import Metrics


class OneTermLease:
    """Held once; the takeover's term cannot be had (Redis went away at that moment)."""

    def __init__(self) -> None:
        self.answers = [Renewal.RENEWED]
        self.released = asyncio.Event()

    async def acquire(self) -> Renewal:
        return self.answers.pop(0) if self.answers else Renewal.LOST

    async def renew(self) -> Renewal:
        return Renewal.LOST

    async def next_term(self) -> int:
        raise ConnectionError("Redis went away")

    async def release(self) -> None:
        self.released.set()

    async def close(self) -> None:
        pass


class Members:
    async def claim(self) -> None:
        pass

    async def renew(self) -> None:
        pass

    async def release(self) -> None:
        pass


class Follower:
    def __init__(self) -> None:
        self.following = False
        self.changes: list[str] = []

    def start(self) -> None:
        self.following = True
        self.changes.append("start")

    async def stop(self) -> None:
        self.following = False
        self.changes.append("stop")


class Writes:
    async def read_sequences(self) -> None:
        pass

    async def flush(self) -> None:
        pass


class Context:
    metrics = Metrics()
    writes = Writes()
    settings = cast(Any, type("S", (), {"cluster": type("C", (), {"node": "a"})()})())


async def test_a_takeover_that_fails_before_its_controller_leaves_the_edge_following(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def nothing_open(ctx: object) -> None:
        pass

    monkeypatch.setattr(seat_module, "close_interrupted_calls", nothing_open)

    def no_controller(term: int) -> Controller:
        raise AssertionError("no term, no controller")

    lease, follower = OneTermLease(), Follower()
    seat = ControllerSeat(
        cast(ServiceContext, Context()), cast(RedisLease, lease), cast(Membership, Members()),
        no_controller, 3.0, cast(EdgeFollower, follower),
    )  # fmt: skip
    await seat.start()
    try:
        async with asyncio.timeout(10):
            await lease.released.wait()  # the failed takeover gave the lease up
        assert follower.changes == ["start", "stop", "start"] and follower.following
    finally:
        await seat.stop()
    assert not follower.following
