"""The IVR contract over HTTP: menus, business hours and voicemail boxes (validation,
references, namespace, roles, events)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp

from tests.conftest import ADMIN_TOKEN
from tests.integration.test_event_stream import next_event
from tests.support.api_client import ApiClient

NextExtension = Callable[[], str]
HANGUP = {"type": "hangup"}


def menu_body(name: str = "Main menu", **extra: Any) -> dict[str, Any]:
    return {"name": name, "prompt": {"text": "Press 1 for sales."}, **extra}


def number_body(number: str, destination: dict[str, Any]) -> dict[str, Any]:
    return {"number": number, "greeting": {"text": "Hello"}, "default_destination": destination}


async def new_menu(admin: ApiClient, **extra: Any) -> dict[str, Any]:
    reply = await admin.post("/menus", menu_body(**extra))
    assert reply.status == 201, reply
    menu: dict[str, Any] = reply.body
    return menu


# -- menus -----------------------------------------------------------------------------------


async def test_menu_create_read_patch_delete_with_its_extension(
    admin: ApiClient, http: aiohttp.ClientSession, api_base: str, next_extension: NextExtension
) -> None:
    user = await admin.new_user("Menu Sales")
    sales = next_extension()
    await admin.assign(user["id"], sales)
    extension = next_extension()
    async with http.ws_connect(
        api_base + "/events", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    ) as ws:
        created = await admin.post(
            "/menus",
            menu_body(
                extension=extension,
                options={
                    "1": {"type": "extension", "extension": sales},
                    "9": {"type": "repeat"},
                    "0": {"type": "back"},
                    "#": {"type": "hangup"},
                    "*": {"type": "number", "number": "+4930123456"},
                },
                timeout_s=3,
                retries=1,
                invalid_prompt={"text": "Not a choice."},
            ),
        )
        assert created.status == 201, created
        menu = created.body
        event = await next_event(ws, "menu_created")
        assert event["data"]["id"] == menu["id"] and event["data"]["extension"] == extension
        assigned = await next_event(ws, "extension_assigned")
        assert assigned["data"]["holder"] == {"type": "menu", "id": menu["id"]}
    assert menu["final_destination"] == HANGUP
    assert menu["timeout_prompt"] is None
    assert menu["invalid_prompt"] == {"text": "Not a choice.", "prompt_id": None}
    assert (await admin.get(f"/menus/{menu['id']}")).body == menu
    namespace = (await admin.get("/extensions")).body["items"]
    assert {"type": "menu", "id": menu["id"], "name": None} in [
        e["holder"] for e in namespace if e["extension"] == extension
    ]
    # Another holder cannot take the menu's extension.
    other = await admin.new_user("Wants The Menu Number")
    taken = await admin.put(f"/users/{other['id']}/extension", {"extension": extension})
    assert taken.status == 409 and taken.body["error"]["holder"]["type"] == "menu"

    moved = next_extension()
    patched = await admin.patch(
        f"/menus/{menu['id']}", {"extension": moved, "retries": 3, "invalid_prompt": None}
    )
    assert patched.status == 200, patched
    assert (patched.body["extension"], patched.body["retries"]) == (moved, 3)
    assert patched.body["invalid_prompt"] is None
    assert patched.body["options"] == menu["options"]
    # The old number is free again.
    assert (
        await admin.put(f"/users/{other['id']}/extension", {"extension": extension})
    ).status == 200
    assert menu["id"] in [m["id"] for m in (await admin.get("/menus")).body["items"]]
    assert (await admin.delete(f"/menus/{menu['id']}")).status == 204
    assert (await admin.get(f"/menus/{menu['id']}")).status == 404
    assert moved not in [e["extension"] for e in (await admin.get("/extensions")).body["items"]]


async def test_invalid_menus_are_422_naming_the_field(
    admin: ApiClient, next_extension: NextExtension
) -> None:
    cases: list[tuple[dict[str, Any], str, str]] = [
        (menu_body(options={"10": HANGUP}), "validation_error", "options.10.[key]"),
        (menu_body(options={"a": HANGUP}), "validation_error", "options.a.[key]"),
        (menu_body(options={"1": {"type": "fax"}}), "validation_error", "options.1"),
        (menu_body(prompt={}), "validation_error", "prompt"),
        (menu_body(timeout_s=0), "validation_error", "timeout_s"),
        (menu_body(retries=11), "validation_error", "retries"),
        (menu_body(extension="12345"), "validation_error", "extension"),
        ({"prompt": {"text": "x"}}, "validation_error", "name"),
        (menu_body(options={"1": {"type": "queue", "id": 999999}}), "unknown_queue",
         "options.1.id"),
        (menu_body(options={"1": {"type": "extension", "extension": next_extension()}}),
         "unknown_extension", "options.1.extension"),
        (menu_body(options={"1": {"type": "menu", "id": 999999}}), "unknown_menu", "options.1.id"),
        (menu_body(final_destination={"type": "voicemail", "box": 999999}),
         "unknown_voicemail_box", "final_destination.box"),
        (menu_body(prompt={"prompt_id": 999999}), "unknown_prompt", "prompt.prompt_id"),
    ]  # fmt: skip
    for body, code, field in cases:
        reply = await admin.post("/menus", body)
        assert reply.status == 422, (body, reply)
        assert (reply.error_code, reply.body["error"]["field"]) == (code, field), body


async def test_a_menu_that_can_reach_nothing_is_refused(admin: ApiClient) -> None:
    first = await new_menu(admin, name="Loop A")
    second = await new_menu(
        admin, name="Loop B", options={"0": {"type": "back"}},
        final_destination={"type": "menu", "id": first["id"]},
    )  # fmt: skip
    # Now A's only way out would be B, whose only way out is A: neither reaches anything.
    looping = await admin.patch(
        f"/menus/{first['id']}",
        {"options": {"1": {"type": "menu", "id": second["id"]}, "9": {"type": "repeat"}},
         "final_destination": {"type": "menu", "id": second["id"]}},
    )  # fmt: skip
    assert looping.status == 422 and looping.error_code == "menu_reaches_nothing"
    assert looping.body["error"]["menus"] == sorted([first["id"], second["id"]])
    # A cycle with one way out is fine.
    cycle = await admin.patch(
        f"/menus/{first['id']}",
        {"options": {"1": {"type": "menu", "id": second["id"]}, "2": HANGUP},
         "final_destination": {"type": "menu", "id": second["id"]}},
    )  # fmt: skip
    assert cycle.status == 200, cycle
    # ... and its way out cannot be removed.
    stuck = await admin.patch(f"/menus/{first['id']}", {"options": {"9": {"type": "repeat"}}})
    assert stuck.status == 422 and stuck.error_code == "menu_reaches_nothing"
    assert (await admin.get(f"/menus/{first['id']}")).body == cycle.body
    await admin.patch(f"/menus/{first['id']}", {"final_destination": HANGUP, "options": {}})
    assert (await admin.delete(f"/menus/{second['id']}")).status == 204
    assert (await admin.delete(f"/menus/{first['id']}")).status == 204


async def test_deleting_a_menu_something_points_at_is_409_naming_them(
    admin: ApiClient, next_extension: NextExtension
) -> None:
    extension = next_extension()
    target = await new_menu(admin, name="Target", extension=extension)
    pointing = await new_menu(
        admin, name="Pointing", options={"4": {"type": "menu", "id": target["id"]}}
    )
    number = await admin.post(
        "/numbers", number_body("+4930400500", {"type": "menu", "id": target["id"]})
    )
    assert number.status == 201, number
    by_extension = await admin.post(
        "/numbers", number_body("+4930400501", {"type": "extension", "extension": extension})
    )
    assert by_extension.status == 201, by_extension
    refused = await admin.delete(f"/menus/{target['id']}")
    assert refused.status == 409 and refused.error_code == "menu_in_use"
    references = refused.body["error"]["references"]
    assert references["numbers"] == ["+4930400500", "+4930400501"]
    assert references["menus"] == [pointing["id"]]
    for each in (number, by_extension):
        await admin.delete(f"/numbers/{each.body['id']}")
    await admin.delete(f"/menus/{pointing['id']}")
    assert (await admin.delete(f"/menus/{target['id']}")).status == 204


async def test_a_prompt_a_menu_plays_is_in_use(admin: ApiClient) -> None:
    prompt = await admin.post("/prompts", {"name": "Menu prompt", "text": "Press one."})
    menu = await new_menu(admin, name="Prompted", timeout_prompt={"prompt_id": prompt.body["id"]})
    refused = await admin.delete(f"/prompts/{prompt.body['id']}")
    assert refused.status == 409 and refused.error_code == "prompt_in_use"
    assert refused.body["error"]["menus"] == [menu["id"]]
    await admin.delete(f"/menus/{menu['id']}")
    assert (await admin.delete(f"/prompts/{prompt.body['id']}")).status == 204


async def test_operators_cannot_manage_menus(admin: ApiClient) -> None:
    user = await admin.new_user("Menu Operator")
    operator = admin.as_token(await admin.token_for(user["id"]))
    assert (await operator.post("/menus", menu_body())).status == 403
    assert (await operator.get("/menus")).status == 403


# -- business hours --------------------------------------------------------------------------

HOURS = {
    "time_zone": "Europe/Berlin",
    "weekly": {"mon": [{"from": "09:00", "to": "12:00"}, {"from": "13:00", "to": "17:00"}]},
    "holidays": [{"date": "2026-12-25", "name": "Christmas"}],
    "off_hours_prompt": {"text": "We are closed."},
    "off_hours_destination": HANGUP,
}


async def test_business_hours_put_get_delete(
    admin: ApiClient, http: aiohttp.ClientSession, api_base: str
) -> None:
    number = await admin.post("/numbers", number_body("+4930500600", HANGUP))
    path = f"/numbers/{number.body['id']}/hours"
    assert (await admin.get(path)).status == 404
    async with http.ws_connect(
        api_base + "/events", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    ) as ws:
        put = await admin.put(path, HOURS)
        assert put.status == 200, put
        event = await next_event(ws, "business_hours_set")
        assert event["data"]["number"] == "+4930500600"
    prompt = {"text": "We are closed.", "prompt_id": None}
    assert put.body == {**HOURS, "number_id": number.body["id"], "off_hours_prompt": prompt}
    assert (await admin.get(path)).body == put.body
    replaced = await admin.put(path, {**HOURS, "weekly": {}, "holidays": []})
    assert replaced.body["weekly"] == {} and replaced.body["holidays"] == []
    assert (await admin.delete(path)).status == 204
    assert (await admin.get(path)).status == 404
    assert (await admin.put(path, HOURS)).status == 200
    # Deleting the number takes its hours along.
    await admin.delete(f"/numbers/{number.body['id']}")
    assert (await admin.get(path)).status == 404
    assert (await admin.put("/numbers/999999/hours", HOURS)).status == 404


async def test_bad_business_hours_are_422(admin: ApiClient) -> None:
    number = await admin.post("/numbers", number_body("+4930500601", HANGUP))
    path = f"/numbers/{number.body['id']}/hours"
    overlap = {"mon": [{"from": "09:00", "to": "12:00"}, {"from": "11:30", "to": "14:00"}]}
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({**HOURS, "time_zone": "Mars/Olympus"}, "unknown_time_zone", "time_zone"),
        ({**HOURS, "weekly": overlap}, "overlapping_hours", "weekly.mon.1"),
        ({**HOURS, "weekly": {"mon": [{"from": "17:00", "to": "09:00"}]}}, "invalid_hours",
         "weekly.mon.0"),
        ({**HOURS, "holidays": [{"date": "2026-01-01"}, {"date": "2026-01-01"}]},
         "overlapping_hours", "holidays.1.date"),
        ({**HOURS, "weekly": {"monday": []}}, "validation_error", "weekly.monday.[key]"),
        ({**HOURS, "weekly": {"mon": [{"from": "9:00", "to": "17:00"}]}}, "validation_error",
         "weekly.mon.0.from"),
        ({**HOURS, "holidays": [{"date": "2026-02-30"}]}, "validation_error", "holidays.0.date"),
        ({**HOURS, "off_hours_destination": {"type": "queue", "id": 999999}},
         "unknown_queue", "off_hours_destination.id"),
        ({k: v for k, v in HOURS.items() if k != "off_hours_destination"}, "validation_error",
         "off_hours_destination"),
    ]  # fmt: skip
    for body, code, field in cases:
        reply = await admin.put(path, body)
        assert reply.status == 422, (body, reply)
        assert (reply.error_code, reply.body["error"]["field"]) == (code, field), body
    assert (await admin.get(path)).status == 404  # nothing half-written


# -- voicemail boxes -------------------------------------------------------------------------


async def test_voicemail_boxes_and_their_rules(
    admin: ApiClient, next_extension: NextExtension
) -> None:
    owner = await admin.new_user("Box Owner")
    stranger = await admin.new_user("Box Stranger")
    created = await admin.post(
        "/voicemail/boxes",
        {"owner": {"type": "user", "id": owner["id"]}, "name": "Owner's box", "max_seconds": 30},
    )
    assert created.status == 201, created
    box = created.body
    assert (box["messages"], box["unheard"], box["greeting"]) == (0, 0, None)
    again = await admin.post("/voicemail/boxes", {"owner": {"type": "user", "id": owner["id"]}})
    assert again.status == 409 and again.error_code == "voicemail_box_exists"
    no_queue = await admin.post("/voicemail/boxes", {"owner": {"type": "queue", "id": 999999}})
    assert no_queue.status == 422 and no_queue.error_code == "unknown_owner"
    queue = await admin.post("/queues", {"name": "Queue with a box"})
    queue_box = await admin.post("/voicemail/boxes",
                                 {"owner": {"type": "queue", "id": queue.body["id"]}})  # fmt: skip
    assert queue_box.status == 201, queue_box
    nobody = await admin.post("/voicemail/boxes", {"owner": {"type": "user", "id": 999999}})
    assert nobody.status == 422 and nobody.error_code == "unknown_owner"
    too_long = await admin.patch(f"/voicemail/boxes/{box['id']}", {"max_seconds": 3600})
    assert too_long.status == 422 and too_long.body["error"]["field"] == "max_seconds"
    greeted = await admin.patch(f"/voicemail/boxes/{box['id']}", {"greeting": {"text": "Hi."}})
    assert greeted.body["greeting"] == {"text": "Hi.", "prompt_id": None}

    # The owner reads their box; another operator may not.
    mine = admin.as_token(await admin.token_for(owner["id"]))
    theirs = admin.as_token(await admin.token_for(stranger["id"]))
    assert [b["id"] for b in (await mine.get("/voicemail/boxes")).body["items"]] == [box["id"]]
    assert (await mine.get(f"/voicemail/boxes/{box['id']}/messages")).body == {"items": []}
    assert (await theirs.get(f"/voicemail/boxes/{box['id']}")).status == 403
    assert (await theirs.get(f"/voicemail/boxes/{box['id']}/messages")).status == 403
    assert (await theirs.get("/voicemail/boxes")).body == {"items": []}
    assert (await mine.delete(f"/voicemail/boxes/{box['id']}")).status == 403

    # A box a number sends callers to cannot go.
    to_box = {"type": "voicemail", "box": box["id"]}
    number = await admin.post("/numbers", number_body("+4930600900", to_box))
    assert number.status == 201, number
    refused = await admin.delete(f"/voicemail/boxes/{box['id']}")
    assert refused.status == 409 and refused.error_code == "voicemail_box_in_use"
    assert refused.body["error"]["references"]["numbers"] == ["+4930600900"]
    await admin.delete(f"/numbers/{number.body['id']}")
    assert (await admin.delete(f"/voicemail/boxes/{box['id']}")).status == 204
    assert (await admin.get(f"/voicemail/boxes/{box['id']}")).status == 404


async def test_openapi_documents_the_ivr_routes(admin: ApiClient) -> None:
    document = (await admin.get("/openapi.json")).body
    paths = document["paths"]
    for path in ("/api/v1/menus", "/api/v1/menus/{menu_id}", "/api/v1/numbers/{number_id}/hours",
                 "/api/v1/voicemail/boxes", "/api/v1/voicemail/boxes/{box_id}/messages",
                 "/api/v1/voicemail/messages/{message_id}",
                 "/api/v1/voicemail/messages/{message_id}/audio"):  # fmt: skip
        assert path in paths, path
    assert "MenuCreate" in document["components"]["schemas"]
