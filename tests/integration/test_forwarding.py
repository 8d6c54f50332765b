"""Per-status forwarding of direct calls: the API, and real calls between PJSUA2 phones."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from core.settings import Settings
from tests.support.agents import Agent, MakeAgent, set_status
from tests.support.api_client import ApiClient
from tests.support.sipp import call_number


async def forward(admin: ApiClient, who: Agent, rules: dict[str, Any]) -> dict[str, Any]:
    reply = await admin.put(f"/users/{who.user_id}/forwarding", {"rules": rules})
    assert reply.status == 200, reply
    body: dict[str, Any] = reply.body
    return body


def to(extension: str) -> dict[str, str]:
    return {"type": "extension", "extension": extension}


async def dial(settings: Settings, caller: Agent, callee: Agent) -> Any:
    return await caller.phone.call(
        f"sip:{callee.extension}@{settings.sip.host}:{settings.sip.port}"
    )


async def test_forwarding_rules_are_validated_and_read_back(admin: ApiClient) -> None:
    me = await admin.new_user("Forwarding Owner")
    await admin.assign(me["id"], ext := "3901")
    other = await admin.new_user("Forwarding Other")
    empty = await admin.get(f"/users/{me['id']}/forwarding")
    assert empty.status == 200 and empty.body["rules"] == {}
    rules = {"away": {"type": "number", "number": "+491701234567"}, "dnd": {"type": "hangup"}}
    own = admin.as_token(await admin.token_for(me["id"]))
    saved = await own.put(f"/users/{me['id']}/forwarding", {"rules": rules})
    assert saved.status == 200 and saved.body["rules"] == rules
    assert (await own.get(f"/users/{me['id']}/forwarding")).body["rules"] == rules
    assert (await own.put(f"/users/{other['id']}/forwarding", {"rules": {}})).status == 403
    for bad, field in (
        ({"sleeping": {"type": "hangup"}}, "rules.sleeping"),
        ({"away": to(ext)}, "rules.away.extension"),
        ({"away": to("9988")}, "rules.away.extension"),
        ({"away": {"type": "menu", "id": 1}}, "rules.away.type"),
    ):
        reply = await admin.put(f"/users/{me['id']}/forwarding", {"rules": bad})
        assert reply.status == 422 and reply.error_code == "invalid_forwarding", reply
        assert reply.body["error"]["field"] == field
    assert (await admin.get(f"/users/{me['id']}/forwarding")).body["rules"] == rules
    assert (await admin.get("/users/999999/forwarding")).status == 404


async def test_dnd_rejects_direct_calls_unless_forwarded(
    admin: ApiClient, settings: Settings, agent: MakeAgent
) -> None:
    caller = await agent("DND Caller", status=None)
    quiet = await agent("DND Agent", status="dnd")
    desk = await agent("DND Backup", status=None)
    call = await dial(settings, caller, quiet)
    assert await asyncio.wait_for(call.ended, 10) == 486
    assert quiet.idle()
    await forward(admin, quiet, {"dnd": to(desk.extension)})
    call = await dial(settings, caller, quiet)
    await desk.rings()
    await asyncio.wait_for(call.answered, 5)
    await call.hangup()
    assert quiet.idle()


async def test_away_forwards_and_busy_forwards_while_on_a_call(
    admin: ApiClient, settings: Settings, agent: MakeAgent
) -> None:
    caller = await agent("Away Caller", status=None)
    roamer = await agent("Roaming Agent", status="away")
    desk = await agent("Away Desk", status=None)
    await forward(admin, roamer, {"away": to(desk.extension), "busy": to(desk.extension)})
    call = await dial(settings, caller, roamer)
    forwarded = await desk.rings()
    await asyncio.wait_for(call.answered, 5)
    await call.hangup()
    await asyncio.wait_for(forwarded.ended, 5)
    # Ready but on a call: the busy rule.
    backup = await agent("Busy Backup", status=None)
    await forward(admin, roamer, {"busy": to(backup.extension)})
    await set_status(admin, roamer, "ready")
    talk = await dial(settings, desk, roamer)
    await roamer.rings()
    await asyncio.wait_for(talk.answered, 5)
    second = await dial(settings, caller, roamer)
    await backup.rings()
    await asyncio.wait_for(second.answered, 5)
    assert roamer.idle()
    for each in (second, talk):
        await each.hangup()


async def test_no_answer_forwards_after_the_ring_timeout(
    admin: ApiClient, settings: Settings, agent: MakeAgent, tmp_path: Path
) -> None:
    sleepy = await agent("No Answer Agent", auto_answer=None, status="available")
    desk = await agent("No Answer Desk", status=None)
    await forward(admin, sleepy, {"no_answer": to(desk.extension)})
    number = "4930600999"
    assert (await admin.post("/numbers", {
        "number": number, "greeting": {"text": "Hi."}, "extension_dialing": False,
        "default_destination": to(sleepy.extension),
    })).status == 201  # fmt: skip
    sipp = asyncio.create_task(call_number(tmp_path, settings.sip.port, number, stay_s=9.0))
    ringing = await sleepy.rings()
    await asyncio.wait_for(ringing.ended, settings.calls.ring_timeout + 3)
    await desk.rings(timeout=5)
    assert (await sipp).succeeded


async def test_dnd_forwards_to_the_users_voicemail(
    admin: ApiClient, settings: Settings, agent: MakeAgent
) -> None:
    caller = await agent("Voicemail Caller", status=None)
    quiet = await agent("Voicemail DND", status="dnd")
    owner = {"type": "user", "id": quiet.user_id}
    box = await admin.post("/voicemail/boxes", {"owner": owner, "greeting": {"text": "Hi."}})
    assert box.status == 201, box
    await forward(admin, quiet, {"dnd": {"type": "voicemail", "box": box.body["id"]}})
    call = await dial(settings, caller, quiet)
    await asyncio.wait_for(call.answered, 10)  # the service answers for the box
    await asyncio.sleep(3.5)  # greeting, beep, then speak (the phone plays a tone)
    await call.send_dtmf("#")
    await asyncio.wait_for(call.ended, 15)  # "saved", then the service hangs up
    assert quiet.idle()
    messages = (await admin.get(f"/voicemail/boxes/{box.body['id']}/messages")).body["items"]
    assert len(messages) == 1
