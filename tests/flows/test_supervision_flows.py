"""Supervision on the in-memory workers: POST /calls/{id}/supervise rings the supervisor's
phone from the call's worker; answered, it hears the talk (Monitor), keys 4/5/6 switch the
mode, and it ends with the talk. That the supervisor really hears both voices, and whom a
whisper reaches, is tested with real phones (tests/integration/test_supervision.py)."""

from __future__ import annotations

from collections.abc import Callable

from pbx.memory_worker import MemoryWorkers
from tests.flows.builders import caller_number, company_number, extension_to, user
from tests.flows.conftest import Events
from tests.support.api_client import ApiClient


async def test_a_supervisor_hears_a_live_call_from_their_phone_and_switches_to_whisper(
    admin: ApiClient, twin: MemoryWorkers, events: Events, next_extension: Callable[[], str]
) -> None:
    desk = await user(admin, next_extension)
    boss = await user(admin, next_extension)
    await admin.patch(f"/users/{boss.id}", {"role": "supervisor"})
    as_boss = admin.as_token(await admin.token_for(boss.id))
    number = await company_number(admin, extension_to(desk), extension_dialing=False)
    calling = caller_number()
    caller = twin.call_in(calling, number)
    started = await events.next("call_started", caller=calling)
    phone = await twin.dialled(desk.extension)
    phone.answer()
    await twin.until(lambda: caller.bridged_to is phone)

    reply = await as_boss.post(f"/calls/{started['call_id']}/supervise", {"mode": "listen"})
    assert reply.status == 202, reply
    assert reply.body == {"call_id": started["call_id"], "mode": "listen",
                          "extension": boss.extension}  # fmt: skip
    boss_phone = await twin.dialled(boss.extension)
    boss_phone.answer()
    await twin.until(lambda: boss_phone.supervising == (caller.leg_id, phone.leg_id, "listen"))
    assert caller.bridged_to is phone, "the talk goes on as it was"
    boss_phone.press("5")
    await twin.until(lambda: boss_phone.supervising == (caller.leg_id, phone.leg_id, "whisper"))
    caller.hang_up()
    await twin.until(lambda: boss_phone.ended.done())
    heard = await events.next("call_supervised", call_id=started["call_id"])
    assert (heard["supervisor_user_id"], heard["user_id"], heard["mode"]) == (
        boss.id, desk.id, "listen",
    )  # fmt: skip


async def test_only_a_live_call_and_only_staff_with_a_phone_can_be_supervised(
    admin: ApiClient, twin: MemoryWorkers, next_extension: Callable[[], str]
) -> None:
    desk = await user(admin, next_extension)
    operator = admin.as_token(await admin.token_for(desk.id))
    assert (await operator.post("/calls/1/supervise", {})).status == 403
    nobody_calls = await admin.post("/calls/999999/supervise", {"mode": "barge"})
    assert (nobody_calls.status, nobody_calls.error_code) == (409, "no_extension")
    boss = await user(admin, next_extension)
    await admin.patch(f"/users/{boss.id}", {"role": "supervisor"})
    as_boss = admin.as_token(await admin.token_for(boss.id))
    gone = await as_boss.post("/calls/999999/supervise", {"mode": "barge"})
    assert (gone.status, gone.error_code) == (404, "no_live_talk")
    bad = await as_boss.post("/calls/1/supervise", {"mode": "shout"})
    assert bad.status == 422
