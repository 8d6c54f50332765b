"""Checks every integration test that runs calls through the service shares."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from api.routing import CONTROLLER_KEY

# Longest a finished call may take to release its legs (a CANCEL's 487 and ACK, a BYE).
LEG_RELEASE_S = 10.0


@pytest.fixture(autouse=True)
async def no_leg_left_behind(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """After a test that used the service, every worker leg is released: a leaked leg would
    shrink the pool for good (and fail some later test far from the cause)."""
    yield
    if "api_server" not in request.fixturenames:
        return
    pool = request.getfixturevalue("api_server").app[CONTROLLER_KEY].pool
    assert pool is not None
    try:
        async with asyncio.timeout(LEG_RELEASE_S):
            while pool.legs_in_use:
                await asyncio.sleep(0.1)
    except TimeoutError:
        held = [
            f"{leg.id} {leg.direction} {leg.from_uri} -> {leg.to_uri}"
            f"{' (answered)' if leg.answered.done() else ''}"
            for leg in pool.live_legs()
        ]
        pytest.fail(f"legs still held {LEG_RELEASE_S:g} s after the test: {held}")
