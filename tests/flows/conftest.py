"""The service with in-memory media workers: its API, SQLite file and Redis are real; the
workers, the phones and Kamailio are the twin (pbx.memory_worker), so call flows run in
milliseconds. No PJSUA2 endpoint, SIPp or Kamailio is started here."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from api.app import create_app
from api.routing import CONTROLLER_KEY
from controller.component import MediaWorkers
from core.redis_server import ManagedRedis
from core.settings import Settings
from migrations import upgrade_database
from pbx.memory_worker import MemoryWorkers
from tests.conftest import ADMIN_TOKEN, make_settings
from tests.support.api_client import ApiClient
from tests.support.ports import free_port

RECORDING_ANNOUNCEMENT = "This call is recorded."
# Another node's edge in the cluster the flows run in (controller.shared_edge).
OTHER_EDGE = "127.0.0.9:5060"
# Longest a finished call may take to release its legs in the twin (no SIP round trips).
LEG_RELEASE_S = 2.0


@pytest.fixture(scope="session")
def flow_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    sip_port = free_port()
    return make_settings(
        tmp_path_factory.mktemp("flows"),
        sip={"port": str(sip_port)},
        cluster={"edges": json.dumps([f"127.0.0.1:{sip_port}", OTHER_EDGE])},
        # The twin plays the provider too: a Dial to the trunk is one more scripted far end.
        trunk={"uri": "sip:127.0.0.1:5999"},
        calls={"inter_digit_timeout": 0.3, "wait_after_greeting": 0.3},
        recording={"announcement": RECORDING_ANNOUNCEMENT},
    )


@pytest.fixture(scope="session")
async def flow_redis(flow_settings: Settings) -> AsyncIterator[ManagedRedis]:
    redis = flow_settings.redis
    server = ManagedRedis(redis.host, redis.port, flow_settings.data_dir / "redis")
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="session")
async def twin_session() -> MemoryWorkers:
    return MemoryWorkers()


@pytest.fixture(scope="session")
async def service(
    flow_settings: Settings, flow_redis: ManagedRedis, twin_session: MemoryWorkers
) -> AsyncIterator[TestServer]:
    flow_settings.data_dir.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(upgrade_database, flow_settings.database_url)
    twin = twin_session
    app = create_app(
        flow_settings, twin.phones, media_workers=MediaWorkers(twin, twin.edge, twin.phones)
    )
    server = TestServer(app, host="127.0.0.1", port=flow_settings.api.port)
    await server.start_server()
    yield server
    await server.close()


@pytest.fixture
async def twin(service: TestServer, twin_session: MemoryWorkers) -> AsyncIterator[MemoryWorkers]:
    """The service's in-memory workers; after the test every leg must be released (a leaked
    leg would shrink the pool and fail a later test far from the cause)."""
    twin_session.reset()
    yield twin_session
    pool = service.app[CONTROLLER_KEY].pool
    assert pool is not None
    try:
        await twin_session.until(lambda: pool.legs_in_use == 0, LEG_RELEASE_S)
    except TimeoutError:
        held = [f"{leg.id} {leg.direction} {leg.to_uri}" for leg in pool.live_legs()]
        pytest.fail(f"legs still held {LEG_RELEASE_S:g} s after the test: {held}")


@pytest.fixture
def admin(http: aiohttp.ClientSession, service: TestServer, flow_settings: Settings) -> ApiClient:
    return ApiClient(http, f"http://127.0.0.1:{flow_settings.api.port}/api/v1", ADMIN_TOKEN)


class Events:
    """The service's WebSocket event stream as one test reads it (opened before it acts)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._unread: list[tuple[str, dict[str, Any]]] = []

    async def next(self, type_: str, timeout: float = 5.0, **data: Any) -> dict[str, Any]:
        """The first event not returned yet of `type_` whose data has the given values;
        events of other kinds are kept for later calls, so the order of calls is free."""

        def wanted(event: tuple[str, dict[str, Any]]) -> bool:
            kind, payload = event
            return kind == type_ and all(payload.get(k) == v for k, v in data.items())

        async with asyncio.timeout(timeout):
            while not any(wanted(event) for event in self._unread):
                message = await self._ws.receive()
                assert message.type == aiohttp.WSMsgType.TEXT, message
                envelope: dict[str, Any] = json.loads(message.data)
                self._unread.append((envelope["type"], envelope["data"]))
        found = next(event for event in self._unread if wanted(event))
        self._unread.remove(found)
        return found[1]


@pytest.fixture
async def events(
    http: aiohttp.ClientSession, service: TestServer, flow_settings: Settings
) -> AsyncIterator[Events]:
    url = f"http://127.0.0.1:{flow_settings.api.port}/api/v1/events?token={ADMIN_TOKEN}"
    async with http.ws_connect(url) as ws:
        yield Events(ws)
