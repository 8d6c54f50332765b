"""Supervision end to end: a supervisor asks the API to listen to a live call; the service
rings their registered PJSUA2 phone through the real Kamailio edge, and that phone hears the
call while the two parties go on hearing each other."""

from __future__ import annotations

import asyncio

from core.settings import Settings
from tests.conftest import MakePhone
from tests.integration.test_transfers import both_hear_each_other, internal_call
from tests.support.api_client import ApiClient


async def promoted_to_supervisor(admin: ApiClient, extension: str) -> int:
    """The holder of `extension` made a supervisor; their user id."""
    held = (await admin.get("/extensions")).body["items"]
    user_id: int = next(e["holder"]["id"] for e in held if e["extension"] == extension)
    await admin.patch(f"/users/{user_id}", {"role": "supervisor"})
    return user_id


async def test_a_supervisor_phone_hears_a_live_call(
    admin: ApiClient, settings: Settings, phone: MakePhone
) -> None:
    caller, _ = await phone("Supervised Caller")
    desk, desk_ext = await phone("Supervised Desk")
    boss_phone, boss_ext = await phone("Listening Supervisor")
    boss_id = await promoted_to_supervisor(admin, boss_ext)
    as_boss = admin.as_token(await admin.token_for(boss_id))
    call, at_desk = await internal_call(settings, caller, desk, desk_ext)
    async with asyncio.timeout(10):  # the record is written behind the call
        while not (found := (await admin.get("/calls", params={"party": desk_ext})).body["items"]):
            await asyncio.sleep(0.05)
    call_id = found[0]["id"]
    reply = await as_boss.post(f"/calls/{call_id}/supervise", {"mode": "listen"})
    assert reply.status == 202 and reply.body["extension"] == boss_ext, reply
    listening = await boss_phone.next_incoming(timeout=10)
    await asyncio.wait_for(listening.answered, 10)
    async with asyncio.timeout(10):
        while await listening.rx_level() <= 10:
            await asyncio.sleep(0.1)
    await both_hear_each_other(call, at_desk)
    await call.hangup()
    assert await asyncio.wait_for(listening.ended, 10) == 200, "it ends with the call"


async def test_a_supervisor_dials_the_supervise_code_and_an_agents_extension(
    admin: ApiClient, settings: Settings, phone: MakePhone
) -> None:
    """The supervisor's own call lands in whichever worker the edge picks: linked to the
    agent's call's worker when that is another. An operator dialling it is refused."""
    caller, _ = await phone("Caller Heard By Code")
    desk, desk_ext = await phone("Desk Heard By Code")
    boss_phone, boss_ext = await phone("Supervisor By Code")
    await promoted_to_supervisor(admin, boss_ext)
    call, at_desk = await internal_call(settings, caller, desk, desk_ext)
    code = settings.feature_codes.supervise + desk_ext
    listening = await boss_phone.call(f"sip:{code}@{settings.sip.host}:{settings.sip.port}")
    await asyncio.wait_for(listening.answered, 10)
    async with asyncio.timeout(10):
        while await listening.rx_level() <= 10:
            await asyncio.sleep(0.1)
    await both_hear_each_other(call, at_desk)
    await at_desk.hangup()
    assert await asyncio.wait_for(listening.ended, 10) == 200

    refused = await caller.call(f"sip:{code}@{settings.sip.host}:{settings.sip.port}")
    await asyncio.wait_for(refused.answered, 10)  # "not possible now", then the service hangs up
    assert await asyncio.wait_for(refused.ended, 15) == 200
