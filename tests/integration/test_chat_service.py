"""Chat against a service of its own (own Redis and database, API only): queued dialogs keep
their order across a restart, and chats and calls share one capacity model."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from acd import agents
from acd.presence import direct_call_ended, direct_call_started
from api.routing import CONTEXT_KEY, CONTROLLER_KEY
from tests.conftest import ADMIN_TOKEN, make_settings
from tests.support.api_client import ApiClient
from tests.support.chat import (
    api_only_service,
    assigned,
    customer_says,
    dialog,
    new_agents,
    new_channel,
)


async def test_queued_dialogs_keep_their_order_across_a_restart(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    settings = make_settings(tmp_path / "service")
    async with api_only_service(settings) as (_app, base):
        admin = ApiClient(http, base, ADMIN_TOKEN)
        (agent,) = await new_agents(admin, 1, status="not_ready")
        channel = await new_channel(admin, members=[agent.user_id], distribution="in_order",
                                    max_open_dialogs=1)  # fmt: skip
        ids = [(await customer_says(admin.as_token(None), channel, f"restart-{i}")).body[
            "dialog_id"] for i in range(4)]  # fmt: skip
    async with api_only_service(settings) as (_app, base):  # the next run, same files
        admin = ApiClient(http, base, ADMIN_TOKEN)
        await admin.put(f"/users/{agent.user_id}/presence", {"status": "ready"})
        for position, dialog_id in enumerate(ids):
            assert (await assigned(admin, dialog_id))["assignee_id"] == agent.user_id
            later = [(await dialog(admin, i))["state"] for i in ids[position + 1 :]]
            assert later == ["new"] * len(later)
            assert (await agent.api.post(f"/dialogs/{dialog_id}/close")).status == 200


async def test_chats_and_calls_share_one_capacity(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    chat = {"chats_while_on_call": "false", "block_calls_at": 1}
    settings = make_settings(tmp_path / "service", chat=chat)
    async with api_only_service(settings) as (app, base):
        admin = ApiClient(http, base, ADMIN_TOKEN)
        ctx = app[CONTEXT_KEY]
        (agent,) = await new_agents(admin, 1)
        channel = await new_channel(admin, members=[agent.user_id])
        # Chat side: an agent on a call gets no chats while chats_while_on_call is false.
        await agents.change_presence(ctx, agent.user_id, direct_call_started, "test")
        dialog_id = (await customer_says(admin.as_token(None), channel, "cap")).body["dialog_id"]
        await asyncio.sleep(0.5)
        assert (await dialog(admin, dialog_id))["state"] == "new"
        await agents.change_presence(ctx, agent.user_id, direct_call_ended, "test")
        assert (await assigned(admin, dialog_id))["assignee_id"] == agent.user_id
        # Call side: one open dialog reaches block_calls_at, so no call offer until it closes.
        await admin.assign(agent.user_id, "7001")
        queue = await admin.post("/queues", {"name": "Capacity", "members": [agent.user_id]})
        # The dispatcher decides as soon as the events that concern it are in (settled: its
        # claims and reloads are done).
        dispatcher = app[CONTROLLER_KEY].dispatcher
        entry = dispatcher.join(queue.body["id"], call_id=1)
        await dispatcher.settled()
        assert entry.offers.empty()
        await agent.api.post(f"/dialogs/{dialog_id}/close")
        async with asyncio.timeout(10):
            offer = await entry.offers.get()
        assert [target.user_id for target in offer.agents] == [agent.user_id]
        await dispatcher.withdraw(agent.user_id, entry)
        await dispatcher.leave(entry)
