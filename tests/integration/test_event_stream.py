"""The WebSocket event stream: live user/extension events, replay with ?since, role checks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer

from api.events import HUB_KEY
from api.routing import CONTEXT_KEY
from tests.conftest import ADMIN_TOKEN
from tests.support.api_client import ApiClient
from tests.support.events import unpersisted_events


async def next_event(
    ws: aiohttp.ClientWebSocketResponse, type_: str,
    where: Callable[[dict[str, Any]], bool] = lambda _data: True,
) -> dict[str, Any]:  # fmt: skip
    """The next event of `type_` whose data `where` accepts (others' events are skipped: an
    earlier test's may still be on their way)."""
    async with asyncio.timeout(5):
        while True:
            message = await ws.receive()
            assert message.type == aiohttp.WSMsgType.TEXT, message
            envelope: dict[str, Any] = json.loads(message.data)
            if envelope["type"] == type_ and where(envelope["data"]):
                return envelope


async def test_user_and_extension_changes_are_published_live(
    admin: ApiClient,
    http: aiohttp.ClientSession,
    api_base: str,
    next_extension: Callable[[], str],
) -> None:
    url = api_base + "/events"
    async with http.ws_connect(url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as ws:
        user = await admin.new_user("Eve Events")
        created = await next_event(ws, "user_created")
        assert created["v"] == 1 and created["data"]["id"] == user["id"]
        assert {"id", "type", "time", "data"} <= created.keys()
        number = next_extension()
        await admin.assign(user["id"], number)
        assigned = await next_event(ws, "extension_assigned")
        assert assigned["data"] == {
            "extension": number,
            "holder": {"type": "user", "id": user["id"]},
        }
        await admin.post(f"/users/{user['id']}/sip-password")
        assert (await next_event(ws, "sip_password_reset"))["data"]["extension"] == number
        await admin.patch(f"/users/{user['id']}", {"active": False})
        released = await next_event(ws, "extension_released")
        assert released["data"]["extension"] == number
        dismissed = await next_event(ws, "user_dismissed")
        assert dismissed["data"]["active"] is False
        assert dismissed["id"] > released["id"] > assigned["id"] > created["id"]


async def test_since_replays_persisted_events_then_goes_live(
    admin: ApiClient, http: aiohttp.ClientSession, api_base: str
) -> None:
    first = await admin.new_user("Before Connect")
    url = f"{api_base}/events?token={ADMIN_TOKEN}&since=0&types=user_created"
    async with http.ws_connect(url) as ws:
        seen: list[int] = []
        async with asyncio.timeout(5):
            while first["id"] not in seen:
                seen.append(json.loads((await ws.receive()).data)["data"]["id"])
        later = await admin.new_user("After Connect")
        assert (await next_event(ws, "user_created"))["data"]["id"] == later["id"]


async def test_event_stream_needs_a_staff_token(
    admin: ApiClient, http: aiohttp.ClientSession, api_base: str
) -> None:
    async with http.get(api_base + "/events") as response:
        assert response.status == 401
    operator = await admin.new_user("No Wallboard")
    token = await admin.token_for(operator["id"])
    async with http.get(
        api_base + "/events", headers={"Authorization": f"Bearer {token}"}
    ) as response:
        assert response.status == 403
    async with http.get(
        api_base + "/events?since=x", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    ) as response:
        assert response.status == 422


async def test_a_slow_client_is_dropped_while_a_fast_one_keeps_receiving(
    api_server: TestServer, http: aiohttp.ClientSession, api_base: str
) -> None:
    ctx = api_server.app[CONTEXT_KEY]

    def dropped() -> float:
        return ctx.metrics.registry.get_sample_value("pbx_event_stream_clients_dropped_total") or 0

    dropped_before = dropped()
    url = f"{api_base}/events?token={ADMIN_TOKEN}&types=slow_client_test"
    async with http.ws_connect(url) as slow, http.ws_connect(url) as fast:
        # The slow client reads nothing: once the socket buffers are full its backlog grows
        # by every event. Batches of 8 KiB events until it passes CLIENT_BACKLOG; the fast
        # client reads each batch before the next, so it never falls behind.
        async with asyncio.timeout(60):
            while dropped() == dropped_before:
                batch = unpersisted_events("slow_client_test", 200, padding=8192)
                await ctx.events.publish(*batch)
                assert (await next_event(fast, "slow_client_test"))["id"] == batch[0].id
                for event in batch[1:]:
                    assert json.loads((await fast.receive()).data)["id"] == event.id
            assert dropped() == dropped_before + 1
            (after,) = unpersisted_events("slow_client_test", 1)
            await ctx.events.publish(after)
            assert (await next_event(fast, "slow_client_test"))["id"] == after.id
            # The slow client gets what was already in flight, then a close it can act on.
            while (message := await slow.receive()).type == aiohttp.WSMsgType.TEXT:
                pass
        assert message.type == aiohttp.WSMsgType.CLOSE
        assert slow.close_code == aiohttp.WSCloseCode.TRY_AGAIN_LATER
        assert "since" in message.extra


async def test_a_plain_get_of_the_stream_is_refused_and_leaves_no_subscription(
    api_server: TestServer, admin: ApiClient
) -> None:
    hub = api_server.app[HUB_KEY]
    before = hub.clients
    for _ in range(3):
        reply = await admin.get("/events")
        assert reply.status == 400 and reply.error_code == "bad_request"
    assert hub.clients == before
