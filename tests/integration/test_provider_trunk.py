"""The provider's side of the trunk, played by SIPp against a service of its own: the edge
registers there with digest auth and renews, and calls to the registered Contact come in."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from pbx.provider_registration import REGISTRATION_ID
from tests.conftest import ADMIN_TOKEN, make_settings
from tests.integration.test_calls import wait_for_call
from tests.support.api_client import ApiClient
from tests.support.ports import free_port
from tests.support.service import running_service
from tests.support.sipp import (
    SippServer,
    call_number,
    registrar_scenario,
)

TRUNK_USERNAME = "pbx-account"
TRUNK_PASSWORD = "trunk-secret-42"
INBOUND_NUMBER = "4930999000"


async def test_edge_registers_at_the_provider_renews_and_takes_its_calls(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    provider_port = free_port()
    settings = make_settings(
        tmp_path / "data",
        trunk={"uri": f"sip:127.0.0.1:{provider_port}", "username": TRUNK_USERNAME,
               "password": TRUNK_PASSWORD, "register": "true", "register_expires": 60},
        workers={"count": 1},
    )  # fmt: skip
    contact = f"sip:{REGISTRATION_ID}@{settings.sip.host}:{settings.sip.port}"
    # The first grant is short, so the renewal comes at the next timer tick; then an hour.
    scenario = registrar_scenario(TRUNK_USERNAME, TRUNK_PASSWORD, contact, grants=[10, 3600])
    # Listening before Kamailio starts: it registers at once.
    registrar = await SippServer.start(tmp_path, "registrar", scenario, provider_port)
    try:
        async with running_service(settings) as api_base:
            result = await asyncio.wait_for(registrar.result(), 40)
            assert result.succeeded, result.output
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
    finally:
        await registrar.stop()
