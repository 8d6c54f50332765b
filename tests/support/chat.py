"""Chat as the tests need it: agents with their own tokens, channels, a customer's connector,
and a second API-only service (own Redis and database) for settings the session lacks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from api.app import create_app
from core.redis_server import ManagedRedis
from core.settings import Settings
from migrations import upgrade_database
from tests.support.api_client import ApiClient, Reply


@dataclass
class ChatAgent:
    user_id: int
    api: ApiClient


async def new_agents(admin: ApiClient, count: int, status: str | None = "ready",
                     role: str = "operator") -> list[ChatAgent]:  # fmt: skip
    made = []
    for i in range(count):
        user = await admin.new_user(f"Chat agent {i}", role=role)
        if status is not None:
            body: dict[str, Any] = {"status": status}
            if status == "not_ready":
                body["reason"] = "break"
            assert (await admin.put(f"/users/{user['id']}/presence", body)).status == 200
        made.append(ChatAgent(user["id"], admin.as_token(await admin.token_for(user["id"]))))
    return made


_names = iter(range(1_000_000))


async def new_channel(admin: ApiClient, **fields: Any) -> dict[str, Any]:
    reply = await admin.post("/channels", {"name": f"Channel {next(_names)}", **fields})
    assert reply.status == 201, reply
    channel: dict[str, Any] = reply.body
    return channel


async def customer_says(client: ApiClient, channel: dict[str, Any], customer: str, text: str = "hi",
                        secret: str | None = None, name: str | None = None) -> Reply:  # fmt: skip
    """POST .../inbound as the channel's connector (no token; the channel's secret)."""
    headers = {"X-Channel-Secret": channel["inbound_secret"] if secret is None else secret}
    who: dict[str, Any] = {"id": customer} | ({"name": name} if name else {})
    url = f"{client.base_url}/channels/{channel['id']}/inbound"
    async with client.session.post(url, json={"customer": who, "text": text},
                                   headers=headers) as response:  # fmt: skip
        return Reply(response.status, await response.json())


async def eventually(probe: Callable[[], Awaitable[Any]], check: Callable[[Any], bool],
                     timeout: float = 10.0) -> Any:  # fmt: skip
    async with asyncio.timeout(timeout):
        while True:
            value = await probe()
            if check(value):
                return value
            await asyncio.sleep(0.05)


async def dialog(admin: ApiClient, dialog_id: int) -> dict[str, Any]:
    reply = await admin.get(f"/dialogs/{dialog_id}")
    assert reply.status == 200, reply
    body: dict[str, Any] = reply.body
    return body


async def assigned(admin: ApiClient, dialog_id: int, timeout: float = 10.0) -> dict[str, Any]:
    found: dict[str, Any] = await eventually(
        lambda: dialog(admin, dialog_id), lambda d: d["assignee_id"] is not None, timeout
    )
    return found


@asynccontextmanager
async def api_only_service(settings: Settings) -> AsyncIterator[tuple[web.Application, str]]:
    """Its own Redis and migrated database, the API without media workers; yields the app
    and its base URL. Entering it twice with the same settings is a restart."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(upgrade_database, settings.database_url)
    redis = ManagedRedis(settings.redis.host, settings.redis.port, settings.data_dir / "redis")
    app = create_app(settings, media_workers=False)
    server = TestServer(app, host="127.0.0.1", port=settings.api.port)
    async with AsyncExitStack() as started:
        await redis.start()
        started.push_async_callback(redis.stop)
        await server.start_server()
        started.push_async_callback(server.close)
        yield app, f"http://127.0.0.1:{settings.api.port}/api/v1"


class FlakyReceiver:
    """A channel's reply_url on 127.0.0.1 that answers 500 `failures` times, then 200."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.accepted: list[dict[str, Any]] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append((dict(request.headers), body))
        if len(self.requests) <= self.failures:
            return web.Response(status=500)
        self.accepted.append(await request.json())
        return web.Response(status=200)

    async def __aenter__(self) -> FlakyReceiver:
        app = web.Application()
        app.router.add_post("/replies", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/replies"
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()
