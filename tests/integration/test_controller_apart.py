"""The controller and the API, each working without the other (real Redis and SQLite; no
Kamailio, no media workers)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from acd import agents
from acd.queues import QueueSpec, create_queue
from api.app import create_app
from controller.component import Controller
from controller.plumbing import open_plumbing
from core.metrics import Metrics
from core.redis_server import ManagedRedis
from core.settings import Settings
from extensions.phones import assign_extension
from extensions.roles import Role
from extensions.users import create_user
from migrations import upgrade_database
from tests.conftest import ADMIN_TOKEN, make_settings


@pytest.fixture
async def own_services(tmp_path: Path) -> AsyncIterator[Settings]:
    """A database and a Redis of this test's own: nothing of the session's service runs."""
    settings = make_settings(tmp_path / "data")
    settings.data_dir.mkdir(parents=True)
    await asyncio.to_thread(upgrade_database, settings.database_url)
    redis = ManagedRedis(settings.redis.host, settings.redis.port, settings.data_dir / "redis")
    await redis.start()
    try:
        yield settings
    finally:
        await redis.stop()


async def test_the_controller_offers_a_caller_to_an_agent_with_no_web_app(
    own_services: Settings,
) -> None:
    async with open_plumbing(own_services, Metrics()) as plumbing:
        ctx = plumbing.ctx
        controller = Controller(ctx, plumbing.edge, media_workers=False)
        await controller.start()
        try:
            user = await create_user(ctx, name="Alone", email=None, role=Role.OPERATOR)
            await assign_extension(ctx, user.id, "4711")
            queue = await create_queue(ctx, QueueSpec(name="Alone", members=(user.id,)))
            entry = controller.dispatcher.join(queue.id, call_id=1)
            assert [w.ringing for w in controller.waiting_callers(queue.id)] == [False]
            await agents.choose(ctx, user.id, "ready", reason=None, message=None, by="test")
            async with asyncio.timeout(10):
                offer = await entry.offers.get()
            assert [(a.user_id, a.extension) for a in offer.agents] == [(user.id, "4711")]
            assert [w.ringing for w in controller.waiting_callers(queue.id)] == [True]
            await controller.dispatcher.withdraw(user.id, entry)
            await controller.dispatcher.leave(entry)
        finally:
            await controller.stop()


async def test_the_api_serves_without_a_controller(own_services: Settings) -> None:
    settings = own_services
    server = TestServer(create_app(settings, controller=False), host="127.0.0.1",
                        port=settings.api.port)  # fmt: skip
    await server.start_server()
    base = f"http://127.0.0.1:{settings.api.port}"
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    try:
        async with aiohttp.ClientSession(headers=headers) as http:
            async with http.post(f"{base}/api/v1/queues", json={"name": "No controller"}) as made:
                assert made.status == 201, await made.text()
                queue = await made.json()
            async with http.get(f"{base}/api/v1/queues/{queue['id']}/waiting") as waiting:
                assert waiting.status == 200
                assert (await waiting.json())["items"] == []
            async with http.get(f"{base}/metrics") as metrics:
                assert metrics.status == 200
                assert "pbx_worker_pool_workers{" not in await metrics.text()  # no pool, no samples
    finally:
        await server.close()
