"""Capacity and failure through the edge: a full pool answers 503 and leaks no leg; a worker
killed mid-call ends only its own calls and comes back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from api.app import POOL_KEY
from core.settings import Settings
from pbx.pool import WorkerPool
from tests.integration.test_api_prompts import make_wav, upload
from tests.support.api_client import ApiClient
from tests.support.sipp import call_number

HOLD_NUMBER = "4930555222"


@pytest.fixture
async def hold_number(
    admin: ApiClient, http: aiohttp.ClientSession, api_base: str, tmp_path: Path
) -> AsyncIterator[dict[str, Any]]:
    """A number whose callers hear 6 s of greeting (no extension dialing), then the goodbye."""
    status, prompt = await upload(http, api_base, make_wav(tmp_path, seconds=6.0), name="Long")
    assert status == 201
    reply = await admin.post(
        "/numbers",
        {"number": HOLD_NUMBER, "greeting": {"prompt_id": prompt["id"]},
         "extension_dialing": False, "default_destination": {"type": "hangup"}},
    )  # fmt: skip
    assert reply.status == 201, reply
    yield reply.body
    await admin.delete(f"/numbers/{reply.body['id']}")


def pool_of(server: TestServer) -> WorkerPool:
    return server.app[POOL_KEY]


async def wait_until(condition: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.1)


async def test_full_pool_answers_503_and_leaks_no_leg(
    settings: Settings, api_server: TestServer, hold_number: dict[str, Any], tmp_path: Path
) -> None:
    pool = pool_of(api_server)
    capacity = sum(w.max_legs // 2 for w in pool.workers)
    holders = [
        asyncio.create_task(
            call_number(tmp_path, settings.sip.port, HOLD_NUMBER, hang_up="remote", timeout_s=30)
        )
        for _ in range(capacity)
    ]
    await wait_until(lambda: sum(w.legs_in_use for w in pool.workers) == capacity)
    overflow = await call_number(tmp_path, settings.sip.port, HOLD_NUMBER, expect=503)
    assert overflow.succeeded, overflow.output
    results = await asyncio.gather(*holders)
    assert all(r.succeeded for r in results), [r.output for r in results if not r.succeeded]
    await wait_until(lambda: sum(w.legs_in_use for w in pool.workers) == 0)


async def test_killed_worker_ends_only_its_calls(
    admin: ApiClient, settings: Settings, api_server: TestServer, hold_number: dict[str, Any],
    tmp_path: Path,
) -> None:  # fmt: skip
    pool = pool_of(api_server)
    callers = [
        asyncio.create_task(
            call_number(tmp_path, settings.sip.port, HOLD_NUMBER, hang_up="remote", timeout_s=20)
        )
        for _ in range(2)
    ]
    await wait_until(lambda: all(w.legs_in_use == 1 for w in pool.workers))
    restarts = pool.workers[0].restarts
    await pool.kill_worker_for_test(0)
    await wait_until(lambda: pool.workers[0].alive and pool.workers[0].restarts == restarts + 1)
    survivor, victim = None, None
    for task in asyncio.as_completed(callers):
        result = await task
        if result.succeeded:
            survivor = result
        else:
            victim = result
    assert survivor is not None, "the other worker's call should have ended normally"
    assert victim is not None, "the killed worker's caller cannot get a proper end"
    failed = (await admin.get("/calls", params={"disposition": "failed"})).body["items"]
    assert any(call["called"] == HOLD_NUMBER and call["worker_id"] == 0 for call in failed)
