"""Call recording on the in-memory workers: which connected calls the service records (its
number, queue or user asks; internal calls never), and the recording on the call record and
behind GET /calls/{id}/recording. That the WAV holds both voices is tested with real phones
(tests/integration/test_media_workers.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from core.settings import Settings
from ivr.prompts import text_prompt_path
from pbx.memory_worker import FarEnd, MemoryWorkers
from pbx.protocol import Record
from tests.flows.builders import (
    HANGUP,
    User,
    call_record,
    caller_number,
    company_number,
    extension_to,
    queue,
    set_presence,
    user,
)
from tests.flows.conftest import RECORDING_ANNOUNCEMENT, Events
from tests.support.api_client import ApiClient


async def download(admin: ApiClient, call_id: int, token: str | None = None) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token or admin.token}"}
    url = f"{admin.base_url}/calls/{call_id}/recording"
    async with admin.session.get(url, headers=headers) as response:
        return response.status, await response.read()


async def talk_and_hang_up(
    twin: MemoryWorkers, caller: FarEnd, phone: FarEnd, *, recorded: bool
) -> None:
    phone.ring()
    phone.answer()
    await twin.until(lambda: caller.bridged_to is phone and caller.recording is recorded)
    caller.hang_up()


async def extension_call(
    admin: ApiClient, twin: MemoryWorkers, desk: User, **number_fields: Any
) -> tuple[str, FarEnd, FarEnd]:
    """A provider's call to a number whose default destination is the desk's extension."""
    number = await company_number(admin, extension_to(desk), extension_dialing=False,
                                  **number_fields)  # fmt: skip
    calling = caller_number()
    caller = twin.call_in(calling, number)
    phone = await twin.dialled(desk.extension)
    return calling, caller, phone


def recorded_legs(twin: MemoryWorkers) -> list[tuple[str, bool]]:
    return [(r.leg, r.both_sides) for r in twin.sent(Record)]


async def test_a_number_that_records_has_its_connected_calls_recorded_with_both_voices(
    admin: ApiClient, twin: MemoryWorkers, events: Events, flow_settings: Settings,
    next_extension: Callable[[], str],
) -> None:  # fmt: skip
    desk = await user(admin, next_extension)
    before = len(twin.sent(Record))
    calling, caller, phone = await extension_call(admin, twin, desk, record_calls=True)
    await talk_and_hang_up(twin, caller, phone, recorded=True)
    announcement = await text_prompt_path(
        flow_settings.data_dir / "prompts", RECORDING_ANNOUNCEMENT, flow_settings.prompts.voice
    )
    assert caller.prompts[-1] == announcement, "the caller heard it before being connected"
    assert announcement not in phone.prompts
    recorded = await events.next("call_recorded")
    ended = await events.next("call_ended", caller=calling)
    assert recorded["call_id"] == ended["call_id"] and recorded["user_id"] == desk.id
    assert recorded_legs(twin)[before:] == [(caller.leg_id, True)]

    record = await call_record(admin, ended["call_id"])
    assert record["recording_seconds"] == recorded["seconds"]
    status, wav = await download(admin, ended["call_id"])
    assert status == 200 and wav.startswith(b"RIFF")
    listed = await admin.get("/calls", params={"recorded": "true", "party": calling})
    assert [c["id"] for c in listed.body["items"]] == [ended["call_id"]]
    assert (await admin.get("/calls", params={"recorded": "false", "party": calling})).body[
        "total"
    ] == 0
    path = flow_settings.data_dir / "recordings"
    assert any(path.rglob(f"call-{ended['call_id']}.wav"))


async def test_a_queue_or_an_agent_that_records_gets_its_calls_recorded(
    admin: ApiClient, twin: MemoryWorkers, events: Events, next_extension: Callable[[], str]
) -> None:
    careful = await user(admin, next_extension, status="ready")
    assert (await admin.patch(f"/users/{careful.id}", {"record_calls": True})).body["record_calls"]
    recording_queue_member = await user(admin, next_extension, status="ready")
    for agent, queue_records in ((recording_queue_member, True), (careful, False)):
        queue_id = await queue(admin, [agent], record_calls=queue_records)
        number = await company_number(admin, {"type": "queue", "id": queue_id},
                                      extension_dialing=False)  # fmt: skip
        calling = caller_number()
        caller = twin.call_in(calling, number)
        await talk_and_hang_up(twin, caller, await twin.dialled(agent.extension), recorded=True)
        ended = await events.next("call_ended", caller=calling)
        recorded = await events.next("call_recorded", call_id=ended["call_id"])
        assert recorded["user_id"] == agent.id
        await set_presence(admin, agent.id, "logged_out")


async def test_calls_nobody_asked_to_record_and_internal_calls_are_not_recorded(
    admin: ApiClient, twin: MemoryWorkers, events: Events, next_extension: Callable[[], str]
) -> None:
    desk = await user(admin, next_extension)
    careful = await user(admin, next_extension)
    await admin.patch(f"/users/{careful.id}", {"record_calls": True})
    before = len(twin.sent(Record))
    calling, caller, phone = await extension_call(admin, twin, desk)
    await talk_and_hang_up(twin, caller, phone, recorded=False)
    ended = await events.next("call_ended", caller=calling)
    # Internal: the recording user calls a colleague from their desk phone.
    internal = twin.call_in(careful.extension, desk.extension, source="phone")
    await talk_and_hang_up(twin, internal, await twin.dialled(desk.extension), recorded=False)
    await events.next("call_ended", caller=careful.extension)
    assert recorded_legs(twin)[before:] == []

    status, body = await download(admin, ended["call_id"])
    assert status == 404 and b"no_recording" in body
    assert (await call_record(admin, ended["call_id"]))["recording_seconds"] is None
    operator = await admin.token_for(desk.id)
    assert (await download(admin, ended["call_id"], operator))[0] == 403
    assert (await download(admin, 999_999))[0] == 404


async def test_record_calls_is_part_of_numbers_queues_and_users(admin: ApiClient) -> None:
    number = await admin.post("/numbers", {
        "number": "4930999123", "greeting": {"text": "Hi."}, "default_destination": HANGUP,
        "record_calls": True,
    })  # fmt: skip
    assert number.status == 201 and number.body["record_calls"] is True
    changed = await admin.patch(f"/numbers/{number.body['id']}", {"record_calls": False})
    assert changed.body["record_calls"] is False
    bad = await admin.patch(f"/numbers/{number.body['id']}", {"record_calls": "often"})
    assert bad.status == 422
    made = await admin.post("/queues", {"name": "Recorded queue", "record_calls": True})
    assert made.body["record_calls"] is True
    person = await admin.post("/users", {"name": "Recorded person"})
    assert person.body["record_calls"] is False
    for field in ("record_calls", "name", "role", "active"):
        refused = await admin.patch(f"/users/{person.body['id']}", {field: None})
        assert (refused.status, refused.error_code) == (422, "invalid"), field
