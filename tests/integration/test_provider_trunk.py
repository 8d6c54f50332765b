"""The provider's side of the trunk, played by SIPp against a service of its own: the edge
registers there with digest auth and renews, calls to the registered Contact come in, and
outbound calls answer the trunk's digest challenge."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from core.settings import Settings
from pbx.kamailio import KamailioRpc
from pbx.provider_registration import REGISTRATION_ID
from tests.conftest import ADMIN_TOKEN, make_settings
from tests.integration.test_calls import wait_for_call
from tests.support.api_client import ApiClient
from tests.support.phone import TestPhone
from tests.support.ports import free_port
from tests.support.service import running_service
from tests.support.sipp import (
    SippServer,
    call_number,
    challenging_trunk_scenario,
    digest_response_is_valid,
    registrar_scenario,
)

TRUNK_USERNAME = "pbx-account"
TRUNK_PASSWORD = "trunk-secret-42"
INBOUND_NUMBER = "4930999000"
EXTERNAL_NUMBER = "4930777999"


async def wait_for_the_renewal(settings: Settings) -> None:
    """Kamailio holds the provider's second, hour-long grant."""
    edge = KamailioRpc("127.0.0.1", settings.sip.rpc_port)
    try:
        async with asyncio.timeout(40):
            while True:
                record = await edge.uac_registration(REGISTRATION_ID)
                if record is not None and int(record["diff_expires"]) > 60:
                    return
                await asyncio.sleep(0.5)
    finally:
        await edge.close()


async def test_edge_registers_at_the_provider_renews_takes_its_calls_and_unregisters(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    provider_port = free_port()
    settings = make_settings(
        tmp_path / "data",
        trunk={"uri": f"sip:127.0.0.1:{provider_port}", "username": TRUNK_USERNAME,
               "password": TRUNK_PASSWORD, "register": "true", "register_expires": 60},
        workers={"max_workers": 1, "spare_legs": 4},
    )  # fmt: skip
    contact = f"sip:{REGISTRATION_ID}@{settings.sip.host}:{settings.sip.port}"
    # The first grant is short, so the renewal comes at the next timer tick; then an hour.
    scenario = registrar_scenario(
        TRUNK_USERNAME, TRUNK_PASSWORD, contact, grants=[10, 3600], unregister=True
    )
    # Listening before Kamailio starts: it registers at once.
    registrar = await SippServer.start(tmp_path, "registrar", scenario, provider_port)
    try:
        async with running_service(settings) as api_base:
            await wait_for_the_renewal(settings)
            health = (await ApiClient(http, api_base, None).get("/health")).body
            assert (health["trunk_registration"], health["status"]) == ("registered", "ok")
            metrics_url = f"http://127.0.0.1:{settings.api.port}/metrics"
            async with http.get(metrics_url) as reply:
                metrics = await reply.text()
            assert 'pbx_trunk_registration{state="registered"} 1.0' in metrics
            assert 'pbx_trunk_registration{state="failed"} 0.0' in metrics

            # The provider calls the Contact it learnt and names the number in To.
            admin = ApiClient(http, api_base, ADMIN_TOKEN)
            number = await admin.post(
                "/numbers",
                {"number": INBOUND_NUMBER, "greeting": {"text": "Hello."},
                 "extension_dialing": False, "default_destination": {"type": "hangup"}},
            )  # fmt: skip
            assert number.status == 201, number
            call = await call_number(
                tmp_path, settings.sip.port, INBOUND_NUMBER, request_user=REGISTRATION_ID,
                stay_s=0.5,
            )  # fmt: skip
            assert call.succeeded, call.output
            record = await wait_for_call(admin, direction="inbound", party=INBOUND_NUMBER)
            assert record["called"] == INBOUND_NUMBER
        # Stopped: the provider was told to forget the Contact (Expires: 0, authenticated).
        result = await asyncio.wait_for(registrar.result(), 10)
        assert result.succeeded, result.output
    finally:
        await registrar.stop()


@pytest.fixture(scope="module")
async def trunk_service(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[Settings, str, int]]:
    """A service whose trunk (a SIPp server each test starts) wants digest credentials:
    (settings, API base URL, the trunk's port)."""
    trunk_port = free_port()
    settings = make_settings(
        tmp_path_factory.mktemp("trunk-service"),
        trunk={"uri": f"sip:127.0.0.1:{trunk_port}", "username": TRUNK_USERNAME,
               "password": TRUNK_PASSWORD},
        workers={"max_workers": 1, "spare_legs": 4},
    )  # fmt: skip
    async with running_service(settings) as api_base:
        yield settings, api_base, trunk_port


@pytest.mark.parametrize("challenge", [401, 407])
async def test_outbound_call_answers_the_trunks_digest_challenge(
    challenge: int,
    trunk_service: tuple[Settings, str, int],
    http: aiohttp.ClientSession,
    next_extension: Callable[[], str],
    tmp_path: Path,
) -> None:
    settings, api_base, trunk_port = trunk_service
    admin = ApiClient(http, api_base, ADMIN_TOKEN)
    user = await admin.new_user(f"Outbound Caller {challenge}")
    extension = next_extension()
    sip: dict[str, Any] = (await admin.assign(user["id"], extension))["sip"]
    desk = TestPhone()
    scenario = challenging_trunk_scenario(challenge, TRUNK_USERNAME, TRUNK_PASSWORD)
    trunk = await SippServer.start(tmp_path, f"trunk-{challenge}", scenario, trunk_port)
    try:
        status = await desk.register(
            extension, sip["password"], settings.sip.domain, settings.sip.host, settings.sip.port
        )
        assert status == 200
        call = await desk.call(f"sip:{EXTERNAL_NUMBER}@{settings.sip.host}:{settings.sip.port}")
        await asyncio.wait_for(call.answered, 10)
        await call.hangup()
        result = await asyncio.wait_for(trunk.result(), 40)
    finally:
        await trunk.stop()
        desk.close()
    assert result.succeeded, result.output
    # The answered INVITE came through the edge, which stays in the call's path.
    logged = trunk.log.read_text()
    assert f"record-route sip:{settings.sip.host}:{settings.sip.port};lr\n" in logged, logged
    if challenge == 407:
        credentials = logged.strip().splitlines()[-1]
        assert digest_response_is_valid(credentials, "INVITE", TRUNK_USERNAME, TRUNK_PASSWORD)
        assert not digest_response_is_valid(credentials, "INVITE", TRUNK_USERNAME, "guess")
    record = await wait_for_call(admin, direction="outbound", party=extension)
    assert (record["connected_to"], record["disposition"]) == (EXTERNAL_NUMBER, "answered")
