"""Calls end to end: SIPp callers and PJSUA2 phones through the real Kamailio and media workers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from core.settings import Settings
from pbx.protocol import FINAL_HEADER
from tests.conftest import MakePhone
from tests.support.api_client import ApiClient
from tests.support.phone import TestCall, TestPhone
from tests.support.sipp import call_number

# Enough tries for the BYE to overtake the bridge at least once on a loaded machine.
CHANGED_MIND_CALLS = 8

COMPANY_NUMBER = "4930555000"
TRUNK_NUMBER = "4930777888"


@pytest.fixture
async def company_number(admin: ApiClient) -> AsyncIterator[dict[str, Any]]:
    reply = await admin.post(
        "/numbers",
        {
            "number": COMPANY_NUMBER,
            "greeting": {"text": "Welcome. Dial an extension or hold."},
            "default_destination": {"type": "hangup"},
        },
    )
    assert reply.status == 201, reply
    yield reply.body
    await admin.delete(f"/numbers/{reply.body['id']}")


async def wait_for_call(admin: ApiClient, after: int = 0, **filters: str) -> dict[str, Any]:
    """The newest finished call record matching `filters`, newer than call `after`: records
    are written behind the call, so an older match may show before this call's (bounded)."""
    async with asyncio.timeout(10):
        while True:
            items = (await admin.get("/calls", params=filters)).body["items"]
            if items and items[0]["id"] > after and items[0]["ended_at"] is not None:
                record: dict[str, Any] = items[0]
                return record
            await asyncio.sleep(0.2)


async def newest_call_id(admin: ApiClient) -> int:
    items = (await admin.get("/calls", params={"limit": "1"})).body["items"]
    return int(items[0]["id"]) if items else 0


async def assert_both_hear_each_other(a: TestCall, b: TestCall) -> None:
    await asyncio.sleep(0.5)
    levels = (await a.rx_level(), await b.rx_level())
    assert min(levels) > 10, f"rx levels {levels}: one side hears silence"


async def test_caller_dials_an_extension_during_the_greeting(
    admin: ApiClient, settings: Settings, phone: MakePhone, company_number: dict[str, Any],
    tmp_path: Path,
) -> None:  # fmt: skip
    agent, extension = await phone("Greeted Agent")
    sipp = asyncio.create_task(
        call_number(
            tmp_path,
            settings.sip.port,
            COMPANY_NUMBER,
            digits=extension,
            digits_after_s=1.0,
            stay_s=2.0,
        )
    )
    incoming = await agent.next_incoming(timeout=15)
    await asyncio.wait_for(incoming.progress.answered, 5)
    result = await sipp
    assert result.succeeded, result.output
    record = await wait_for_call(admin, direction="inbound", party=extension)
    assert record["disposition"] == "answered"
    assert record["connected_to"] == extension
    assert record["called"] == COMPANY_NUMBER
    assert record["system_answered_at"] and record["answered_at"]
    assert record["hangup_by"] == "caller"
    assert [leg["role"] for leg in record["legs"]] == ["caller", "callee"]


async def test_digits_ended_with_hash(
    admin: ApiClient, settings: Settings, phone: MakePhone, company_number: dict[str, Any],
    tmp_path: Path,
) -> None:  # fmt: skip
    agent, extension = await phone("Hash Agent")
    sipp = asyncio.create_task(
        call_number(tmp_path, settings.sip.port, COMPANY_NUMBER, digits=extension + "#", stay_s=1.0)
    )
    incoming = await agent.next_incoming(timeout=15)
    await asyncio.wait_for(incoming.progress.answered, 5)
    assert (await sipp).succeeded


async def test_no_digits_take_the_default_destination(
    admin: ApiClient, settings: Settings, company_number: dict[str, Any], tmp_path: Path
) -> None:
    # Default destination "hangup": the greeting, the wait, a goodbye, then the service's BYE.
    before = await newest_call_id(admin)
    result = await call_number(
        tmp_path, settings.sip.port, COMPANY_NUMBER, hang_up="remote", timeout_s=30
    )
    assert result.succeeded, result.output
    record = await wait_for_call(
        admin, after=before, direction="inbound", disposition="ended_in_ivr"
    )
    assert record["hangup_by"] == "system"


async def test_unknown_number_and_direct_extension_are_refused(
    settings: Settings, phone: MakePhone, tmp_path: Path
) -> None:
    _, extension = await phone("Not Directly")
    unknown = await call_number(tmp_path, settings.sip.port, "4930999999", expect=407)
    assert unknown.succeeded, unknown.output
    # From the provider's address straight to an extension: no way in without a phone's auth.
    direct = await call_number(tmp_path, settings.sip.port, extension, expect=407)
    assert direct.succeeded, direct.output


async def test_internal_call_rings_the_other_phone_and_bridges_audio(
    admin: ApiClient, settings: Settings, phone: MakePhone
) -> None:
    caller, caller_ext = await phone("Internal Caller")
    callee, callee_ext = await phone("Internal Callee")
    call = await caller.call(f"sip:{callee_ext}@{settings.sip.host}:{settings.sip.port}")
    incoming = await callee.next_incoming(timeout=10)
    await asyncio.wait_for(call.progress.answered, 10)
    await assert_both_hear_each_other(call, incoming)
    await incoming.hangup()
    assert await asyncio.wait_for(call.progress.ended, 5) == 200
    record = await wait_for_call(admin, direction="internal", party=callee_ext)
    assert (record["caller"], record["disposition"], record["hangup_by"]) == (
        caller_ext, "answered", "callee",
    )  # fmt: skip


async def test_caller_hanging_up_as_the_call_is_answered_releases_the_callee(
    admin: ApiClient, settings: Settings, phone: MakePhone
) -> None:
    """The caller's BYE may reach the worker before the bridge does: the callee's phone must
    not stay connected to nobody (nor keep a worker leg)."""
    caller, _ = await phone("Changed Their Mind")
    callee, callee_ext = await phone("Answers At Once")
    for _ in range(CHANGED_MIND_CALLS):
        before = await newest_call_id(admin)
        call = await caller.call(
            f"sip:{callee_ext}@{settings.sip.host}:{settings.sip.port}", hang_up_when_answered=True
        )
        incoming = await callee.next_incoming(timeout=10)
        assert await asyncio.wait_for(call.progress.ended, 10) == 200
        assert await asyncio.wait_for(incoming.progress.ended, 5) == 200
        record = await wait_for_call(admin, after=before, direction="internal", party=callee_ext)
        assert (record["disposition"], record["hangup_by"]) == ("answered", "caller")


@pytest.mark.parametrize(("dialled", "code"), [("own", 403), ("9999", 404), ("12ab", 484)])
async def test_phone_calls_that_cannot_be_placed_get_a_clear_answer(
    settings: Settings, phone: MakePhone, dialled: str, code: int
) -> None:
    caller, own = await phone("Misdialler")
    target = own if dialled == "own" else dialled
    call = await caller.call(f"sip:{target}@{settings.sip.host}:{settings.sip.port}")
    assert await asyncio.wait_for(call.progress.ended, 10) == code


async def test_busy_callee_is_reported_to_the_caller(settings: Settings, phone: MakePhone) -> None:
    caller, _ = await phone("Busy Caller")
    _, busy_ext = await phone("Busy Callee", auto_answer=486)
    call = await caller.call(f"sip:{busy_ext}@{settings.sip.host}:{settings.sip.port}")
    assert await asyncio.wait_for(call.progress.ended, 10) == 486
    # The worker's mark that keeps the edge from trying another worker stays in the edge.
    assert "486" in call.progress.final_answer
    assert FINAL_HEADER.lower() not in call.progress.final_answer.lower()


async def test_caller_hanging_up_cancels_the_ringing_phone(
    admin: ApiClient, settings: Settings, phone: MakePhone
) -> None:
    caller, _ = await phone("Impatient")
    callee, callee_ext = await phone("Slow To Answer", auto_answer=None)
    call = await caller.call(f"sip:{callee_ext}@{settings.sip.host}:{settings.sip.port}")
    ringing = await callee.next_incoming(timeout=10)
    await call.hangup()
    assert await asyncio.wait_for(ringing.progress.ended, 5) == 487
    record = await wait_for_call(admin, direction="internal", party=callee_ext)
    assert record["disposition"] == "abandoned"


async def test_outbound_call_sends_post_dial_digits_after_answer(
    admin: ApiClient, settings: Settings, phone: MakePhone
) -> None:
    trunk = TestPhone(auto_answer=200)
    await trunk.open_unregistered(TRUNK_NUMBER)
    try:
        caller, caller_ext = await phone("Outbound Caller")
        call = await caller.call(f"sip:{TRUNK_NUMBER};1027@{settings.sip.host}:{settings.sip.port}")
        far_end = await trunk.next_incoming(timeout=10)
        await asyncio.wait_for(call.progress.answered, 10)
        async with asyncio.timeout(8):
            while "".join(far_end.progress.digits) != "1027":
                await asyncio.sleep(0.1)
        await assert_both_hear_each_other(call, far_end)
        await call.hangup()
        record = await wait_for_call(admin, direction="outbound", party=caller_ext)
        assert (record["called"], record["connected_to"]) == (f"{TRUNK_NUMBER};1027", TRUNK_NUMBER)
        assert record["disposition"] == "answered"
    finally:
        trunk.close()


async def test_uploaded_prompt_greets_callers(
    admin: ApiClient, settings: Settings, phone: MakePhone, http: Any, api_base: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    from tests.integration.test_api_prompts import make_wav, upload

    agent, extension = await phone("Prompt Agent")
    status, prompt = await upload(http, api_base, make_wav(tmp_path, seconds=2.0), name="Hello")
    assert status == 201
    number = await admin.post(
        "/numbers",
        {"number": "4930555111", "greeting": {"prompt_id": prompt["id"]},
         "default_destination": {"type": "hangup"}},
    )  # fmt: skip
    assert number.status == 201, number
    try:
        sipp = asyncio.create_task(
            call_number(tmp_path, settings.sip.port, "4930555111", digits=extension, stay_s=1.0)
        )
        incoming = await agent.next_incoming(timeout=15)
        await asyncio.wait_for(incoming.progress.answered, 5)
        assert (await sipp).succeeded
    finally:
        await admin.delete(f"/numbers/{number.body['id']}")
