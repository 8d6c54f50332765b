"""Blind transfer end to end: a registered PJSUA2 phone in a call sends REFER through the real
Kamailio edge; the media worker takes it, the controller connects the caller to the target
(real RTP both ways), or back to the phone that transferred."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from core.settings import Settings
from tests.conftest import MakePhone
from tests.integration.test_calls import assert_both_hear_each_other, wait_for_call
from tests.integration.test_media_workers import wait_until
from tests.support.api_client import ApiClient
from tests.support.phone import TestCall, TestPhone


async def internal_call(
    settings: Settings, caller: TestPhone, desk: TestPhone, desk_ext: str
) -> tuple[TestCall, TestCall]:
    call = await caller.call(f"sip:{desk_ext}@{settings.sip.host}:{settings.sip.port}")
    answered = await desk.next_incoming(timeout=10)
    await asyncio.wait_for(call.progress.answered, 10)
    return call, answered


async def test_a_blind_transfer_by_refer_connects_the_caller_to_the_colleague(
    admin: ApiClient, settings: Settings, phone: MakePhone
) -> None:
    caller, caller_ext = await phone("Transferred Caller")
    desk, desk_ext = await phone("Transferring Desk")
    colleague, colleague_ext = await phone("Colleague")
    call, at_desk = await internal_call(settings, caller, desk, desk_ext)
    await at_desk.transfer(f"sip:{colleague_ext}@{settings.sip.domain}")
    await wait_until(lambda: at_desk.transfer_results == [200])
    await asyncio.wait_for(at_desk.ended, 10)  # the service ends the transferring leg
    at_colleague = await colleague.next_incoming(timeout=10)
    await asyncio.wait_for(at_colleague.answered, 10)
    await assert_both_hear_each_other(call, at_colleague)
    await at_colleague.hangup()
    assert await asyncio.wait_for(call.ended, 10) == 200
    record = await wait_for_call(admin, direction="internal", party=caller_ext)
    assert (record["disposition"], record["connected_to"]) == ("answered", colleague_ext)
    assert [(t["by"], t["to"], t["kind"]) for t in record["transfers"]] == [
        (desk_ext, colleague_ext, "blind")
    ]


async def test_a_transfer_to_a_phone_that_is_not_there_rings_who_transferred_again(
    admin: ApiClient, settings: Settings, phone: MakePhone, next_extension: Callable[[], str]
) -> None:
    caller, caller_ext = await phone("Returned Caller")
    desk, desk_ext = await phone("Desk Rung Back")
    absent = await admin.new_user("Absent Colleague")
    absent_ext = next_extension()
    await admin.assign(absent["id"], absent_ext)  # no phone registered
    call, at_desk = await internal_call(settings, caller, desk, desk_ext)
    await at_desk.transfer(f"sip:{absent_ext}@{settings.sip.domain}")
    await asyncio.wait_for(at_desk.ended, 10)
    rung_back = await desk.next_incoming(timeout=10)
    await asyncio.wait_for(rung_back.answered, 10)
    await assert_both_hear_each_other(call, rung_back)
    await call.hangup()
    record = await wait_for_call(admin, direction="internal", party=caller_ext)
    assert (record["disposition"], record["connected_to"]) == ("answered", desk_ext)


async def test_a_transfer_to_an_unknown_extension_is_refused_and_the_call_goes_on(
    settings: Settings, phone: MakePhone
) -> None:
    caller, _ = await phone("Kept Caller")
    desk, desk_ext = await phone("Mistyping Desk")
    call, at_desk = await internal_call(settings, caller, desk, desk_ext)
    await at_desk.transfer(f"sip:999@{settings.sip.domain}")
    await wait_until(lambda: at_desk.transfer_results == [404])
    await assert_both_hear_each_other(call, at_desk)
    await call.hangup()
    assert await asyncio.wait_for(at_desk.ended, 10) == 200
