"""Blind transfer end to end: a registered PJSUA2 phone in a call sends REFER through the real
Kamailio edge; the media worker takes it, the controller connects the caller to the target
(real RTP both ways), or back to the phone that transferred."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from core.settings import Settings
from tests.conftest import MakePhone
from tests.integration.test_calls import wait_for_call
from tests.integration.test_media_workers import wait_until
from tests.support.api_client import ApiClient
from tests.support.baresip import Baresip
from tests.support.phone import TestCall, TestPhone


async def both_hear_each_other(a: TestCall, b: TestCall) -> None:
    """Each phone's tone reaches the other. A phone whose stream now comes from another
    source resyncs its jitter buffer first, so the levels are awaited, not sampled once."""

    async def levels() -> tuple[int, int]:
        return await a.rx_level(), await b.rx_level()

    async with asyncio.timeout(10):
        while min(await levels()) <= 10:
            await asyncio.sleep(0.1)


async def transfer_recorded(admin: ApiClient, caller_ext: str) -> None:
    async with asyncio.timeout(10):
        while True:
            items = (await admin.get("/calls", params={"party": caller_ext})).body["items"]
            if items and items[0]["transfers"]:
                return
            await asyncio.sleep(0.1)


async def the_colleague_ends_it(
    admin: ApiClient, call: TestCall, at_colleague: TestCall, caller_ext: str, colleague_ext: str
) -> None:
    """The colleague hangs up; the call record says answered, connected to the colleague."""
    await at_colleague.hangup()
    assert await asyncio.wait_for(call.ended, 10) == 200
    record = await wait_for_call(admin, direction="internal", party=caller_ext)
    assert (record["disposition"], record["connected_to"]) == ("answered", colleague_ext)


async def transfers_of(admin: ApiClient, caller_ext: str) -> list[tuple[str, str, str]]:
    record = await wait_for_call(admin, direction="internal", party=caller_ext)
    return [(t["by"], t["to"], t["kind"]) for t in record["transfers"]]


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
    await both_hear_each_other(call, at_colleague)
    await the_colleague_ends_it(admin, call, at_colleague, caller_ext, colleague_ext)
    assert await transfers_of(admin, caller_ext) == [(desk_ext, colleague_ext, "blind")]


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
    await both_hear_each_other(call, rung_back)
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
    await both_hear_each_other(call, at_desk)
    await call.hangup()
    assert await asyncio.wait_for(at_desk.ended, 10) == 200


async def test_an_attended_transfer_by_keys_from_a_phone_without_a_transfer_key(
    admin: ApiClient, settings: Settings, phone: MakePhone
) -> None:
    """RFC 4733 digits: the attended-transfer code, the colleague's extension and '#'; the
    desk talks to the colleague while the caller waits, then hangs up to hand over."""
    caller, caller_ext = await phone("Held Caller")
    desk, desk_ext = await phone("Consulting Desk")
    colleague, colleague_ext = await phone("Consulted Colleague")
    call, at_desk = await internal_call(settings, caller, desk, desk_ext)
    await at_desk.send_dtmf(settings.feature_codes.attended_transfer + colleague_ext + "#")
    at_colleague = await colleague.next_incoming(timeout=15)
    await asyncio.wait_for(at_colleague.answered, 10)
    await both_hear_each_other(at_desk, at_colleague)
    await at_desk.hangup()
    await transfer_recorded(admin, caller_ext)  # handed over: only the caller feeds them now
    await both_hear_each_other(call, at_colleague)
    await call.hangup()
    assert await asyncio.wait_for(at_colleague.ended, 10) == 200
    record = await wait_for_call(admin, direction="internal", party=caller_ext)
    assert (record["disposition"], record["connected_to"]) == ("answered", colleague_ext)
    assert [(t["by"], t["kind"]) for t in record["transfers"]] == [(desk_ext, "attended")]


async def test_an_attended_transfer_by_refer_with_replaces_joins_the_caller_and_the_colleague(
    admin: ApiClient, settings: Settings, phone: MakePhone
) -> None:
    """The desk phone consults in a call of its own (which may land in another worker than
    the caller's: the two are then linked) and completes with REFER/Replaces."""
    caller, caller_ext = await phone("Caller Of An Attended Transfer")
    desk, desk_ext = await phone("Desk With A Transfer Key")
    colleague, colleague_ext = await phone("Colleague Consulted By Call")
    call, at_desk = await internal_call(settings, caller, desk, desk_ext)
    consultation = await desk.call(f"sip:{colleague_ext}@{settings.sip.host}:{settings.sip.port}")
    at_colleague = await colleague.next_incoming(timeout=10)
    await asyncio.wait_for(consultation.answered, 10)
    await both_hear_each_other(consultation, at_colleague)
    await at_desk.transfer_to_call(consultation)
    await wait_until(lambda: at_desk.transfer_results == [200])
    await asyncio.wait_for(at_desk.ended, 10)
    await asyncio.wait_for(consultation.ended, 10)
    await transfer_recorded(admin, caller_ext)
    await both_hear_each_other(call, at_colleague)
    await the_colleague_ends_it(admin, call, at_colleague, caller_ext, colleague_ext)
    assert await transfers_of(admin, caller_ext) == [(desk_ext, colleague_ext, "attended")]


async def baresip_desk(
    admin: ApiClient, settings: Settings, next_extension: Callable[[], str], folder: Path
) -> tuple[Baresip, str]:
    made = await admin.new_user("Baresip Desk")
    desk_ext = next_extension()
    sip = (await admin.assign(made["id"], desk_ext))["sip"]
    desk = Baresip(folder)
    await desk.start(desk_ext, sip["password"], settings.sip.domain, settings.sip.host,
                     settings.sip.port)  # fmt: skip
    return desk, desk_ext


async def test_a_baresip_desk_phone_transfers_blind_with_its_transfer_command(
    admin: ApiClient, settings: Settings, phone: MakePhone, next_extension: Callable[[], str],
    tmp_path: Path,
) -> None:  # fmt: skip
    """Another SIP stack as the transferring phone: baresip's /transfer sends the REFER."""
    caller, caller_ext = await phone("Caller Of A Baresip Desk")
    colleague, colleague_ext = await phone("Colleague Of A Baresip Desk")
    desk, desk_ext = await baresip_desk(admin, settings, next_extension, tmp_path / "baresip")
    try:
        call = await caller.call(f"sip:{desk_ext}@{settings.sip.host}:{settings.sip.port}")
        await asyncio.wait_for(call.answered, 10)
        await desk.wait_for(r"audio tx pipeline", timeout=10)  # answered, media up
        await desk.command(f"/transfer {colleague_ext}")
        at_colleague = await colleague.next_incoming(timeout=10)
        await asyncio.wait_for(at_colleague.answered, 10)
        await both_hear_each_other(call, at_colleague)
        await at_colleague.hangup()
        assert await asyncio.wait_for(call.ended, 10) == 200
    finally:
        await desk.stop()
    record = await wait_for_call(admin, direction="internal", party=caller_ext)
    assert (record["connected_to"], [t["by"] for t in record["transfers"]]) == (
        colleague_ext, [desk_ext],
    )  # fmt: skip


async def test_a_baresip_desk_phone_transfers_attended_with_its_keypad(
    admin: ApiClient, settings: Settings, phone: MakePhone, next_extension: Callable[[], str],
    tmp_path: Path,
) -> None:  # fmt: skip
    """baresip 1.0 (Debian's) has no attended-transfer command: its keypad sends the code, the
    colleague's extension and '#' as RFC 4733 events, talks to the colleague, then hangs up."""
    caller, caller_ext = await phone("Caller Held By A Baresip Desk")
    colleague, colleague_ext = await phone("Colleague Consulted By Baresip")
    desk, desk_ext = await baresip_desk(admin, settings, next_extension, tmp_path / "baresip")
    try:
        call = await caller.call(f"sip:{desk_ext}@{settings.sip.host}:{settings.sip.port}")
        await asyncio.wait_for(call.answered, 10)
        await desk.wait_for(r"audio tx pipeline", timeout=10)
        await desk.command(settings.feature_codes.attended_transfer + colleague_ext + "#")
        at_colleague = await colleague.next_incoming(timeout=15)
        await asyncio.wait_for(at_colleague.answered, 10)
        await desk.command("/hangup")  # the hand-over
        await transfer_recorded(admin, caller_ext)
        await both_hear_each_other(call, at_colleague)
        await at_colleague.hangup()
        assert await asyncio.wait_for(call.ended, 10) == 200
    finally:
        await desk.stop()
    assert await transfers_of(admin, caller_ext) == [(desk_ext, colleague_ext, "attended")]
