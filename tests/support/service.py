"""A second, complete service for tests that need other settings than the session's: its own
Redis, migrated database, Kamailio, API and media workers, on free loopback ports."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from aiohttp.test_utils import TestServer

from api.app import create_app
from core.redis_server import ManagedRedis
from core.settings import Settings
from migrations import upgrade_database
from pbx.kamailio import KamailioProcess


@asynccontextmanager
async def running_service(settings: Settings) -> AsyncIterator[str]:
    """Start everything `pbx run` starts, for these settings; yields the API's base URL."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(upgrade_database, settings.database_url)
    redis = ManagedRedis(settings.redis.host, settings.redis.port, settings.data_dir / "redis")
    kamailio = KamailioProcess(settings)
    server = TestServer(create_app(settings), host="127.0.0.1", port=settings.api.port)
    async with AsyncExitStack() as started:
        await redis.start()
        started.push_async_callback(redis.stop)
        await kamailio.start()
        started.push_async_callback(kamailio.stop)
        await server.start_server()
        started.push_async_callback(server.close)
        yield f"http://127.0.0.1:{settings.api.port}/api/v1"
