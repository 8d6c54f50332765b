"""The WebSocket event stream: live user/extension events, replay with ?since, an operator's
share of it."""

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
from tests.support.chat import customer_says, new_agents, new_channel
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


async def test_event_stream_needs_a_token(
    admin: ApiClient, http: aiohttp.ClientSession, api_base: str
) -> None:
    async with http.get(api_base + "/events") as response:
        assert response.status == 401
    async with http.get(
        api_base + "/events?since=x", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    ) as response:
        assert response.status == 422


async def test_an_operator_sees_only_their_own_events_and_an_admin_all(
    admin: ApiClient, anonymous: ApiClient, http: aiohttp.ClientSession, api_base: str
) -> None:
    a, b = await new_agents(admin, 2)
    assert a.api.token is not None
    url = api_base + "/events"
    async with (
        http.ws_connect(url, headers={"Authorization": f"Bearer {a.api.token}"}) as mine,
        http.ws_connect(url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as every,
    ):
        # B's presence and dialog first, then A's: the admin's stream shows all of them.
        for agent in (b, a):
            await agent.api.put(f"/users/{agent.user_id}/presence", {"status": "away"})
            await next_event(
                every, "presence_changed", lambda d, u=agent.user_id: d["user_id"] == u
            )
        b_channel = await new_channel(admin, members=[b.user_id])
        a_channel = await new_channel(admin, members=[a.user_id])
        for agent, channel in ((b, b_channel), (a, a_channel)):
            await agent.api.put(f"/users/{agent.user_id}/presence", {"status": "ready"})
            reply = await customer_says(anonymous, channel, f"customer of {agent.user_id}")
            assert reply.status == 201, reply
            await next_event(every, "dialog_assigned",
                             lambda d, u=agent.user_id: d["assignee_id"] == u)  # fmt: skip
        a_dialog = reply.body["dialog_id"]
        reply = await customer_says(anonymous, a_channel, f"customer of {a.user_id}", "again")
        assert reply.status == 201, reply
        await next_event(every, "message_received", lambda d: d["dialog_id"] == a_dialog)
        # The last of A's events: everything A's stream carries before it was published
        # before it, so what A did not get by then A never gets.
        await a.api.put(f"/users/{a.user_id}/presence", {"status": "not_ready", "reason": "break"})
        last = {"user_id": a.user_id, "status": "not_ready"}
        await next_event(every, "presence_changed", lambda d: d.items() >= last.items())
        received = await until_presence(mine, a.user_id, "not_ready")
    seen = [(e["type"], e["data"].get("status")) for e in received]
    assert ("presence_changed", "away") in seen and ("presence_changed", "ready") in seen
    assert [e["data"]["id"] for e in received if e["type"] == "dialog_assigned"] == [a_dialog]
    assert [e["data"]["text"] for e in received if e["type"] == "message_received"] == ["again"]
    for envelope in received:
        data = envelope["data"]
        about_a = a.user_id in (data.get("user_id"), data.get("assignee_id"))
        assert about_a or data.get("dialog_id") == a_dialog, envelope
    # A replay gives the operator the share the live stream did.
    since = received[0]["id"] - 1
    async with http.ws_connect(f"{url}?since={since}&token={a.api.token}") as replay:
        replayed = await until_presence(replay, a.user_id, "not_ready")
    # Its viewer starts from A's dialogs now, so it may add the creation of one A holds now.
    assert [e for e in replayed if e["type"] != "dialog_created"] == received
    assert all(e["data"]["id"] == a_dialog for e in replayed if e["type"] == "dialog_created")


async def until_presence(
    ws: aiohttp.ClientWebSocketResponse, user_id: int, status: str
) -> list[dict[str, Any]]:
    """Every event up to and including `user_id`'s change to `status`."""
    received: list[dict[str, Any]] = []
    async with asyncio.timeout(5):
        while True:
            received.append(json.loads((await ws.receive()).data))
            data = received[-1]["data"]
            if received[-1]["type"] == "presence_changed" and data["user_id"] == user_id and (
                data["status"] == status
            ):  # fmt: skip
                return received


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
