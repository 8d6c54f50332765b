"""Capacity and failure through the edge: a full pool answers 503 and leaks no leg; a worker
full at the pjsua level hands callers to another; a busy phone stays busy; a worker killed
mid-call ends only its own calls (the edge hangs them up or CANCELs them, its calls out to the
provider too) and comes back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from api.routing import CONTROLLER_KEY
from core.settings import Settings
from pbx.capacity import WorkerState
from pbx.kamailio import WORKER_PROFILE, KamailioRpc
from pbx.pool import WorkerPool
from tests.conftest import MakePhone
from tests.integration.test_api_prompts import make_wav, upload
from tests.support.api_client import ApiClient
from tests.support.phone import TestPhone
from tests.support.sipp import SippResult, call_number

# The pool and the edge under load: the SQL they touch is the other tests' (Makefile).
pytestmark = pytest.mark.no_sql

HOLD_NUMBER = "4930555222"
DIAL_NUMBER = "4930555333"
# Dialled by a desk phone: the call goes out to the provider (the suite's trunk.uri, this
# test process's user agent, where a TestPhone of this name takes it).
PROVIDER_NUMBER = "4930666777"


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


@pytest.fixture
async def dial_number(admin: ApiClient) -> AsyncIterator[dict[str, Any]]:
    """A number whose callers dial an extension during a short greeting."""
    reply = await admin.post(
        "/numbers",
        {"number": DIAL_NUMBER, "greeting": {"text": "Dial an extension."},
         "default_destination": {"type": "hangup"}},
    )  # fmt: skip
    assert reply.status == 201, reply
    yield reply.body
    await admin.delete(f"/numbers/{reply.body['id']}")


def pool_of(server: TestServer) -> WorkerPool:
    pool = server.app[CONTROLLER_KEY].pool
    assert pool is not None
    return pool


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


async def set_dispatcher_state(
    edge: KamailioRpc, pool: WorkerPool, worker_id: int, state: str
) -> None:
    """Take a worker out of Kamailio's rotation ("d", disabled) or put it back ("a")."""
    await edge.call("dispatcher.set_state", state, 1, pool.dispatcher_targets()[worker_id])


async def calls_counted(edge: KamailioRpc, uri: str) -> int:
    """The calls the edge's dispatcher counts for the worker slot at `uri`."""
    listed = await edge.call("dispatcher.list")
    (target,) = [
        target["DEST"]
        for target in listed["RECORDS"][0]["SET"]["TARGETS"]
        if target["DEST"]["URI"] == uri
    ]
    count: int = target["RUNTIME"]["DLGLOAD"]
    return count


async def test_worker_full_at_the_pjsua_level_hands_the_caller_to_another(
    admin: ApiClient, settings: Settings, api_server: TestServer, edge_rpc: KamailioRpc,
    phone: MakePhone, dial_number: dict[str, Any], hold_number: dict[str, Any], tmp_path: Path,
) -> None:  # fmt: skip
    pool = pool_of(api_server)
    full, spare = 0, 1
    agents = [await phone(f"Agent {i}") for i in range(2)]
    # Both bridged calls must land in one worker: the other leaves the rotation meanwhile.
    await set_dispatcher_state(edge_rpc, pool, spare, "d")
    try:
        callers = [
            asyncio.create_task(
                call_number(tmp_path, settings.sip.port, DIAL_NUMBER, digits=extension,
                            hang_up="remote", timeout_s=30)
            )
            for _, extension in agents
        ]  # fmt: skip
        agent_calls = [await desk.next_incoming(timeout=15) for desk, _ in agents]
        for agent_call in agent_calls:
            await asyncio.wait_for(agent_call.answered, 5)
        await wait_until(lambda: pool.workers[full].legs_in_use == pool.workers[full].max_legs)
    finally:
        await set_dispatcher_state(edge_rpc, pool, spare, "a")
    # Every call slot of that worker's pjsua is taken, so pjsua answers 486 before our code
    # sees the INVITE. Round-robin offers one of the next two callers to it first.
    full_uri, spare_uri = (f"sip:{settings.workers.host}:{w.sip_port}" for w in pool.workers)
    for _ in range(2):
        serving = asyncio.create_task(
            call_number(tmp_path, settings.sip.port, HOLD_NUMBER, stay_s=1.0)
        )
        await wait_until(lambda: pool.workers[spare].legs_in_use == 1)
        # The edge files the call under the worker that took it alone, so that only that
        # worker's death ends it; the full one keeps its two callers and their two agents.
        assert await edge_rpc.call("dlg.profile_get_size", WORKER_PROFILE, spare_uri) == 1
        assert await edge_rpc.call("dlg.profile_get_size", WORKER_PROFILE, full_uri) == 4
        served = await serving
        assert served.succeeded, served.output
    newest = (await admin.get("/calls", params={"party": HOLD_NUMBER, "limit": "2"})).body
    assert [call["worker_id"] for call in newest["items"]] == [spare, spare]
    for agent_call in agent_calls:
        await agent_call.hangup()
    results = await asyncio.gather(*callers)
    assert all(r.succeeded for r in results), [r.output for r in results if not r.succeeded]
    await wait_until(lambda: sum(w.legs_in_use for w in pool.workers) == 0)


async def test_busy_phone_answer_reaches_the_caller_from_one_worker(
    settings: Settings, phone: MakePhone
) -> None:
    caller, _ = await phone("Caller Of A Busy Phone")
    busy, busy_extension = await phone("Always Busy", auto_answer=486)
    call = await caller.call(f"sip:{busy_extension}@{settings.sip.host}:{settings.sip.port}")
    assert await asyncio.wait_for(call.ended, 10) == 486
    await asyncio.sleep(0.5)
    # A second INVITE would mean the edge took the relayed busy for a full worker.
    assert busy.incoming.qsize() == 1


async def test_killed_worker_ends_only_its_calls(
    admin: ApiClient, settings: Settings, api_server: TestServer, edge_rpc: KamailioRpc,
    hold_number: dict[str, Any], tmp_path: Path,
) -> None:  # fmt: skip
    pool = pool_of(api_server)
    dead_uri = pool.dispatcher_targets()[0]
    callers: list[asyncio.Task[SippResult]] = []
    for placed in (1, 2):
        # One after the other: the edge sends each to the worker with the fewest calls (two
        # INVITEs at the same instant may both see the same worker as the emptiest).
        # No pause after the ACK: SIPp would take the edge's BYE during one for a stray message.
        callers.append(asyncio.create_task(
            call_number(tmp_path, settings.sip.port, HOLD_NUMBER, hang_up="remote",
                        digits_after_s=0.0, timeout_s=20)
        ))  # fmt: skip
        await wait_until(lambda placed=placed: pool.legs_in_use == placed)
    assert all(w.legs_in_use == 1 for w in pool.workers)
    restarts = pool.restarts
    await pool.kill_worker_for_test(0)
    # The edge sends the killed worker's caller a BYE at once; the other caller hears its 6 s
    # greeting out, then its own worker hangs up.
    ended, going_on = await asyncio.wait(callers, timeout=3, return_when=asyncio.FIRST_COMPLETED)
    assert len(ended) == 1, "the killed worker's caller got no BYE"
    assert ended.pop().result().succeeded
    # The edge's own BYE takes the call off the slot's count, as the caller's would have: its
    # next worker gets its full share of callers.
    assert await calls_counted(edge_rpc, dead_uri) == 0
    # The pool forks a replacement into the free slot.
    await wait_until(
        lambda: (
            pool.restarts == restarts + 1
            and [(w.id, w.state) for w in pool.workers]
            == [(0, WorkerState.READY), (1, WorkerState.READY)]
        )
    )
    assert (await going_on.pop()).succeeded, "the other worker's call should have ended normally"
    failed = (await admin.get("/calls", params={"disposition": "failed"})).body["items"]
    assert any(call["called"] == HOLD_NUMBER and call["worker_id"] == 0 for call in failed)


async def test_killed_worker_ends_a_ringing_internal_call_for_both_phones(
    settings: Settings, api_server: TestServer, phone: MakePhone
) -> None:
    pool = pool_of(api_server)
    caller, _ = await phone("Caller Of A Dying Worker")
    callee, callee_extension = await phone("Callee Of A Dying Worker", auto_answer=None)
    call = await caller.call(f"sip:{callee_extension}@{settings.sip.host}:{settings.sip.port}")
    ringing = await callee.next_incoming(timeout=10)
    await asyncio.wait_for(call.progress.ringing, 5)
    (worker,) = [w for w in pool.workers if w.legs_in_use]
    await pool.kill_worker_for_test(worker.id)
    # Both INVITEs wait on the dead worker: the edge answers the caller's and CANCELs the
    # callee's ring.
    assert await asyncio.wait_for(call.ended, 5) == 500
    assert call.progress.final_answer.startswith("SIP/2.0 500 Worker Lost\r\n")
    assert await asyncio.wait_for(ringing.ended, 5) == 487, "the callee's ring was not CANCELled"


async def until_provider_call_is(edge: KamailioRpc, worker_uri: str, state: int) -> None:
    """Until the edge holds the call the worker at `worker_uri` placed to the provider, filed
    under that worker, in this dialog state (2 ringing, 4 answered and ACKed)."""
    async with asyncio.timeout(5):
        while True:
            listed = await edge.call("dlg.profile_list", WORKER_PROFILE, worker_uri)
            dialogs = listed if isinstance(listed, list) else [listed] if listed else []
            if any(PROVIDER_NUMBER in d["to_uri"] and d["state"] == state for d in dialogs):
                return
            await asyncio.sleep(0.05)


async def both_workers_ready(pool: WorkerPool, restarted_since: int = -1) -> None:
    """Until both slots hold a ready worker (a killed one replaced, if `restarted_since` is
    the restart count before the kill)."""
    await wait_until(
        lambda: (
            pool.restarts > restarted_since
            and [(w.id, w.state) for w in pool.workers]
            == [(0, WorkerState.READY), (1, WorkerState.READY)]
        )
    )


async def test_killed_worker_ends_its_answered_call_to_the_provider_with_the_edges_bye(
    settings: Settings, api_server: TestServer, edge_rpc: KamailioRpc, phone: MakePhone
) -> None:
    pool = pool_of(api_server)
    await both_workers_ready(pool)  # an earlier test's killed worker is back
    provider = TestPhone(auto_answer=200)
    await provider.open_unregistered(PROVIDER_NUMBER)
    try:
        caller, _ = await phone("Caller Out Through A Dying Worker")
        dropped = await edge_rpc.dropped_requests()
        call = await caller.call(f"sip:{PROVIDER_NUMBER}@{settings.sip.host}:{settings.sip.port}")
        far_end = await provider.next_incoming(timeout=10)
        await asyncio.wait_for(call.answered, 10)
        (worker,) = [w for w in pool.workers if w.legs_in_use]
        worker_uri = pool.dispatcher_targets()[worker.id]
        # The worker's call out passed the edge, which holds it under that worker.
        await until_provider_call_is(edge_rpc, worker_uri, 4)
        restarts = pool.restarts
        await pool.kill_worker_for_test(worker.id)
        assert await asyncio.wait_for(far_end.ended, 5) == 200
        bye = far_end.progress.ending_request
        assert bye.startswith("BYE "), bye
        # From the edge itself, not relayed from the (dead) worker: the edge's Via alone.
        vias = [line for line in bye.split("\r\n") if line.lower().startswith(("via:", "v:"))]
        assert len(vias) == 1 and f" {settings.sip.host}:{settings.sip.port};" in vias[0], bye
        assert await asyncio.wait_for(call.ended, 5) == 200
        # A worker's INVITEs are neither challenged nor counted against the trunk's limit.
        assert await edge_rpc.dropped_requests() == dropped
        await both_workers_ready(pool, restarts)
    finally:
        provider.close()


async def test_killed_worker_cancels_its_call_ringing_at_the_provider(
    settings: Settings, api_server: TestServer, edge_rpc: KamailioRpc, phone: MakePhone
) -> None:
    pool = pool_of(api_server)
    await both_workers_ready(pool)  # an earlier test's killed worker is back
    provider = TestPhone(auto_answer=None)  # rings until told otherwise
    await provider.open_unregistered(PROVIDER_NUMBER)
    try:
        caller, _ = await phone("Caller Ringing Out Through A Dying Worker")
        call = await caller.call(f"sip:{PROVIDER_NUMBER}@{settings.sip.host}:{settings.sip.port}")
        ringing = await provider.next_incoming(timeout=10)
        (worker,) = [w for w in pool.workers if w.legs_in_use]
        worker_uri = pool.dispatcher_targets()[worker.id]
        # The provider's 180 has reached the edge: it can CANCEL the INVITE now.
        await until_provider_call_is(edge_rpc, worker_uri, 2)
        restarts = pool.restarts
        await pool.kill_worker_for_test(worker.id)
        assert await asyncio.wait_for(ringing.ended, 5) == 487, "the provider got no CANCEL"
        # The caller's INVITE waited on the dead worker too: the edge answers it.
        assert await asyncio.wait_for(call.ended, 5) == 500
        await both_workers_ready(pool, restarts)
    finally:
        provider.close()
