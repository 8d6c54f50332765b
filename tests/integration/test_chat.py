"""Chat channels through the API with real Redis and SQL: channels, the connector, assignment
per mode, limits, availability, idle moves with an injected clock, forward/close/rate, claim
collisions, the outbox against a flaky receiver, roles, blocklist, canned responses, stats."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from typing import Any

from aiohttp.test_utils import TestServer

from api.routing import CONTEXT_KEY, CONTROLLER_KEY
from chat import blocklist
from chat.assigner import ChatAssigner
from tests.conftest import ADMIN_TOKEN
from tests.integration.test_event_stream import next_event
from tests.support.api_client import ApiClient, Reply
from tests.support.chat import (
    FlakyReceiver,
    assigned,
    customer_says,
    dialog,
    eventually,
    new_agents,
    new_channel,
)


async def test_channel_is_created_read_changed_and_deleted_with_its_dialogs(
    admin: ApiClient, anonymous: ApiClient
) -> None:
    (agent,) = await new_agents(admin, 1)
    channel = await new_channel(
        admin, members=[agent.user_id], distribution="in_order", max_open_dialogs=3,
        limit_excludes=["waiting"], idle_seconds=30,
        working_hours={"timezone": "Europe/Berlin", "days": {"mon": ["09:00-17:00"]}},
        off_hours_reply="We are closed",
    )  # fmt: skip
    assert len(channel["inbound_secret"]) >= 32 and channel["type"] == "webhook"
    read = (await admin.get(f"/channels/{channel['id']}")).body
    assert "inbound_secret" not in read and read["limit_excludes"] == ["waiting"]
    assert read["working_hours"]["days"] == {"mon": ["09:00-17:00"]}
    changed = await admin.patch(f"/channels/{channel['id']}",
                                {"distribution": "to_all", "working_hours": None})  # fmt: skip
    assert changed.status == 200 and changed.body["working_hours"] is None
    assert changed.body["max_open_dialogs"] == 3  # untouched
    said = await customer_says(anonymous, channel, "cust-delete")
    assert said.status == 201
    assert (await admin.delete(f"/channels/{channel['id']}")).status == 204
    assert (await admin.get(f"/channels/{channel['id']}")).status == 404
    assert (await admin.get(f"/dialogs/{said.body['dialog_id']}")).status == 404


async def test_bad_channels_are_refused_precisely(admin: ApiClient) -> None:
    taken = await new_channel(admin)
    cases: list[tuple[dict[str, Any], int, str, str | None]] = [
        ({"name": taken["name"]}, 409, "channel_name_taken", "name"),
        ({"name": "X1", "members": [999999]}, 422, "invalid_members", "members"),
        ({"name": "X2", "distribution": "random"}, 422, "validation_error", "distribution"),
        ({"name": "X3", "max_open_dialogs": 1001}, 422, "validation_error", "max_open_dialogs"),
        ({"name": "X4", "limit_excludes": ["closed"]}, 422, "validation_error", None),
        ({"name": "X5", "reply_url": "ftp://x"}, 422, "validation_error", "reply_url"),
        ({"name": "X6", "working_hours": {"timezone": "Nowhere/City"}}, 422,
         "validation_error", "working_hours"),
        ({"name": "X7", "type": "email"}, 422, "validation_error", "type"),
        ({"name": "X8", "colour": "red"}, 422, "validation_error", "colour"),
    ]  # fmt: skip
    for body, status, code, field in cases:
        reply = await admin.post("/channels", body)
        assert (reply.status, reply.error_code) == (status, code), (body, reply)
        if field is not None:
            assert reply.body["error"]["field"].startswith(field), reply
    assert (await admin.patch(f"/channels/{taken['id']}", {"name": None})).status == 422
    listed = (await admin.get("/channels")).body["items"]
    assert not [c for c in listed if c["name"].startswith("X")]


async def test_the_connector_needs_the_channel_secret(
    admin: ApiClient, anonymous: ApiClient
) -> None:
    channel = await new_channel(admin)
    assert (await customer_says(anonymous, channel, "c", secret="wrong")).error_code == (
        "bad_channel_secret")  # fmt: skip
    assert (await customer_says(anonymous, channel, "c", secret="")).status == 401
    assert (await customer_says(anonymous, {**channel, "id": 999999}, "c")).status == 404
    reset = await admin.post(f"/channels/{channel['id']}/secret")
    assert (await customer_says(anonymous, channel, "c")).status == 401  # the old one is dead
    fresh = {**channel, "inbound_secret": reset.body["inbound_secret"]}
    assert (await customer_says(anonymous, fresh, "c")).status == 201
    empty = await customer_says(anonymous, fresh, "c", text="   ")
    assert (empty.status, empty.body["error"]["field"]) == (422, "text")


async def test_one_open_dialog_per_customer_per_channel(
    admin: ApiClient, anonymous: ApiClient
) -> None:
    channel = await new_channel(admin)
    first = await customer_says(anonymous, channel, "ann", "hello", name="Ann")
    again = await customer_says(anonymous, channel, "ann", "anyone?")
    other = await customer_says(anonymous, channel, "bob")
    assert first.body["dialog_id"] == again.body["dialog_id"] != other.body["dialog_id"]
    body = await dialog(admin, first.body["dialog_id"])
    assert body["customer"] == {"id": "ann", "name": "Ann"} and body["state"] == "new"
    assert [m["text"] for m in body["messages"]] == ["hello", "anyone?"]
    assert (await admin.post(f"/dialogs/{body['id']}/close")).status == 200
    after = await customer_says(anonymous, channel, "ann", "me again")
    assert after.body["dialog_id"] != first.body["dialog_id"]
    # Racing first messages of one new customer still make one dialog.
    raced = await asyncio.gather(*(customer_says(anonymous, channel, "cara") for _ in range(8)))
    assert len({r.body["dialog_id"] for r in raced}) == 1


async def _assignees(admin: ApiClient, anonymous: ApiClient, channel: dict[str, Any],
                     count: int) -> list[int]:  # fmt: skip
    ids = [(await customer_says(anonymous, channel, f"order-{channel['id']}-{i}")).body[
        "dialog_id"] for i in range(count)]  # fmt: skip
    return [(await assigned(admin, i))["assignee_id"] for i in ids]


async def test_in_order_fills_each_agent_up_to_the_limit(
    admin: ApiClient, anonymous: ApiClient
) -> None:
    a, b, c = await new_agents(admin, 3)
    channel = await new_channel(admin, members=[a.user_id, b.user_id, c.user_id],
                                distribution="in_order", max_open_dialogs=2)  # fmt: skip
    got = await _assignees(admin, anonymous, channel, 5)
    assert got == [a.user_id, a.user_id, b.user_id, b.user_id, c.user_id]


async def test_evenly_spreads_dialogs(admin: ApiClient, anonymous: ApiClient) -> None:
    a, b, c = await new_agents(admin, 3)
    channel = await new_channel(admin, members=[a.user_id, b.user_id, c.user_id],
                                distribution="evenly")  # fmt: skip
    got = await _assignees(admin, anonymous, channel, 6)
    assert sorted(got.count(agent.user_id) for agent in (a, b, c)) == [2, 2, 2]


async def test_to_all_offers_to_every_available_member_and_one_claim_wins(
    admin: ApiClient, anonymous: ApiClient
) -> None:
    a, b = await new_agents(admin, 2)
    (resting,) = await new_agents(admin, 1, status="not_ready")
    channel = await new_channel(admin, members=[a.user_id, b.user_id, resting.user_id],
                                distribution="to_all")  # fmt: skip
    dialog_id = (await customer_says(anonymous, channel, "to-all")).body["dialog_id"]
    offered = await eventually(lambda: dialog(admin, dialog_id), lambda d: d["offered_to"])
    assert offered["offered_to"] == sorted([a.user_id, b.user_id])
    mine = (await a.api.get("/dialogs")).body["items"]
    assert [d["id"] for d in mine] == [dialog_id]
    assert (await resting.api.get(f"/dialogs/{dialog_id}")).error_code == "dialog_not_yours"
    assert (await resting.api.post(f"/dialogs/{dialog_id}/claim")).status == 403
    won = await b.api.post(f"/dialogs/{dialog_id}/claim")
    assert won.status == 200 and won.body["assignee_id"] == b.user_id
    lost = await a.api.post(f"/dialogs/{dialog_id}/claim")
    assert (lost.status, lost.error_code) == (409, "dialog_taken")
    assert (await a.api.get("/dialogs")).body["items"] == []


async def test_two_agents_claiming_one_dialog_exactly_one_wins(
    admin: ApiClient, anonymous: ApiClient
) -> None:
    team = await new_agents(admin, 8)
    channel = await new_channel(admin, members=[t.user_id for t in team], distribution="to_all")
    ids = [(await customer_says(anonymous, channel, f"race-{i}")).body["dialog_id"]
           for i in range(10)]  # fmt: skip
    for dialog_id in ids:
        await eventually(lambda d=dialog_id: dialog(admin, d), lambda d: len(d["offered_to"]) == 8)
    claims = [(agent, dialog_id) for dialog_id in ids for agent in team]
    replies = await asyncio.gather(
        *(agent.api.post(f"/dialogs/{dialog_id}/claim") for agent, dialog_id in claims)
    )
    winners: dict[int, list[int]] = {}
    for (agent, dialog_id), reply in zip(claims, replies, strict=True):
        assert reply.status in (200, 409), reply
        if reply.status == 200:
            winners.setdefault(dialog_id, []).append(agent.user_id)
        else:
            assert reply.error_code == "dialog_taken"
    assert sorted(winners) == sorted(ids)
    for dialog_id, won_by in winners.items():
        assert len(won_by) == 1, (dialog_id, won_by)
        assert (await dialog(admin, dialog_id))["assignee_id"] == won_by[0]


async def test_limit_counts_open_dialogs_except_the_excluded_states(
    admin: ApiClient, anonymous: ApiClient
) -> None:
    (agent,) = await new_agents(admin, 1)
    channel = await new_channel(admin, members=[agent.user_id], max_open_dialogs=1,
                                limit_excludes=["waiting"])  # fmt: skip
    first, second, third = [
        (await customer_says(anonymous, channel, f"limit-{i}")).body["dialog_id"] for i in range(3)
    ]
    await assigned(admin, first)
    await asyncio.sleep(0.5)
    assert (await dialog(admin, second))["state"] == "new"  # at the limit
    reply = await agent.api.post(f"/dialogs/{first}/messages",
                                 {"text": "send a photo?", "wait_for_customer": True})  # fmt: skip
    assert reply.status == 201
    assert (await dialog(admin, first))["state"] == "waiting"  # excluded: room for one more
    assert (await assigned(admin, second))["assignee_id"] == agent.user_id
    await agent.api.post(f"/dialogs/{second}/messages", {"text": "answered"})
    assert (await dialog(admin, second))["state"] == "answered"  # answered still counts
    await asyncio.sleep(0.5)
    assert (await dialog(admin, third))["state"] == "new"
    # The customer writing back makes it the agent's turn again.
    await customer_says(anonymous, channel, "limit-0", "here it is")
    assert (await dialog(admin, first))["state"] == "assigned"
    assert (await agent.api.post(f"/dialogs/{second}/close")).status == 200
    await asyncio.sleep(0.5)
    assert (await dialog(admin, third))["state"] == "new"  # first counts again
    assert (await agent.api.post(f"/dialogs/{first}/close")).status == 200
    assert (await assigned(admin, third))["assignee_id"] == agent.user_id


async def test_availability_check_skips_agents_who_are_not_ready_or_available(
    admin: ApiClient, anonymous: ApiClient
) -> None:
    away, = await new_agents(admin, 1, status="away")  # fmt: skip
    resting, = await new_agents(admin, 1, status="not_ready")  # fmt: skip
    gone, = await new_agents(admin, 1, status="logged_out")  # fmt: skip
    quiet, = await new_agents(admin, 1, status="dnd")  # fmt: skip
    wrapping, = await new_agents(admin, 1, status="wrap_up")  # fmt: skip
    present, = await new_agents(admin, 1, status="available")  # fmt: skip
    order = [away, resting, gone, quiet, wrapping, present]
    channel = await new_channel(admin, members=[a.user_id for a in order],
                                distribution="in_order")  # fmt: skip
    first = (await customer_says(anonymous, channel, "avail-1")).body["dialog_id"]
    assert (await assigned(admin, first))["assignee_id"] == present.user_id
    unchecked = await new_channel(admin, members=[gone.user_id], check_availability=False)
    second = (await customer_says(anonymous, unchecked, "avail-2")).body["dialog_id"]
    assert (await assigned(admin, second))["assignee_id"] == gone.user_id


async def test_unanswered_dialog_moves_on_after_its_idle_time(
    admin: ApiClient, anonymous: ApiClient, api_server: TestServer, http: Any
) -> None:
    """The app's own assigner, driven with an injected clock instead of waiting a minute."""
    assigner: ChatAssigner = api_server.app[CONTROLLER_KEY].chat_assigner
    a, b = await new_agents(admin, 2)
    channel = await new_channel(admin, members=[a.user_id, b.user_id], distribution="in_order",
                                idle_seconds=60)  # fmt: skip
    dialog_id = (await customer_says(anonymous, channel, "idle")).body["dialog_id"]
    assert (await assigned(admin, dialog_id))["assignee_id"] == a.user_id
    await assigner.assign_round(time.time() + 30)
    assert (await dialog(admin, dialog_id))["assignee_id"] == a.user_id  # not yet
    await assigner.assign_round(time.time() + 61)
    assert (await dialog(admin, dialog_id))["assignee_id"] == b.user_id
    # b ignores it too: everyone had it, so it starts over with a.
    await assigner.assign_round(time.time() + 61 + 61)
    moved = await dialog(admin, dialog_id)
    assert (moved["assignee_id"], moved["state"]) == (a.user_id, "assigned")
    await a.api.post(f"/dialogs/{dialog_id}/messages", {"text": "sorry, here"})
    await assigner.assign_round(time.time() + 1000)
    assert (await dialog(admin, dialog_id))["assignee_id"] == a.user_id  # answered: stays


async def test_forward_close_and_rate(admin: ApiClient, anonymous: ApiClient) -> None:
    a, b, c = await new_agents(admin, 3)
    sales = await new_channel(admin, members=[a.user_id], distribution="in_order")
    support = await new_channel(admin, members=[c.user_id])
    said = await customer_says(anonymous, sales, "fwd", "I need help")
    dialog_id = said.body["dialog_id"]
    await assigned(admin, dialog_id)
    bad = await a.api.post(f"/dialogs/{dialog_id}/forward", {"user_id": 999999})
    assert (bad.status, bad.error_code) == (422, "invalid_forward")
    both = await a.api.post(f"/dialogs/{dialog_id}/forward", {"user_id": 1, "channel_id": 1})
    assert both.status == 422
    to_b = await a.api.post(f"/dialogs/{dialog_id}/forward", {"user_id": b.user_id})
    assert to_b.status == 200 and to_b.body["assignee_id"] == b.user_id
    assert (await a.api.post(f"/dialogs/{dialog_id}/messages", {"text": "x"})).error_code == (
        "dialog_not_yours")  # fmt: skip
    to_support = await b.api.post(f"/dialogs/{dialog_id}/forward",
                                  {"channel_id": support["id"]})  # fmt: skip
    assert to_support.status == 200 and to_support.body["state"] == "new"
    assert (await assigned(admin, dialog_id))["assignee_id"] == c.user_id
    # The customer writes to sales again: a new dialog there, so it cannot come back.
    await customer_says(anonymous, sales, "fwd", "hello?")
    clash = await c.api.post(f"/dialogs/{dialog_id}/forward", {"channel_id": sales["id"]})
    assert (clash.status, clash.error_code) == (409, "customer_has_open_dialog")
    early = await _rate(anonymous, support, dialog_id, 5)
    assert (early.status, early.error_code) == (409, "dialog_not_closed")
    closed = await c.api.post(f"/dialogs/{dialog_id}/close")
    assert closed.status == 200 and closed.body["closed_by"] == f"user:{c.user_id}"
    assert (await c.api.post(f"/dialogs/{dialog_id}/close")).error_code == "dialog_closed"
    assert (await _rate(anonymous, sales, dialog_id, 5)).status == 401  # another channel's secret
    assert (await _rate(anonymous, support, dialog_id, 6)).status == 422
    rated = await _rate(anonymous, support, dialog_id, 4)
    assert rated.status == 200 and rated.body["rating"] == 4
    assert (await _rate(anonymous, support, dialog_id, 5)).error_code == "dialog_already_rated"


async def _rate(client: ApiClient, channel: dict[str, Any], dialog_id: int, rating: int) -> Any:
    """POST .../rating as the connector would, with the channel's secret."""
    url = f"{client.base_url}/dialogs/{dialog_id}/rating"
    headers = {"X-Channel-Secret": channel["inbound_secret"]}
    async with client.session.post(url, json={"rating": rating}, headers=headers) as response:
        return Reply(response.status, await response.json())


async def test_replies_are_signed_retried_and_delivered_in_order(
    admin: ApiClient, anonymous: ApiClient
) -> None:
    (agent,) = await new_agents(admin, 1)
    async with FlakyReceiver(failures=2) as receiver:
        channel = await new_channel(admin, members=[agent.user_id], reply_url=receiver.url)
        dialog_id = (await customer_says(anonymous, channel, "outbox")).body["dialog_id"]
        await assigned(admin, dialog_id)
        for text in ("first", "second"):
            sent = await agent.api.post(f"/dialogs/{dialog_id}/messages", {"text": text})
            assert sent.status == 201
        delivered = await eventually(
            lambda: dialog(admin, dialog_id),
            lambda d: all(m["delivery"]["status"] == "delivered"
                          for m in d["messages"] if m["direction"] == "out"),
        )  # fmt: skip
    out = [m for m in delivered["messages"] if m["direction"] == "out"]
    assert [m["delivery"]["attempts"] for m in out] == [3, 1]
    assert [body["text"] for body in receiver.accepted] == ["first", "second"]
    assert receiver.accepted[0]["customer"] == {"id": "outbox"}
    for headers, body in receiver.requests:
        expected = hmac.new(channel["inbound_secret"].encode(), body, hashlib.sha256)
        assert headers["X-Channel-Signature"] == "sha256=" + expected.hexdigest()
    # The failed attempts of "first" came before anything of "second".
    assert [h["X-Channel-Message-Id"] for h, _ in receiver.requests][:3] == [
        receiver.requests[0][0]["X-Channel-Message-Id"]] * 3  # fmt: skip


async def test_roles_admin_all_supervisor_reads_operator_own(
    admin: ApiClient, anonymous: ApiClient
) -> None:
    mine, theirs = await new_agents(admin, 2)
    (boss,) = await new_agents(admin, 1, role="supervisor", status=None)
    channel = await new_channel(admin, members=[mine.user_id], distribution="in_order")
    assert (await mine.api.post("/channels", {"name": "Nope"})).status == 403
    assert (await boss.api.post("/channels", {"name": "Nope"})).status == 403
    assert (await mine.api.get("/channels")).status == 403
    assert (await boss.api.get("/channels")).status == 200
    dialog_id = (await customer_says(anonymous, channel, "roles")).body["dialog_id"]
    await assigned(admin, dialog_id)
    assert (await mine.api.get(f"/dialogs/{dialog_id}")).status == 200
    assert (await theirs.api.get(f"/dialogs/{dialog_id}")).error_code == "dialog_not_yours"
    assert [d["id"] for d in (await theirs.api.get("/dialogs")).body["items"]] == []
    assert (await theirs.api.get("/dialogs", params={"assignee_id": str(mine.user_id)})
            ).body["items"] == []  # fmt: skip
    assert (await boss.api.get(f"/dialogs/{dialog_id}")).status == 200
    listed = (await boss.api.get("/dialogs", params={"channel_id": str(channel["id"])})).body
    assert [d["id"] for d in listed["items"]] == [dialog_id]
    for client in (theirs.api, boss.api):
        for action, body in (("messages", {"text": "x"}), ("close", None),
                             ("forward", {"user_id": theirs.user_id})):  # fmt: skip
            reply = await client.post(f"/dialogs/{dialog_id}/{action}", body)
            assert (reply.status, reply.error_code) == (403, "dialog_not_yours"), (action, reply)
    by_admin = await admin.post(f"/dialogs/{dialog_id}/messages", {"text": "admin here"})
    assert by_admin.status == 201 and by_admin.body["author_id"] is None
    assert (await anonymous.get("/dialogs")).status == 401
    assert (await mine.api.get("/stats/channels")).status == 403


async def test_blocklist_refuses_or_marks_spam(
    admin: ApiClient, anonymous: ApiClient, api_server: TestServer
) -> None:
    channel = await new_channel(admin)
    domain = await admin.post("/blocklist", {"entry": "@Spam.Example", "note": "flood"})
    assert domain.status == 201 and domain.body["entry"] == "@spam.example"
    assert (await admin.post("/blocklist", {"entry": "@spam.example"})).error_code == (
        "blocklist_entry_exists")  # fmt: skip
    assert (await admin.post("/blocklist", {"entry": "nonsense"})).status == 422
    refused = await customer_says(anonymous, channel, "Bob@spam.example")
    assert (refused.status, refused.error_code) == (403, "blocked")
    number = await admin.post("/blocklist", {"entry": "+49 30 555 0199", "action": "spam"})
    spam = await customer_says(anonymous, channel, "+49305550199")
    assert spam.status == 201 and spam.body["spam"] and spam.body["state"] == "closed"
    in_channel = {"channel_id": str(channel["id"])}
    listed = (await admin.get("/dialogs", params={**in_channel, "spam": "true"})).body["items"]
    assert [d["id"] for d in listed] == [spam.body["dialog_id"]]
    clean = (await admin.get("/dialogs", params={**in_channel, "spam": "false"})).body["items"]
    assert clean == []
    ctx = api_server.app[CONTEXT_KEY]
    actions = await blocklist.all_actions(ctx)
    assert not blocklist.calling_number_refused(actions, "+4930 5550199")  # spam: calls go on
    await admin.post("/blocklist", {"entry": "4930777", "action": "refuse"})
    assert blocklist.calling_number_refused(await blocklist.all_actions(ctx), "+4930777")
    assert (await admin.delete(f"/blocklist/{domain.body['id']}")).status == 204
    assert (await admin.delete(f"/blocklist/{number.body['id']}")).status == 204
    assert (await customer_says(anonymous, channel, "Bob@spam.example")).status == 201


async def test_canned_responses_fill_in_names(admin: ApiClient, anonymous: ApiClient) -> None:
    (agent,) = await new_agents(admin, 1)
    await admin.patch(f"/users/{agent.user_id}", {"name": "Dana"})
    bad = await admin.post("/canned-responses",
                           {"category": "greet", "title": "Hi", "text": "Hi {name}"})  # fmt: skip
    assert (bad.status, bad.error_code) == (422, "invalid_placeholder")
    made = await admin.post("/canned-responses", {
        "category": "greetings", "title": "Hello",
        "text": "Hello {customer_name}, {agent_name} here.",
    })  # fmt: skip
    assert made.status == 201
    assert (await agent.api.post("/canned-responses", {"category": "x", "title": "x",
                                                       "text": "x"})).status == 403  # fmt: skip
    listed = await agent.api.get("/canned-responses", params={"category": "greetings"})
    assert made.body["id"] in [r["id"] for r in listed.body["items"]]
    channel = await new_channel(admin, members=[agent.user_id])
    dialog_id = (await customer_says(anonymous, channel, "canned", name="Eve")).body["dialog_id"]
    await assigned(admin, dialog_id)
    sent = await agent.api.post(f"/dialogs/{dialog_id}/messages",
                                {"canned_response_id": made.body["id"]})  # fmt: skip
    assert sent.body["text"] == "Hello Eve, Dana here."
    missing = await agent.api.post(f"/dialogs/{dialog_id}/messages", {"canned_response_id": 999999})
    assert missing.error_code == "unknown_canned_response"
    assert (await agent.api.post(f"/dialogs/{dialog_id}/messages", {})).status == 422


async def test_off_hours_dialogs_wait_and_get_the_auto_reply(
    admin: ApiClient, anonymous: ApiClient
) -> None:
    (agent,) = await new_agents(admin, 1)
    channel = await new_channel(admin, members=[agent.user_id], working_hours={"days": {}},
                                off_hours_reply="Closed until Monday")  # fmt: skip
    dialog_id = (await customer_says(anonymous, channel, "night")).body["dialog_id"]
    await asyncio.sleep(0.5)
    body = await dialog(admin, dialog_id)
    assert body["state"] == "new" and body["assignee_id"] is None
    assert [(m["direction"], m["text"]) for m in body["messages"]] == [
        ("in", "hi"), ("out", "Closed until Monday")]  # fmt: skip
    await admin.patch(f"/channels/{channel['id']}", {"working_hours": None})
    assert (await assigned(admin, dialog_id))["assignee_id"] == agent.user_id


async def test_statistics_events_and_metrics(
    admin: ApiClient, anonymous: ApiClient, http: Any, api_base: str
) -> None:
    (agent,) = await new_agents(admin, 1)
    channel = await new_channel(admin, members=[agent.user_id])
    async with http.ws_connect(f"{api_base}/events?token={ADMIN_TOKEN}") as ws:
        answered = (await customer_says(anonymous, channel, "stats-1")).body["dialog_id"]
        created = await next_event(ws, "dialog_created")
        assert created["data"]["id"] == answered
        await assigned(admin, answered)
        event = await next_event(ws, "dialog_assigned")
        assert event["data"]["assignee_id"] == agent.user_id
    ignored = (await customer_says(anonymous, channel, "stats-2")).body["dialog_id"]
    await assigned(admin, ignored)
    await agent.api.post(f"/dialogs/{answered}/messages", {"text": "done"})
    await agent.api.post(f"/dialogs/{answered}/close")
    await _rate(anonymous, channel, answered, 3)
    figures = (await admin.get("/stats/channels")).body["items"]
    mine = next(f for f in figures if f["channel_id"] == channel["id"])
    assert (mine["received"], mine["unanswered"], mine["rated"]) == (2, 1, 1)
    assert mine["average_rating"] == 3.0 and mine["first_response_seconds"] > 0
    assert mine["handling_seconds"] is not None
    agents = (await admin.get("/stats/agents")).body["items"]
    assert next(f for f in agents if f["user_id"] == agent.user_id)["received"] == 2
    future = await admin.get("/stats/channels", params={"since": "2999-01-01T00:00:00+00:00"})
    assert next(f for f in future.body["items"] if f["channel_id"] == channel["id"])[
        "received"] == 0  # fmt: skip
    async with http.get(api_base.removesuffix("/api/v1") + "/metrics") as response:
        text = await response.text()
    assert 'pbx_chat_messages_total{direction="in"}' in text
    assert "pbx_chat_assignment_seconds_count" in text
