"""Controllers sharing one database and one Redis (`[cluster] node`): the node holding the
lease runs the controller, the others stand by and take over once it is given up or has run
out. Real Redis and SQL; the nodes run in this process (test_cluster_takeover kills one)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from api.app import create_app
from api.routing import CONTEXT_KEY
from controller.lease import NodeInUse, RedisLease, Renewal, acting_deadline
from core.redis_server import ManagedRedis
from core.settings import MAX_NODES, Settings
from migrations import upgrade_database
from tests.conftest import ADMIN_TOKEN, make_settings
from tests.support.api_client import ApiClient
from tests.support.chat import customer_says, new_channel
from tests.support.ports import free_port

TERM_S = 1.0
SECRET = "cluster-test-secret-0123"
# A standby must run the controller within this long of the active node's end (#16's target).
TAKEOVER_S = 5.0


@pytest.fixture
async def shared_redis(tmp_path: Path) -> AsyncIterator[int]:
    port = free_port()
    server = ManagedRedis("127.0.0.1", port, tmp_path / "redis")
    await server.start()
    yield port
    await server.stop()


def node_settings(folder: Path, node: str, index: int, redis_port: int, database: str) -> Settings:
    return make_settings(
        folder / node, redis={"port": redis_port, "managed": False},
        database={"url": database},
        cluster={"node": node, "node_index": index, "lease_seconds": TERM_S, "secret": SECRET},
    )  # fmt: skip


async def health(http: aiohttp.ClientSession, settings: Settings) -> dict[str, Any]:
    async with http.get(f"http://127.0.0.1:{settings.api.port}/api/v1/health") as reply:
        body: dict[str, Any] = await reply.json()
        return body


async def until_role(
    http: aiohttp.ClientSession, settings: Settings, role: str, timeout: float = TAKEOVER_S
) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while (found := await health(http, settings))["controller"]["role"] != role:
            await asyncio.sleep(0.05)
    return found["controller"]  # type: ignore[no-any-return]


async def test_the_lease_is_one_nodes_until_it_is_given_up_or_runs_out(shared_redis: int) -> None:
    url = f"redis://127.0.0.1:{shared_redis}/0"
    a, b = RedisLease(url, "a", TERM_S), RedisLease(url, "b", TERM_S)
    try:
        assert await a.acquire() is Renewal.RENEWED
        assert await b.acquire() is Renewal.LOST
        assert await a.renew() is Renewal.RENEWED and await b.renew() is Renewal.LOST
        await b.release()  # not b's to give up
        assert await b.holder() == "a"
        async with asyncio.timeout(TERM_S * 3):  # a stops renewing: it runs out
            while await b.acquire() is not Renewal.RENEWED:
                await asyncio.sleep(0.05)
        assert await a.renew() is Renewal.LOST and await a.holder() == "b"
        await b.release()
        assert await a.holder() is None
    finally:
        await a.close()
        await b.close()


async def test_a_lease_holder_that_cannot_reach_redis_stops_acting_before_it_runs_out() -> None:
    """Renewals that time out keep the lease only until the acting deadline, a renewal
    interval before the key can have expired for the other nodes."""
    silent = RedisLease(f"redis://127.0.0.1:{free_port()}/0", "a", TERM_S)  # nobody listens
    try:
        assert await silent.renew() is Renewal.UNKNOWN
        assert await silent.holder() is None
    finally:
        await silent.close()
    renewed_at = 100.0
    assert acting_deadline(renewed_at, TERM_S) == pytest.approx(renewed_at + TERM_S * 2 / 3)


async def test_a_standby_node_takes_over_when_the_active_one_stops(
    tmp_path: Path, shared_redis: int
) -> None:
    (tmp_path / "db").mkdir()
    database = make_settings(tmp_path / "db").database_url  # PostgreSQL's, if the suite's
    await asyncio.to_thread(upgrade_database, database)
    a = node_settings(tmp_path, "a", 0, shared_redis, database)
    b = node_settings(tmp_path, "b", 1, shared_redis, database)
    server_a = TestServer(create_app(a, media_workers=False), host="127.0.0.1", port=a.api.port)
    server_b = TestServer(create_app(b, media_workers=False), host="127.0.0.1", port=b.api.port)
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        await server_a.start_server()
        try:
            assert await until_role(http, a, "active") == {
                "role": "active", "node": "a", "active_node": "a",
            }  # fmt: skip
            await server_b.start_server()
            assert await until_role(http, b, "standby") == {
                "role": "standby", "node": "b", "active_node": "a",
            }  # fmt: skip
            # Either node answers for the cluster: b passes requests on to a, whose
            # controller takes the customer's message as on a single node.
            via_b = ApiClient(http, f"http://127.0.0.1:{b.api.port}/api/v1", ADMIN_TOKEN)
            stream = f"http://127.0.0.1:{b.api.port}/api/v1/events?token={ADMIN_TOKEN}"
            async with http.ws_connect(stream) as events:  # b's own, fed through Redis
                channel = await new_channel(via_b)
                async with asyncio.timeout(10):
                    while True:
                        envelope = json.loads((await events.receive()).data)
                        if envelope["type"] == "channel_created":
                            break
                assert envelope["data"]["id"] == channel["id"]
            said = await customer_says(via_b, channel, "customer-1", "hello")
            assert said.status == 201, said
            assert (await via_b.get(f"/dialogs/{said.body['dialog_id']}")).status == 200
        finally:
            await server_a.close()  # its lease is given up: b need not wait for it to run out
        try:
            assert (await until_role(http, b, "active"))["active_node"] == "b"
            said = await customer_says(via_b, channel, "customer-2", "still there?")
            assert said.status == 201, said
            # Rows b writes behind the call take ids of its own residue.
            ctx = server_b.app[CONTEXT_KEY]
            assert ctx.writes.next_id("calls") % MAX_NODES == 1
        finally:
            await server_b.close()


async def test_a_node_with_a_live_nodes_name_or_index_does_not_start(
    tmp_path: Path, shared_redis: int
) -> None:
    (tmp_path / "db").mkdir()
    database = make_settings(tmp_path / "db").database_url
    await asyncio.to_thread(upgrade_database, database)
    a = node_settings(tmp_path, "a", 0, shared_redis, database)
    server_a = TestServer(create_app(a, media_workers=False), host="127.0.0.1", port=a.api.port)
    await server_a.start_server()
    try:
        for name, index in (("c", 0), ("a", 1)):
            twin = node_settings(tmp_path / "twins", name, index, shared_redis, database)
            app = create_app(twin, media_workers=False)
            server = TestServer(app, host="127.0.0.1", port=twin.api.port)
            with pytest.raises(NodeInUse, match="another live node"):
                await server.start_server()
            await server.close()
    finally:
        await server_a.close()
    # Once a has stopped, its name and index are free at once.
    again = node_settings(tmp_path / "again", "c", 0, shared_redis, database)
    server_c = TestServer(create_app(again, media_workers=False), host="127.0.0.1",
                          port=again.api.port)  # fmt: skip
    await server_c.start_server()
    await server_c.close()
