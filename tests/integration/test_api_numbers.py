"""The inbound numbers contract: validation, conflicts, destinations, roles, events."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from core.settings import Settings
from ivr.prompts import text_prompt_path
from tests.conftest import ADMIN_TOKEN
from tests.integration.test_event_stream import next_event
from tests.support.api_client import ApiClient

HANGUP = {"type": "hangup"}


def number_body(number: str, **extra: Any) -> dict[str, Any]:
    return {"number": number, "greeting": {"text": "Hello"}, "default_destination": HANGUP, **extra}


async def test_create_read_patch_delete(
    admin: ApiClient, next_extension: Callable[[], str]
) -> None:
    user = await admin.new_user("Number Target")
    extension = next_extension()
    await admin.assign(user["id"], extension)
    created = await admin.post(
        "/numbers",
        number_body("+4930100200", name="Main line",
                    no_answer_destination={"type": "extension", "extension": extension}),
    )  # fmt: skip
    assert created.status == 201, created
    number_id = created.body["id"]
    assert created.body["extension_dialing"] is True
    assert created.body["no_answer_destination"] == {"type": "extension", "extension": extension}
    assert (await admin.get(f"/numbers/{number_id}")).body["name"] == "Main line"
    patched = await admin.patch(
        f"/numbers/{number_id}", {"extension_dialing": False, "greeting": {"text": "Hi again"}}
    )
    assert patched.status == 200
    assert patched.body["extension_dialing"] is False
    assert patched.body["greeting"] == {"text": "Hi again", "prompt_id": None}
    assert patched.body["name"] == "Main line"
    assert number_id in [n["id"] for n in (await admin.get("/numbers")).body["items"]]
    assert (await admin.delete(f"/numbers/{number_id}")).status == 204
    assert (await admin.get(f"/numbers/{number_id}")).status == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"greeting": {"text": "x"}, "default_destination": HANGUP}, "number"),
        (number_body("12ab"), "number"),
        (number_body("1"), "number"),
        (number_body("+4930", greeting={"text": ""}), "greeting.text"),
        (number_body("+4930", greeting={"prompt": 1}), "greeting.prompt"),
        (number_body("+4930", greeting={}), "greeting"),
        (number_body("+4930", greeting={"text": "a", "prompt_id": 1}), "greeting"),
        (number_body("+4930", default_destination={"type": "fax"}), "default_destination"),
        (
            number_body("+4930", default_destination={"type": "extension", "extension": "12345"}),
            "default_destination.extension.extension",
        ),
        (
            number_body("+4930", default_destination={"type": "number", "number": "abc"}),
            "default_destination.number.number",
        ),
        (number_body("+4930", surprise=True), "surprise"),
        (number_body("+" + "4" * 21), "number"),
        (number_body("49 30 123"), "number"),
        (number_body("+4930", name="n" * 201), "name"),
        (number_body("+4930", greeting={"text": "x" * 2001}), "greeting.text"),
        (number_body("+4930", greeting={"prompt_id": 0}), "greeting.prompt_id"),
        (number_body("+4930", extension_dialing="sometimes"), "extension_dialing"),
        ({"number": "+4930", "greeting": {"text": "Hi"}}, "default_destination"),
        (
            number_body("+4930", no_answer_destination={"type": "queue"}),
            "no_answer_destination.queue.id",
        ),
    ],
)
async def test_invalid_number_is_422_naming_the_field(
    admin: ApiClient, body: dict[str, Any], field: str
) -> None:
    reply = await admin.post("/numbers", body)
    assert reply.status == 422, reply
    assert reply.body["error"]["field"] == field


async def test_unknown_queue_destination_is_refused(admin: ApiClient) -> None:
    reply = await admin.post(
        "/numbers", number_body("+4930300450", default_destination={"type": "queue", "id": 999})
    )
    assert reply.status == 422
    assert reply.error_code == "unknown_queue"
    assert reply.body["error"]["field"] == "default_destination.id"


@pytest.mark.parametrize(
    ("kind", "code", "field"),
    [
        ({"type": "menu", "id": 999999}, "unknown_menu", "default_destination.id"),
        ({"type": "voicemail", "box": 999999}, "unknown_voicemail_box", "default_destination.box"),
    ],
)
async def test_menus_and_voicemail_boxes_must_exist(
    admin: ApiClient, kind: dict[str, Any], code: str, field: str
) -> None:
    reply = await admin.post("/numbers", number_body("+4930300400", default_destination=kind))
    assert reply.status == 422 and reply.error_code == code
    assert reply.body["error"]["field"] == field


async def test_unknown_extension_destination_is_refused(admin: ApiClient) -> None:
    reply = await admin.post(
        "/numbers",
        number_body("+4930300500", default_destination={"type": "extension", "extension": "9876"}),
    )
    assert reply.status == 422 and reply.error_code == "unknown_extension"


async def test_duplicate_number_is_409(admin: ApiClient) -> None:
    first = await admin.post("/numbers", number_body("+4930600700"))
    assert first.status == 201
    again = await admin.post("/numbers", number_body("+4930600700"))
    assert again.status == 409 and again.error_code == "number_taken"
    other = await admin.post("/numbers", number_body("+4930600701"))
    moved = await admin.patch(f"/numbers/{other.body['id']}", {"number": "+4930600700"})
    assert moved.status == 409 and moved.error_code == "number_taken"


async def test_operators_cannot_configure_numbers(admin: ApiClient) -> None:
    user = await admin.new_user("No Numbers")
    operator = admin.as_token(await admin.token_for(user["id"]))
    assert (await operator.post("/numbers", number_body("+4930800900"))).status == 403
    assert (await operator.get("/numbers")).status == 403


async def test_greeting_text_becomes_a_playable_non_silent_wav(
    admin: ApiClient, settings: Settings
) -> None:
    reply = await admin.post("/numbers", number_body("+4930900100", greeting={"text": "Welcome"}))
    assert reply.status == 201
    # The same cache the service filled when the number was saved.
    wav: Path = await text_prompt_path(
        settings.data_dir / "prompts", "Welcome", settings.prompts.voice
    )
    info = subprocess.run(["soxi", str(wav)], capture_output=True, text=True, check=True).stdout
    assert "Sample Rate    : 8000" in info and "Channels       : 1" in info
    stat = subprocess.run(["sox", str(wav), "-n", "stat"], capture_output=True, text=True).stderr
    rms = float(next(line for line in stat.splitlines() if "RMS     amplitude" in line).split()[-1])
    assert rms > 0.01


async def test_patch_validates_like_create(
    admin: ApiClient, next_extension: Callable[[], str]
) -> None:
    created = await admin.post("/numbers", number_body("+4930700800"))
    path = f"/numbers/{created.body['id']}"
    bad_shape = await admin.patch(path, {"default_destination": {"type": "number", "number": "x"}})
    assert bad_shape.status == 422
    assert bad_shape.body["error"]["field"] == "default_destination.number.number"
    unavailable = await admin.patch(path, {"no_answer_destination": {"type": "queue", "id": 99999}})
    assert unavailable.status == 422 and unavailable.error_code == "unknown_queue"
    assert unavailable.body["error"]["field"] == "no_answer_destination.id"
    unknown = await admin.patch(
        path, {"no_answer_destination": {"type": "extension", "extension": next_extension()}}
    )
    assert unknown.status == 422 and unknown.error_code == "unknown_extension"
    assert unknown.body["error"]["field"] == "no_answer_destination.extension"
    assert (await admin.patch(path, {"surprise": 1})).body["error"]["field"] == "surprise"
    # Nothing of the refused changes was applied.
    assert (await admin.get(path)).body == created.body
    assert (await admin.patch("/numbers/999999", {"name": "Ghost"})).error_code == "not_found"
    assert (await admin.delete("/numbers/999999")).status == 404


async def test_no_answer_destination_defaults_to_the_default_and_can_be_cleared(
    admin: ApiClient,
) -> None:
    created = await admin.post(
        "/numbers", number_body("+4930700900", no_answer_destination={"type": "hangup"})
    )
    assert created.body["no_answer_destination"] == HANGUP
    cleared = await admin.patch(f"/numbers/{created.body['id']}", {"no_answer_destination": None})
    assert cleared.status == 200 and cleared.body["no_answer_destination"] is None


async def test_supervisors_read_numbers_but_do_not_change_them(admin: ApiClient) -> None:
    created = await admin.post("/numbers", number_body("+4930801000"))
    user = await admin.new_user("Number Supervisor", role="supervisor")
    supervisor = admin.as_token(await admin.token_for(user["id"]))
    assert (await supervisor.get("/numbers")).status == 200
    assert (await supervisor.get(f"/numbers/{created.body['id']}")).status == 200
    assert (await supervisor.post("/numbers", number_body("+4930801001"))).status == 403
    assert (await supervisor.patch(f"/numbers/{created.body['id']}", {"name": "x"})).status == 403
    assert (await supervisor.delete(f"/numbers/{created.body['id']}")).status == 403
    assert (await admin.as_token(None).get("/numbers")).status == 401


async def test_number_changes_are_published_live(
    admin: ApiClient, http: aiohttp.ClientSession, api_base: str
) -> None:
    url = f"{api_base}/events?types=number_created,number_updated,number_deleted"
    async with http.ws_connect(url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as ws:
        created = await admin.post("/numbers", number_body("+4930901100", name="Sales"))
        event = await next_event(ws, "number_created")
        assert event["data"]["id"] == created.body["id"]
        assert event["data"]["number"] == "+4930901100" and event["data"]["name"] == "Sales"
        await admin.patch(f"/numbers/{created.body['id']}", {"extension_dialing": False})
        updated = await next_event(ws, "number_updated")
        assert updated["data"]["extension_dialing"] is False
        await admin.delete(f"/numbers/{created.body['id']}")
        deleted = await next_event(ws, "number_deleted")
        assert deleted["data"]["number"] == "+4930901100"
        assert deleted["id"] > updated["id"] > event["id"]


@pytest.mark.parametrize(
    "field", ["number", "name", "greeting", "default_destination", "extension_dialing"]
)
async def test_patch_with_null_for_a_required_field_is_422(admin: ApiClient, field: str) -> None:
    created = await admin.post("/numbers", number_body(f"+49301{len(field):02d}0999"))
    reply = await admin.patch(f"/numbers/{created.body['id']}", {field: None})
    assert reply.status == 422 and reply.body["error"]["field"] == field
    await admin.delete(f"/numbers/{created.body['id']}")


async def test_released_extension_does_not_block_unrelated_edits(
    admin: ApiClient, next_extension: Callable[[], str]
) -> None:
    user = await admin.new_user("Soon Released")
    extension = next_extension()
    await admin.assign(user["id"], extension)
    created = await admin.post(
        "/numbers",
        number_body("+4930711711",
                    default_destination={"type": "extension", "extension": extension}),
    )  # fmt: skip
    await admin.delete(f"/users/{user['id']}/extension")
    renamed = await admin.patch(f"/numbers/{created.body['id']}", {"name": "Renamed"})
    assert renamed.status == 200 and renamed.body["name"] == "Renamed"
