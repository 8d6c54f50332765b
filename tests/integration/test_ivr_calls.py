"""IVR end to end: SIPp and PJSUA2 callers through the real Kamailio and media workers walk
menus, meet business hours at fixed clock times and leave voicemail."""

from __future__ import annotations

import array
import asyncio
import io
import wave
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from core.settings import Settings
from tests.conftest import ADMIN_TOKEN, MakePhone
from tests.integration.test_calls import wait_for_call
from tests.integration.test_event_stream import next_event
from tests.support.api_client import ApiClient
from tests.support.clock import TestClock
from tests.support.phone import TestCall, TestPhone
from tests.support.sipp import call_number

HANGUP = {"type": "hangup"}
Dial = Callable[[str], Awaitable[TestCall]]


class Ivr:
    """Numbers and menus made by one test; removed afterwards, numbers first."""

    def __init__(self, admin: ApiClient) -> None:
        self.admin = admin
        self.numbers: list[int] = []
        self.menus: list[int] = []

    async def number(self, number: str, default: dict[str, Any], **extra: Any) -> dict[str, Any]:
        reply = await self.admin.post(
            "/numbers",
            {"number": number, "greeting": {"text": "Welcome."}, "default_destination": default,
             **extra},
        )  # fmt: skip
        assert reply.status == 201, reply
        self.numbers.append(reply.body["id"])
        body: dict[str, Any] = reply.body
        return body

    async def menu(self, **fields: Any) -> dict[str, Any]:
        reply = await self.admin.post(
            "/menus", {"name": "Menu", "prompt": {"text": "Menu."}, **fields}
        )
        assert reply.status == 201, reply
        self.menus.append(reply.body["id"])
        menu: dict[str, Any] = reply.body
        return menu

    async def remove_all(self) -> None:
        for number_id in self.numbers:
            await self.admin.delete(f"/numbers/{number_id}")
        for menu_id in self.menus:  # menus may point at each other: cut the links first
            await self.admin.patch(
                f"/menus/{menu_id}", {"options": {}, "final_destination": HANGUP}
            )
        for menu_id in self.menus:
            assert (await self.admin.delete(f"/menus/{menu_id}")).status == 204


@pytest.fixture
async def ivr(admin: ApiClient) -> AsyncIterator[Ivr]:
    made = Ivr(admin)
    yield made
    await made.remove_all()


@pytest.fixture
async def caller(settings: Settings) -> AsyncIterator[Dial]:
    """A PJSUA2 caller from the provider's side (loopback is a trunk source): dial(number)."""
    trunk_side = TestPhone()
    await trunk_side.open_unregistered("4930111999")

    async def dial(number: str) -> TestCall:
        call = await trunk_side.call(f"sip:{number}@{settings.sip.host}:{settings.sip.port}")
        await asyncio.wait_for(call.answered, 10)
        return call

    yield dial
    trunk_side.close()


async def metric(http: aiohttp.ClientSession, api_base: str, line_start: str) -> float:
    async with http.get(api_base.removesuffix("/api/v1") + "/metrics") as response:
        text = await response.text()
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.split()[-1])
    return 0.0


def extension_to(extension: str) -> dict[str, Any]:
    return {"type": "extension", "extension": extension}


# -- menus -----------------------------------------------------------------------------------


async def test_a_greeting_digit_that_starts_no_extension_picks_the_menu_option(
    admin: ApiClient, settings: Settings, phone: MakePhone, ivr: Ivr, tmp_path: Path
) -> None:
    agent, extension = await phone("Sales Agent")
    menu = await ivr.menu(options={"1": extension_to(extension), "3": HANGUP})
    await ivr.number("4930700100", {"type": "menu", "id": menu["id"]})
    sipp = asyncio.create_task(
        call_number(tmp_path, settings.sip.port, "4930700100", digits="1", stay_s=1.0)
    )
    incoming = await agent.next_incoming(timeout=15)
    await asyncio.wait_for(incoming.answered, 5)
    assert (await sipp).succeeded
    record = await wait_for_call(admin, direction="inbound", party="4930700100")
    assert (record["disposition"], record["connected_to"]) == ("answered", extension)


async def test_extensions_win_over_menu_options_during_the_greeting(
    admin: ApiClient, settings: Settings, phone: MakePhone, ivr: Ivr, tmp_path: Path
) -> None:
    # Extension 12 vs option 1: "12" is the extension; "1" alone (then nothing) the option.
    # Extension 1 vs option 1: "1" is the extension.
    option_agent, option_extension = await phone("Option One")
    twelve = await admin.new_user("Twelve")
    one = await admin.new_user("One")
    twelve_agent, one_agent = TestPhone(auto_answer=200), TestPhone(auto_answer=200)
    menu = await ivr.menu(options={"1": extension_to(option_extension)})
    await ivr.number("4930700200", {"type": "menu", "id": menu["id"]})

    async def rings(digits: str, expected: TestPhone) -> None:
        sipp = asyncio.create_task(
            call_number(tmp_path, settings.sip.port, "4930700200", digits=digits, stay_s=1.0)
        )
        incoming = await expected.next_incoming(timeout=15)
        await asyncio.wait_for(incoming.answered, 5)
        assert (await sipp).succeeded, digits

    try:
        await _register(admin, settings, twelve_agent, twelve["id"], "12")
        await rings("12", twelve_agent)
        await rings("1", option_agent)  # then nothing: after the inter-digit timeout
        await _register(admin, settings, one_agent, one["id"], "1")
        await rings("1", one_agent)
        assert option_agent.incoming.empty() and twelve_agent.incoming.empty()
    finally:
        for user in (twelve, one):
            await admin.delete(f"/users/{user['id']}/extension")
        twelve_agent.close()
        one_agent.close()


async def test_nested_menus_invalid_key_and_back(
    admin: ApiClient, settings: Settings, phone: MakePhone, ivr: Ivr, caller: Dial,
    http: aiohttp.ClientSession, api_base: str,
) -> None:  # fmt: skip
    agent, extension = await phone("Nested Agent")
    top = await ivr.menu(name="Top", options={"1": extension_to(extension)}, timeout_s=8)
    sub = await ivr.menu(
        name="Sub", options={"0": {"type": "back"}, "9": {"type": "repeat"}}, timeout_s=8
    )
    into_sub = {"1": extension_to(extension), "4": {"type": "menu", "id": sub["id"]}}
    assert (await admin.patch(f"/menus/{top['id']}", {"options": into_sub})).status == 200
    await ivr.number("4930700300", {"type": "menu", "id": top["id"]})
    invalid_before = await metric(http, api_base, 'pbx_menu_choices_total{result="invalid"}')
    back_before = await metric(http, api_base, 'pbx_menu_choices_total{result="back"}')
    call = await caller("4930700300")
    # 4 during the greeting: the sub menu; 8: invalid there; 9: repeat; 0: back; 1: the agent.
    for key in "48901":
        await asyncio.sleep(1.2)
        await call.send_dtmf(key)
    incoming = await agent.next_incoming(timeout=10)
    await asyncio.wait_for(incoming.answered, 5)
    await asyncio.sleep(1.0)  # bridged; then the caller leaves
    await call.hangup()
    record = await wait_for_call(admin, direction="inbound", party="4930700300")
    assert (record["disposition"], record["connected_to"]) == ("answered", extension)
    assert await metric(http, api_base, 'pbx_menu_choices_total{result="invalid"}') == (
        invalid_before + 1
    )
    assert await metric(http, api_base, 'pbx_menu_choices_total{result="back"}') == back_before + 1


async def test_timeouts_exhaust_the_retries_and_take_the_final_destination(
    admin: ApiClient, settings: Settings, ivr: Ivr, tmp_path: Path,
    http: aiohttp.ClientSession, api_base: str,
) -> None:  # fmt: skip
    menu = await ivr.menu(timeout_s=1, retries=1, final_destination=HANGUP,
                          options={"1": HANGUP}, timeout_prompt={"text": "Hello?"})  # fmt: skip
    await ivr.number("4930700400", {"type": "menu", "id": menu["id"]}, extension_dialing=False)
    timeouts = await metric(http, api_base, 'pbx_menu_choices_total{result="timeout"}')
    finals = await metric(http, api_base, 'pbx_menu_choices_total{result="final"}')
    result = await call_number(
        tmp_path, settings.sip.port, "4930700400", hang_up="remote", timeout_s=40
    )
    assert result.succeeded, result.output
    record = await wait_for_call(admin, direction="inbound", party="4930700400")
    assert (record["disposition"], record["hangup_by"]) == ("ended_in_ivr", "system")
    assert await metric(http, api_base, 'pbx_menu_choices_total{result="timeout"}') == timeouts + 2
    assert await metric(http, api_base, 'pbx_menu_choices_total{result="final"}') == finals + 1


async def test_dialling_a_menus_extension_during_the_greeting_enters_it(
    admin: ApiClient, settings: Settings, phone: MakePhone, ivr: Ivr, caller: Dial,
    next_extension: Callable[[], str],
) -> None:  # fmt: skip
    agent, extension = await phone("Menu Extension Agent")
    menu_extension = next_extension()
    await ivr.menu(extension=menu_extension, options={"7": extension_to(extension)})
    await ivr.number("4930700500", HANGUP)
    call = await caller("4930700500")
    await asyncio.sleep(0.8)
    await call.send_dtmf(menu_extension)
    await asyncio.sleep(2.0)
    await call.send_dtmf("7")
    incoming = await agent.next_incoming(timeout=10)
    await asyncio.wait_for(incoming.answered, 5)
    await asyncio.sleep(1.0)  # bridged; then the caller leaves
    await call.hangup()


async def test_a_phone_dialling_a_menus_extension_is_answered_by_the_menu(
    settings: Settings, phone: MakePhone, ivr: Ivr, next_extension: Callable[[], str]
) -> None:
    desk, _ = await phone("Internal Menu Caller")
    agent, extension = await phone("Internal Menu Agent")
    menu_extension = next_extension()
    await ivr.menu(extension=menu_extension, options={"3": extension_to(extension)})
    call = await desk.call(f"sip:{menu_extension}@{settings.sip.host}:{settings.sip.port}")
    await asyncio.wait_for(call.answered, 10)
    await asyncio.sleep(1.0)
    await call.send_dtmf("3")
    incoming = await agent.next_incoming(timeout=10)
    await asyncio.wait_for(incoming.answered, 5)
    await asyncio.sleep(1.0)  # bridged; then the caller leaves
    await call.hangup()


# -- business hours --------------------------------------------------------------------------


async def test_business_hours_at_fixed_clock_times(
    admin: ApiClient, settings: Settings, phone: MakePhone, ivr: Ivr, tmp_path: Path,
    clock: TestClock,
) -> None:  # fmt: skip
    open_agent, open_extension = await phone("Daytime Agent")
    closed_agent, closed_extension = await phone("Night Agent")
    number = await ivr.number("4930700600", HANGUP)
    hours = await admin.put(
        f"/numbers/{number['id']}/hours",
        {"time_zone": "Europe/Berlin",
         "weekly": {day: [{"from": "09:00", "to": "17:00"}] for day in ("mon", "fri")},
         "holidays": [{"date": "2026-12-25", "name": "Christmas"}],
         "off_hours_prompt": {"text": "We are closed."},
         "off_hours_destination": extension_to(closed_extension)},
    )  # fmt: skip
    assert hours.status == 200, hours
    moments = [
        (datetime(2026, 11, 30, 19, 0, tzinfo=UTC), closed_agent),  # Monday 20:00 in Berlin
        (datetime(2026, 11, 30, 9, 0, tzinfo=UTC), open_agent),  # Monday 10:00
        (datetime(2026, 12, 25, 9, 0, tzinfo=UTC), closed_agent),  # Friday, Christmas
        (datetime(2026, 12, 2, 9, 0, tzinfo=UTC), closed_agent),  # Wednesday: no hours
    ]
    try:
        for now, expected in moments:
            clock.fixed = now
            # Dialled during the short greeting: at 1.5 s the digits raced the 1 s wait after
            # it, and lost once on a loaded CI machine.
            sipp = asyncio.create_task(
                call_number(tmp_path, settings.sip.port, "4930700600", digits=open_extension,
                            digits_after_s=0.5, stay_s=1.0)
            )  # fmt: skip
            incoming = await expected.next_incoming(timeout=20)
            await asyncio.wait_for(incoming.answered, 5)
            assert (await sipp).succeeded, now
        assert open_agent.incoming.empty() and closed_agent.incoming.empty()
    finally:
        clock.fixed = None


# -- voicemail -------------------------------------------------------------------------------


async def test_a_voicemail_left_by_a_phone_is_retrievable_and_not_silent(
    admin: ApiClient, settings: Settings, ivr: Ivr, caller: Dial,
    http: aiohttp.ClientSession, api_base: str,
) -> None:  # fmt: skip
    owner = await admin.new_user("Voicemail Owner")
    box = await admin.post(
        "/voicemail/boxes",
        {"owner": {"type": "user", "id": owner["id"]}, "greeting": {"text": "Leave a message."}},
    )
    assert box.status == 201, box
    box_id = box.body["id"]
    await ivr.number("4930700700", {"type": "voicemail", "box": box_id})
    saved_before = await metric(http, api_base, 'pbx_voicemail_messages_total{outcome="saved"}')
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with http.ws_connect(api_base + "/events", headers=headers) as ws:
        call = await caller("4930700700")  # the phone sends its 600 Hz tone all along
        await asyncio.sleep(5.5)  # greeting (~1.5 s), beep, then about 3 s of message
        await call.send_dtmf("#")
        assert await asyncio.wait_for(call.ended, 15) == 200  # "saved", then the service's BYE
        left = await next_event(ws, "voicemail_message_left")
    assert (left["data"]["box_id"], left["data"]["owner_user_id"]) == (box_id, owner["id"])
    record = await wait_for_call(admin, direction="inbound", party="4930700700")
    assert (record["disposition"], record["hangup_by"]) == ("voicemail", "system")
    messages = (await admin.get(f"/voicemail/boxes/{box_id}/messages")).body["items"]
    assert len(messages) == 1
    message = messages[0]
    assert message["caller"] == "4930111999" and message["call_id"] == record["id"]
    assert 1.5 < message["seconds"] < 5.0 and message["heard"] is False
    assert (await admin.get(f"/voicemail/boxes/{box_id}")).body["unheard"] == 1

    async with http.get(api_base.removesuffix("/api/v1") + message["audio"],
                        headers=headers) as response:  # fmt: skip
        assert response.status == 200 and response.content_type == "audio/wav"
        audio = await response.read()
    with wave.open(io.BytesIO(audio)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (8000, 1, 2)
        samples = array.array("h", wav.readframes(wav.getnframes()))
    assert max(samples) > 3000, "the message should hold the caller's tone, not silence"
    loud = sum(1 for s in samples if abs(s) > 1000) / len(samples)
    assert loud > 0.3, f"only {loud:.0%} of the message carries signal"

    heard = await admin.patch(f"/voicemail/messages/{message['id']}", {"heard": True})
    assert heard.body["heard"] is True and heard.body["heard_at"]
    assert (await admin.get(f"/voicemail/boxes/{box_id}/messages", params={"heard": "false"})
            ).body["items"] == []  # fmt: skip
    assert await metric(http, api_base, 'pbx_voicemail_messages_total{outcome="saved"}') == (
        saved_before + 1
    )
    # The owner may delete their own message; the file goes with it.
    mine = admin.as_token(await admin.token_for(owner["id"]))
    assert (await mine.delete(f"/voicemail/messages/{message['id']}")).status == 204
    assert (await admin.get(f"/voicemail/messages/{message['id']}")).status == 404
    wav_files = list((settings.data_dir / "voicemail" / str(box_id)).glob("*.wav"))
    assert wav_files == []


async def test_unanswered_extension_goes_to_voicemail_and_silence_ends_the_message(
    admin: ApiClient, settings: Settings, phone: MakePhone, ivr: Ivr, tmp_path: Path
) -> None:
    # The ringing phone never answers (ring timeout 5 s); the SIPp caller sends no audio, so
    # the recording ends after the configured 2 s of silence and the service hangs up.
    _, extension = await phone("Away Agent", auto_answer=None)
    owner = (await admin.get("/extensions")).body["items"]
    owner_id = next(e["holder"]["id"] for e in owner if e["extension"] == extension)
    box = await admin.post(
        "/voicemail/boxes",
        {"owner": {"type": "user", "id": owner_id}, "greeting": {"text": "Message please."}},
    )
    await ivr.number("4930700800", HANGUP,
                  no_answer_destination={"type": "voicemail", "box": box.body["id"]})  # fmt: skip
    result = await call_number(
        tmp_path, settings.sip.port, "4930700800", digits=extension, hang_up="remote",
        timeout_s=40,
    )  # fmt: skip
    assert result.succeeded, result.output
    record = await wait_for_call(admin, direction="inbound", party="4930700800")
    assert (record["disposition"], record["hangup_by"]) == ("voicemail", "system")
    messages = (await admin.get(f"/voicemail/boxes/{box.body['id']}/messages")).body["items"]
    assert len(messages) == 1 and 1.5 < messages[0]["seconds"] < 4.0


async def test_a_caller_hanging_up_mid_message_keeps_the_message(
    admin: ApiClient, ivr: Ivr, caller: Dial
) -> None:
    owner = await admin.new_user("Hang-up Owner")
    box = await admin.post(
        "/voicemail/boxes",
        {"owner": {"type": "user", "id": owner["id"]}, "greeting": {"text": "Hi."}},
    )
    await ivr.number("4930700900", {"type": "voicemail", "box": box.body["id"]})
    call = await caller("4930700900")
    await asyncio.sleep(6.0)  # the greeting and the beep, then a few seconds of message
    await call.hangup()
    record = await wait_for_call(admin, direction="inbound", party="4930700900")
    assert (record["disposition"], record["hangup_by"]) == ("voicemail", "caller")
    async with asyncio.timeout(10):
        while not (items := (await admin.get(f"/voicemail/boxes/{box.body['id']}/messages")
                             ).body["items"]):  # fmt: skip
            await asyncio.sleep(0.2)
    assert 1.0 < items[0]["seconds"] < 6.0


# -- helpers ---------------------------------------------------------------------------------


async def _register(
    admin: ApiClient, settings: Settings, desk: TestPhone, user_id: int, extension: str
) -> None:
    """Give the user a (short) extension and register `desk` on it."""
    sip = (await admin.assign(user_id, extension))["sip"]
    status = await desk.register(extension, sip["password"], settings.sip.domain,
                                 settings.sip.host, settings.sip.port)  # fmt: skip
    assert status == 200
