"""Desk phones register through the real Kamailio edge with credentials issued by the API."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from core.settings import Settings
from pbx.kamailio import KamailioRpc
from tests.support.api_client import ApiClient
from tests.support.phone import TestPhone

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
    assert await register(phone, settings, number, sip["password"]) in (401, 403)


async def test_password_reset_retires_the_old_password(
    admin: ApiClient,
    settings: Settings,
    phone: Callable[[], TestPhone],
    next_extension: NextExtension,
) -> None:
    user = await admin.new_user("Reset")
    number = next_extension()
    old = (await admin.assign(user["id"], number))["sip"]["password"]
    new = (await admin.post(f"/users/{user['id']}/sip-password")).body["sip"]["password"]
    assert await register(phone, settings, number, old) in (401, 403)
    assert await register(phone, settings, number, new) == 200
