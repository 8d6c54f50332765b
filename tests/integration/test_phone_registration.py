"""Desk phones register through the real Kamailio edge with credentials issued by the API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from core.settings import Settings
from pbx.kamailio import KamailioRpc
from tests.conftest import ADMIN_TOKEN, make_settings
from tests.integration.test_kamailio_edge import bindings
from tests.support.api_client import ApiClient
from tests.support.phone import TestPhone
from tests.support.service import running_service
from tests.support.sipp import call_number
from tests.support.sql import execute

NextExtension = Callable[[], str]


@pytest.fixture
async def phone(settings: Settings, kamailio: object) -> AsyncIterator[Callable[[], TestPhone]]:
    phones: list[TestPhone] = []

    def make() -> TestPhone:
        phones.append(TestPhone())
        return phones[-1]

    yield make
    for each in phones:
        each.close()


async def register(
    make_phone: Callable[[], TestPhone], settings: Settings, username: str, password: str
) -> int:
    return await make_phone().register(
        username, password, settings.sip.domain, settings.sip.host, settings.sip.port
    )


async def stored_bindings(settings: Settings, username: str) -> int:
    """Rows of `username` in Kamailio's location table: what a restart would load."""
    ((count,),) = await execute(
        settings.database_url, "SELECT count(*) FROM location WHERE username = :username",
        username=username,
    )  # fmt: skip
    return int(count)


async def test_phone_registers_the_moment_its_extension_is_assigned(
    admin: ApiClient,
    settings: Settings,
    phone: Callable[[], TestPhone],
    edge_rpc: KamailioRpc,
    next_extension: NextExtension,
) -> None:
    user = await admin.new_user("Desk Phone")
    number = next_extension()
    sip = (await admin.assign(user["id"], number))["sip"]
    assert await register(phone, settings, sip["username"], sip["password"]) == 200
    assert await edge_rpc.registered_contacts(number)
    assert await stored_bindings(settings, number) == 1


async def test_wrong_password_is_refused(
    admin: ApiClient,
    settings: Settings,
    phone: Callable[[], TestPhone],
    next_extension: NextExtension,
) -> None:
    user = await admin.new_user("Typo")
    number = next_extension()
    await admin.assign(user["id"], number)
    assert await register(phone, settings, number, "not-the-password") in (401, 403)


async def test_released_extension_no_longer_registers(
    admin: ApiClient,
    settings: Settings,
    phone: Callable[[], TestPhone],
    edge_rpc: KamailioRpc,
    next_extension: NextExtension,
) -> None:
    user = await admin.new_user("Released")
    number = next_extension()
    sip = (await admin.assign(user["id"], number))["sip"]
    assert await register(phone, settings, number, sip["password"]) == 200
    assert (await admin.delete(f"/users/{user['id']}/extension")).status == 204
    assert await edge_rpc.registered_contacts(number) == []
    assert await stored_bindings(settings, number) == 0
    assert await register(phone, settings, number, sip["password"]) in (401, 403)


async def test_dismissed_users_phone_is_logged_out_and_refused(
    admin: ApiClient,
    settings: Settings,
    phone: Callable[[], TestPhone],
    edge_rpc: KamailioRpc,
    next_extension: NextExtension,
) -> None:
    user = await admin.new_user("Gone")
    number = next_extension()
    sip = (await admin.assign(user["id"], number))["sip"]
    assert await register(phone, settings, number, sip["password"]) == 200
    await admin.patch(f"/users/{user['id']}", {"active": False})
    assert await edge_rpc.registered_contacts(number) == []
    assert await stored_bindings(settings, number) == 0
    assert await register(phone, settings, number, sip["password"]) in (401, 403)


async def test_password_reset_retires_the_old_password(
    admin: ApiClient,
    settings: Settings,
    phone: Callable[[], TestPhone],
    edge_rpc: KamailioRpc,
    next_extension: NextExtension,
) -> None:
    user = await admin.new_user("Reset")
    number = next_extension()
    old = (await admin.assign(user["id"], number))["sip"]["password"]
    assert await register(phone, settings, number, old) == 200
    new = (await admin.post(f"/users/{user['id']}/sip-password")).body["sip"]["password"]
    assert await edge_rpc.registered_contacts(number) == []
    assert await stored_bindings(settings, number) == 0
    assert await register(phone, settings, number, old) in (401, 403)
    assert await register(phone, settings, number, new) == 200


STALE_TEST_NUMBER = "4930555123"


async def test_stale_phone_is_refused_alone_while_its_neighbours_and_the_trunk_carry_on(
    admin: ApiClient,
    settings: Settings,
    phone: Callable[[], TestPhone],
    next_extension: NextExtension,
    tmp_path: Path,
) -> None:
    """A phone left with an old password retries from the address its neighbours and the
    provider use too (127.0.0.1, the session's trunk source): only its account is refused."""
    assert "127.0.0.1" in settings.trunk.sources
    user = await admin.new_user("Stale Phone")
    stale = next_extension()
    old = (await admin.assign(user["id"], stale))["sip"]["password"]
    await admin.post(f"/users/{user['id']}/sip-password")
    for _ in range(settings.sip.max_auth_failures):
        assert await register(phone, settings, stale, old) == 401
    assert await register(phone, settings, stale, old) == 403

    neighbours: list[TestPhone] = []
    number = await admin.post(
        "/numbers",
        {"number": STALE_TEST_NUMBER, "greeting": {"text": "Hello."},
         "extension_dialing": False, "default_destination": {"type": "hangup"}},
    )  # fmt: skip
    assert number.status == 201, number
    try:
        extensions = []
        for name, auto_answer in (("Neighbour Caller", None), ("Neighbour Callee", 200)):
            neighbour = await admin.new_user(name)
            extension = next_extension()
            sip = (await admin.assign(neighbour["id"], extension))["sip"]
            neighbours.append(desk := TestPhone(auto_answer=auto_answer))
            assert await desk.register(
                extension, sip["password"], settings.sip.domain, settings.sip.host,
                settings.sip.port,
            ) == 200  # fmt: skip
            extensions.append(extension)
        caller, callee = neighbours
        call = await caller.call(f"sip:{extensions[1]}@{settings.sip.host}:{settings.sip.port}")
        incoming = await callee.next_incoming(timeout=10)
        await asyncio.wait_for(call.progress.answered, 10)
        await incoming.hangup()
        assert await asyncio.wait_for(call.progress.ended, 5) == 200

        trunk_call = await call_number(tmp_path, settings.sip.port, STALE_TEST_NUMBER, stay_s=0.5)
        assert trunk_call.succeeded, trunk_call.output
        assert await register(phone, settings, stale, old) == 403
    finally:
        for desk in neighbours:
            desk.close()
        await admin.delete(f"/numbers/{number.body['id']}")


async def test_registrations_survive_a_restart_of_the_service(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    settings = make_settings(tmp_path / "data", workers={"max_workers": 1, "spare_legs": 4})
    sip = settings.sip
    caller, callee = TestPhone(), TestPhone(auto_answer=200)
    edge = KamailioRpc("127.0.0.1", sip.rpc_port)
    try:
        async with running_service(settings) as api_base:
            admin = ApiClient(http, api_base, ADMIN_TOKEN)
            for desk, extension in ((caller, "7001"), (callee, "7002")):
                user = await admin.new_user(f"Restarted {extension}")
                password = (await admin.assign(user["id"], extension))["sip"]["password"]
                assert await desk.register(
                    extension, password, sip.domain, sip.host, sip.port
                ) == 200  # fmt: skip
            before = await bindings(edge, "7002")
            assert before
        async with running_service(settings):
            # The same binding (Call-ID and CSeq): nobody registered again.
            assert await bindings(edge, "7002") == before
            call = await caller.call(f"sip:7002@{sip.host}:{sip.port}")
            incoming = await callee.next_incoming(timeout=10)
            await asyncio.wait_for(call.progress.answered, 10)
            await incoming.hangup()
            assert await asyncio.wait_for(call.progress.ended, 5) == 200
    finally:
        caller.close()
        callee.close()
        await edge.close()
