"""Extensions and SIP credentials through the API, checked against the database Kamailio reads."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from aiohttp.test_utils import TestServer
from sqlalchemy.ext.asyncio import AsyncSession

from acd.queues import leave_every_queue
from api.routing import CONTEXT_KEY
from core.events import Event
from core.settings import Settings
from extensions.credentials import digest_ha1
from extensions.users import UserChanges, update_user
from tests.support.api_client import ApiClient
from tests.support.sql import execute

NextExtension = Callable[[], str]


async def subscriber_rows(settings: Settings) -> dict[str, tuple[str, str, str]]:
    """username -> (domain, password, ha1), read the way Kamailio reads them."""
    query = "SELECT username, domain, password, ha1 FROM subscriber"
    rows = await execute(settings.database_url, query)
    return {username: (domain, password, ha1) for username, domain, password, ha1 in rows}


async def test_assigning_an_extension_returns_credentials_stored_only_as_ha1(
    admin: ApiClient, settings: Settings, next_extension: NextExtension
) -> None:
    user = await admin.new_user("Anna")
    number = next_extension()
    reply = await admin.put(f"/users/{user['id']}/extension", {"extension": number})
    assert reply.status == 200
    sip = reply.body["sip"]
    assert reply.body["extension"] == number
    assert sip["username"] == number and sip["domain"] == settings.sip.domain
    assert sip["registrar"] == f"sip:{settings.sip.host}:{settings.sip.port}"
    assert len(sip["password"]) >= 16
    domain, clear, ha1 = (await subscriber_rows(settings))[number]
    assert clear == "" and domain == settings.sip.domain
    assert ha1 == digest_ha1(number, settings.sip.domain, sip["password"])
    shown = await admin.get(f"/users/{user['id']}")
    assert shown.body["extension"] == number
    again = await admin.get(f"/users/{user['id']}/extension")
    assert again.status == 200 and again.body["sip"]["password"] is None


@pytest.mark.parametrize("bad", ["", "12345", "12a", "١٢", " 12", 12, None, "*7"])
async def test_bad_extension_is_422_on_field_extension(admin: ApiClient, bad: object) -> None:
    user = await admin.new_user("Bad Number")
    reply = await admin.put(f"/users/{user['id']}/extension", {"extension": bad})
    assert reply.status == 422
    assert reply.body["error"]["field"] == "extension"


async def test_taken_extension_is_409_naming_the_holder_type(
    admin: ApiClient, settings: Settings, next_extension: NextExtension
) -> None:
    first, second = await admin.new_user("First"), await admin.new_user("Second")
    number = next_extension()
    original = await admin.assign(first["id"], number)
    reply = await admin.put(f"/users/{second['id']}/extension", {"extension": number})
    assert reply.status == 409
    assert reply.body["error"]["code"] == "extension_taken"
    assert reply.body["error"]["holder"] == {"type": "user", "id": first["id"]}
    assert "user" in reply.body["error"]["message"]
    # Nothing half-written: the holder's credentials are untouched, the loser got nothing.
    assert (await subscriber_rows(settings))[number][2] == digest_ha1(
        number, settings.sip.domain, original["sip"]["password"]
    )
    assert (await admin.get(f"/users/{second['id']}")).body["extension"] is None


async def test_reassigning_the_same_extension_keeps_the_password(
    admin: ApiClient, settings: Settings, next_extension: NextExtension
) -> None:
    user = await admin.new_user("Same")
    number = next_extension()
    await admin.assign(user["id"], number)
    before = (await subscriber_rows(settings))[number]
    again = await admin.put(f"/users/{user['id']}/extension", {"extension": number})
    assert again.status == 200 and again.body["sip"]["password"] is None
    assert (await subscriber_rows(settings))[number] == before


async def test_moving_to_another_extension_frees_the_old_one(
    admin: ApiClient, settings: Settings, next_extension: NextExtension
) -> None:
    user = await admin.new_user("Mover")
    old, new = next_extension(), next_extension()
    await admin.assign(user["id"], old)
    await admin.assign(user["id"], new)
    rows = await subscriber_rows(settings)
    assert old not in rows and new in rows
    numbers = {e["extension"] for e in (await admin.get("/extensions")).body["items"]}
    assert new in numbers and old not in numbers


async def test_release_frees_the_number_for_reuse(
    admin: ApiClient, settings: Settings, next_extension: NextExtension
) -> None:
    first, second = await admin.new_user("Leaver"), await admin.new_user("Heir")
    number = next_extension()
    await admin.assign(first["id"], number)
    released = await admin.delete(f"/users/{first['id']}/extension")
    assert released.status == 204
    assert number not in await subscriber_rows(settings)
    assert (await admin.delete(f"/users/{first['id']}/extension")).status == 404
    assert (
        await admin.put(f"/users/{second['id']}/extension", {"extension": number})
    ).status == 200


async def test_password_reset_replaces_the_digest(
    admin: ApiClient, settings: Settings, next_extension: NextExtension
) -> None:
    user = await admin.new_user("Forgetful")
    number = next_extension()
    old = (await admin.assign(user["id"], number))["sip"]["password"]
    reply = await admin.post(f"/users/{user['id']}/sip-password")
    assert reply.status == 200
    new = reply.body["sip"]["password"]
    assert new != old
    ha1 = (await subscriber_rows(settings))[number][2]
    assert ha1 == digest_ha1(number, settings.sip.domain, new)
    without = await admin.new_user("No Phone")
    assert (await admin.post(f"/users/{without['id']}/sip-password")).status == 404


async def test_operator_may_reset_only_their_own_password(
    admin: ApiClient, next_extension: NextExtension
) -> None:
    me, other = await admin.new_user("Self Service"), await admin.new_user("Other")
    await admin.assign(me["id"], next_extension())
    await admin.assign(other["id"], next_extension())
    operator = admin.as_token(await admin.token_for(me["id"]))
    assert (await operator.post(f"/users/{me['id']}/sip-password")).status == 200
    assert (await operator.post(f"/users/{other['id']}/sip-password")).status == 403


async def test_dismissal_disables_phone_and_frees_extension(
    admin: ApiClient, settings: Settings, next_extension: NextExtension
) -> None:
    user = await admin.new_user("Dismissed")
    number = next_extension()
    await admin.assign(user["id"], number)
    reply = await admin.patch(f"/users/{user['id']}", {"active": False})
    assert reply.status == 200
    assert reply.body["active"] is False and reply.body["extension"] is None
    assert reply.body["dismissed_at"] is not None
    assert number not in await subscriber_rows(settings)
    refused = await admin.put(f"/users/{user['id']}/extension", {"extension": next_extension()})
    assert refused.status == 409 and refused.error_code == "user_inactive"
    successor = await admin.new_user("Successor")
    assert (
        await admin.put(f"/users/{successor['id']}/extension", {"extension": number})
    ).status == 200


async def test_concurrent_assignment_of_one_extension_has_exactly_one_winner(
    admin: ApiClient, settings: Settings, next_extension: NextExtension
) -> None:
    contenders = [await admin.new_user(f"Racer {i}") for i in range(12)]
    number = next_extension()
    replies = await asyncio.gather(
        *(admin.put(f"/users/{u['id']}/extension", {"extension": number}) for u in contenders)
    )
    statuses = sorted(r.status for r in replies)
    assert statuses == [200] + [409] * 11, statuses
    winner = next(u for u, r in zip(contenders, replies, strict=True) if r.status == 200)
    password = next(r for r in replies if r.status == 200).body["sip"]["password"]
    ha1 = (await subscriber_rows(settings))[number][2]
    assert ha1 == digest_ha1(number, settings.sip.domain, password)
    holders = [
        e for e in (await admin.get("/extensions")).body["items"] if e["extension"] == number
    ]
    assert holders == [
        {
            "extension": number,
            "holder": {"type": "user", "id": winner["id"], "name": winner["name"]},
        }
    ]


async def test_concurrent_assignments_to_one_user_leave_one_consistent_extension(
    admin: ApiClient, settings: Settings, next_extension: NextExtension
) -> None:
    user = await admin.new_user("Popular")
    numbers = [next_extension() for _ in range(6)]
    replies = await asyncio.gather(
        *(admin.put(f"/users/{user['id']}/extension", {"extension": n}) for n in numbers)
    )
    assert all(r.status in (200, 409) for r in replies)
    final = (await admin.get(f"/users/{user['id']}")).body["extension"]
    rows = await subscriber_rows(settings)
    assert final in numbers and final in rows
    assert not any(n in rows for n in numbers if n != final)


async def test_extensions_list_is_open_to_every_role(
    admin: ApiClient, next_extension: NextExtension
) -> None:
    user = await admin.new_user("Listed")
    number = next_extension()
    await admin.assign(user["id"], number)
    operator = admin.as_token(await admin.token_for(user["id"]))
    items = (await operator.get("/extensions")).body["items"]
    assert {
        "extension": number,
        "holder": {"type": "user", "id": user["id"], "name": "Listed"},
    } in items


async def test_a_dismissal_that_fails_half_way_changes_nothing(
    admin: ApiClient, api_server: TestServer, next_extension: NextExtension
) -> None:
    """Dismissal is one transaction: when the last of its steps fails, the user is still
    active, keeps their extension and their queue membership."""
    user = await admin.new_user("Almost Gone")
    number = next_extension()
    await admin.put(f"/users/{user['id']}/extension", {"extension": number})
    queue = (await admin.post("/queues", {"name": "Half way", "members": [user["id"]]})).body
    ctx = api_server.app[CONTEXT_KEY]

    async def leave_then_fail(session: AsyncSession, user_id: int) -> list[Event]:
        await leave_every_queue(session, ctx.events, user_id)
        raise RuntimeError("the next step failed")

    with pytest.raises(RuntimeError):
        await update_user(ctx, user["id"], UserChanges(active=False), on_dismissal=leave_then_fail)
    after = (await admin.get(f"/users/{user['id']}")).body
    assert (after["active"], after["extension"]) == (True, number)
    assert (await admin.get(f"/queues/{queue['id']}")).body["members"] == [user["id"]]
