"""Chat assignment racing claims: an agent never holds more dialogs than its channel allows,
whether memory is behind SQL (a change whose event the assigner has not heard) or claims and
the assigner's placing hammer one agent at once."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

from aiohttp.test_utils import TestServer

from api.routing import CONTEXT_KEY, CONTROLLER_KEY
from chat import dialogs
from chat.assigner import ChatAssigner
from core.events import EventBus
from core.wakeups import Wakeups
from extensions.roles import Role
from extensions.tokens import Principal
from tests.support.api_client import ApiClient
from tests.support.chat import ChatAgent, assigned, customer_says, dialog, new_agents, new_channel


async def _held_by(admin: ApiClient, agent: ChatAgent) -> list[dict[str, Any]]:
    listed = await admin.get("/dialogs", params={"assignee_id": str(agent.user_id)})
    return [d for d in listed.body["items"] if d["state"] != "closed"]


async def test_a_claim_memory_has_not_heard_of_keeps_the_assigner_within_the_limit(
    admin: ApiClient, anonymous: ApiClient, api_server: TestServer
) -> None:
    assigner: ChatAssigner = api_server.app[CONTROLLER_KEY].chat_assigner
    ctx = api_server.app[CONTEXT_KEY]
    # Another writer whose events reach Redis but not this assigner (a second process, or a
    # request between its commit and its publish).
    quiet = Wakeups()
    elsewhere = dataclasses.replace(
        ctx, wakeups=quiet, events=EventBus(ctx.redis, ctx.metrics.events_published, quiet)
    )
    (agent,) = await new_agents(admin, 1, status="not_ready", role="admin")
    channel = await new_channel(admin, members=[agent.user_id], max_open_dialogs=1)
    older = (await customer_says(anonymous, channel, "race-older")).body["dialog_id"]
    hidden = (await customer_says(anonymous, channel, "race-hidden")).body["dialog_id"]
    await dialogs.claim(elsewhere, Principal(Role.ADMIN, agent.user_id, None), hidden)
    # Memory: the agent holds nothing and `older` waits, so a plan gives it `older`.
    assert (await agent.api.put(f"/users/{agent.user_id}/presence", {"status": "ready"})
            ).status == 200  # fmt: skip
    await assigner.assign_round(time.time())
    await assigner.assign_round(time.time())
    assert [d["id"] for d in await _held_by(admin, agent)] == [hidden]
    assert (await dialog(admin, older))["state"] == "new"
    # Memory now has SQL's word: once the hidden dialog closes, `older` is the agent's.
    assert (await agent.api.post(f"/dialogs/{hidden}/close")).status == 200
    assert (await assigned(admin, older))["assignee_id"] == agent.user_id


async def test_claims_and_assignment_hammering_one_agent_never_pass_its_limit(
    admin: ApiClient, anonymous: ApiClient
) -> None:
    (agent,) = await new_agents(admin, 1, status="not_ready", role="admin")
    channel = await new_channel(admin, members=[agent.user_id], max_open_dialogs=1)
    for round_ in range(5):
        waiting = [(await customer_says(anonymous, channel, f"hammer-{round_}-{i}")).body[
            "dialog_id"] for i in range(6)]  # fmt: skip
        # The assigner gives the agent the oldest as it turns ready; the agent claims all six.
        ready, *claims = await asyncio.gather(
            agent.api.put(f"/users/{agent.user_id}/presence", {"status": "ready"}),
            *(agent.api.post(f"/dialogs/{dialog_id}/claim") for dialog_id in waiting),
        )
        assert ready.status == 200
        for claim in claims:
            assert (claim.status, claim.error_code) in (
                (200, None), (409, "dialog_taken"), (409, "dialog_limit_reached"))  # fmt: skip
        await asyncio.sleep(0.1)  # let any pass still running finish
        held = await _held_by(admin, agent)
        assert len(held) == 1, held
        await agent.api.put(f"/users/{agent.user_id}/presence",
                            {"status": "not_ready", "reason": "break"})  # fmt: skip
        for dialog_id in waiting:
            await admin.post(f"/dialogs/{dialog_id}/close")
