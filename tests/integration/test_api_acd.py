"""Presence and queue resources: validation, roles, conflicts, events, persistence in Redis."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from tests.conftest import ADMIN_TOKEN
from tests.integration.test_event_stream import next_event
from tests.support.api_client import ApiClient


async def set_presence(client: ApiClient, user_id: int, status: str, **extra: Any) -> Any:
    reply = await client.put(f"/users/{user_id}/presence", {"status": status, **extra})
    assert reply.status == 200, reply
    return reply.body


async def test_presence_defaults_to_logged_out_and_is_set_by_the_agent(admin: ApiClient) -> None:
    me = await admin.new_user("Paula Presence")
    agent = admin.as_token(await admin.token_for(me["id"]))
    first = await agent.get(f"/users/{me['id']}/presence")
    assert first.status == 200 and first.body["status"] == "logged_out"
    assert first.body["activity"] == "idle"
    body = await set_presence(agent, me["id"], "not_ready", reason="break", message="back at 2")
    assert (body["status"], body["reason"], body["message"]) == ("not_ready", "break", "back at 2")
    assert body["since"] is not None
    ready = await set_presence(agent, me["id"], "ready")
    assert ready["reason"] is None and ready["message"] is None


async def test_agents_set_only_their_own_presence_supervisors_anyone(admin: ApiClient) -> None:
    me = await admin.new_user("Own Presence")
    other = await admin.new_user("Other Presence")
    boss = await admin.new_user("Presence Boss", role="supervisor")
    agent = admin.as_token(await admin.token_for(me["id"]))
    supervisor = admin.as_token(await admin.token_for(boss["id"]))
    refused = await agent.put(f"/users/{other['id']}/presence", {"status": "ready"})
    assert refused.status == 403 and refused.error_code == "forbidden"
    assert (await set_presence(supervisor, other["id"], "away"))["status"] == "away"
    # Colleagues see each other's status and not-ready reason.
    assert (await agent.get(f"/users/{other['id']}/presence")).body["status"] == "away"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"status": "in_call"}, "status"),
        ({"status": "ringing"}, "status"),
        ({"status": "sleeping"}, "status"),
        ({"status": "not_ready"}, "reason"),
        ({"status": "not_ready", "reason": "nap"}, "reason"),
        ({"status": "ready", "reason": "break"}, "reason"),
        ({"status": "ready", "message": "x" * 201}, "message"),
        ({"status": "ready", "mood": "happy"}, "mood"),
    ],
)
async def test_illegal_presence_is_422_naming_the_field(
    admin: ApiClient, body: dict[str, Any], field: str
) -> None:
    user = await admin.new_user("Illegal Presence")
    reply = await admin.put(f"/users/{user['id']}/presence", body)
    assert reply.status == 422, reply
    assert reply.body["error"]["field"] == field
    assert (await admin.get(f"/users/{user['id']}/presence")).body["status"] == "logged_out"


async def test_presence_of_unknown_or_dismissed_users(admin: ApiClient) -> None:
    assert (await admin.get("/users/999999/presence")).status == 404
    assert (await admin.put("/users/999999/presence", {"status": "ready"})).status == 404
    gone = await admin.new_user("Gone Agent")
    await set_presence(admin, gone["id"], "ready")
    assert (await admin.patch(f"/users/{gone['id']}", {"active": False})).status == 200
    assert (await admin.get(f"/users/{gone['id']}/presence")).body["status"] == "logged_out"
    refused = await admin.put(f"/users/{gone['id']}/presence", {"status": "ready"})
    assert refused.status == 409 and refused.error_code == "user_inactive"


async def test_wrap_up_by_hand_and_ended_early(admin: ApiClient) -> None:
    user = await admin.new_user("Wrapper")
    wrapping = await set_presence(admin, user["id"], "wrap_up")
    assert wrapping["status"] == "wrap_up" and wrapping["wrap_up_until"] is not None
    assert (await set_presence(admin, user["id"], "ready"))["wrap_up_until"] is None


async def test_wrap_up_by_hand_lasts_the_agents_own_time(admin: ApiClient) -> None:
    user = await admin.new_user("Slow Wrapper")
    assert (await admin.patch(f"/users/{user['id']}", {"wrap_up_time": 900})).status == 200
    wrapping = await set_presence(admin, user["id"], "wrap_up")
    until = datetime.fromisoformat(wrapping["wrap_up_until"])
    # acd.wrap_up_time (30 s by default) would end it long before.
    assert until - datetime.now(UTC) > timedelta(seconds=800)


async def test_wallboard_lists_everyone_with_reasons(admin: ApiClient) -> None:
    user = await admin.new_user("Board Member")
    await set_presence(admin, user["id"], "not_ready", reason="lunch")
    board = await admin.get("/presence")
    assert board.status == 200
    mine = next(item for item in board.body["items"] if item["user_id"] == user["id"])
    assert (mine["name"], mine["status"], mine["reason"]) == ("Board Member", "not_ready", "lunch")
    assert "break" in board.body["not_ready_reasons"]


async def test_presence_changes_are_events_and_history(
    admin: ApiClient, http: aiohttp.ClientSession, api_base: str
) -> None:
    user = await admin.new_user("Evented Agent")
    url = api_base.replace("http", "ws") + "/events?types=presence_changed"
    async with http.ws_connect(url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as ws:
        await set_presence(admin, user["id"], "dnd", message="focus time")
        event = await next_event(ws, "presence_changed", lambda d: d["user_id"] == user["id"])
    data = event["data"]
    assert (data["user_id"], data["status"], data["message"]) == (user["id"], "dnd", "focus time")
    assert data["previous"] == {"status": "logged_out", "activity": "idle"}
    assert data["cause"] == "admin"


async def test_queue_create_read_patch_delete(
    admin: ApiClient, next_extension: Callable[[], str]
) -> None:
    a, b = await admin.new_user("Member A"), await admin.new_user("Member B")
    extension = next_extension()
    created = await admin.post("/queues", {
        "name": "Support", "extension": extension, "members": [a["id"], b["id"]],
        "strategy": "in_order", "ring_timeout": 15, "exit_key": "0",
        "overflow": {"type": "hangup"},
    })  # fmt: skip
    assert created.status == 201, created
    queue = created.body
    assert queue["members"] == [a["id"], b["id"]] and queue["wrap_up_time"] == 10
    assert (await admin.get(f"/queues/{queue['id']}")).body == queue
    # The queue's extension is in the shared namespace.
    taken = await admin.put(f"/users/{a['id']}/extension", {"extension": extension})
    assert taken.status == 409 and taken.error_code == "extension_taken"
    listed = (await admin.get("/extensions")).body["items"]
    assert any(e["extension"] == extension for e in listed)
    change = {"members": [b["id"]], "extension": None, "exit_key": None}
    patched = await admin.patch(f"/queues/{queue['id']}", change)
    assert patched.status == 200, patched
    assert patched.body["members"] == [b["id"]] and patched.body["extension"] is None
    assert (await admin.put(f"/users/{a['id']}/extension", {"extension": extension})).status == 200
    assert (await admin.delete(f"/queues/{queue['id']}")).status == 204
    assert (await admin.get(f"/queues/{queue['id']}")).status == 404


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ({"members": [999999]}, 422, "invalid_members", "members"),
        ({"strategy": "loudest"}, 422, "validation_error", "strategy"),
        ({"ring_timeout": 1}, 422, "validation_error", "ring_timeout"),
        ({"exit_key": "x"}, 422, "validation_error", "exit_key"),
        ({"when_no_agents": "panic"}, 422, "validation_error", "when_no_agents"),
        ({"overflow": {"type": "menu", "id": 999999}}, 422, "unknown_menu", "overflow.id"),
        ({"hold_music_prompt_id": 999999}, 422, "unknown_prompt", "hold_music.prompt_id"),
        ({"extension": "12345"}, 422, "validation_error", "extension"),
    ],
)
async def test_invalid_queue_is_refused_naming_the_field(
    admin: ApiClient, body: dict[str, Any], status: int, code: str, field: str
) -> None:
    reply = await admin.post("/queues", {"name": f"Bad queue {field}", **body})
    assert reply.status == status, reply
    assert reply.error_code == code
    assert reply.body["error"]["field"] == field


async def test_duplicate_members_names_and_self_overflow(admin: ApiClient) -> None:
    user = await admin.new_user("Twice")
    twice = await admin.post("/queues", {"name": "Twice", "members": [user["id"], user["id"]]})
    assert twice.error_code == "invalid_members"
    first = await admin.post("/queues", {"name": "Unique name"})
    assert first.status == 201
    again = await admin.post("/queues", {"name": "Unique name"})
    assert again.status == 409 and again.error_code == "queue_name_taken"
    loop = await admin.patch(f"/queues/{first.body['id']}",
                             {"overflow": {"type": "queue", "id": first.body["id"]}})  # fmt: skip
    assert loop.status == 422 and loop.error_code == "invalid_overflow"
    await admin.delete(f"/queues/{first.body['id']}")


@pytest.mark.parametrize("priority", [None, 0, 7])
async def test_a_queue_in_use_cannot_be_deleted(admin: ApiClient, priority: int | None) -> None:
    """Whatever priority the destination gives (it is stored with the destination)."""
    queue = (await admin.post("/queues", {"name": f"Routed to {priority}"})).body
    destination = {"type": "queue", "id": queue["id"]}
    if priority is not None:
        destination["priority"] = priority
    number = await admin.post("/numbers", {
        "number": "+4930999111", "greeting": {"text": "Hi"}, "default_destination": destination,
    })  # fmt: skip
    assert number.status == 201, number
    refused = await admin.delete(f"/queues/{queue['id']}")
    assert refused.status == 409 and refused.error_code == "queue_in_use"
    assert refused.body["error"]["references"]["numbers"] == ["+4930999111"]
    await admin.delete(f"/numbers/{number.body['id']}")
    assert (await admin.delete(f"/queues/{queue['id']}")).status == 204


async def test_dismissed_user_leaves_every_queue(admin: ApiClient) -> None:
    stays, leaves = await admin.new_user("Stays"), await admin.new_user("Leaves")
    members = [leaves["id"], stays["id"]]
    queue = (await admin.post("/queues", {"name": "Dismissal", "members": members})).body
    await admin.patch(f"/users/{leaves['id']}", {"active": False})
    assert (await admin.get(f"/queues/{queue['id']}")).body["members"] == [stays["id"]]
    await admin.delete(f"/queues/{queue['id']}")


async def test_operators_cannot_manage_queues(admin: ApiClient) -> None:
    me = await admin.new_user("Queue Operator")
    operator = admin.as_token(await admin.token_for(me["id"]))
    assert (await operator.post("/queues", {"name": "Mine"})).status == 403
    assert (await operator.get("/queues")).status == 403
    assert (await operator.get("/queue-log")).status == 403
