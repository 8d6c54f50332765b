from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from core.context import EdgeUnavailable
from core.settings import Settings, TrunkSettings, load_settings
from pbx.provider_registration import (
    REGISTRATION_ID,
    RegistrationState,
    registration_row,
    registration_state,
    renewal_tick_seconds,
    state_of_record,
    unregister,
)

REPO_CONFIG = Path(__file__).resolve().parents[2] / "config.toml"
REGISTERING = {
    "PBX_TRUNK__URI": "sip:sip.provider.example:5070",
    "PBX_TRUNK__USERNAME": "4930123",
    "PBX_TRUNK__PASSWORD": "pw",
    "PBX_TRUNK__REGISTER": "true",
    "PBX_SIP__DOMAIN": "pbx.example.com",
}


def settings(**environ: str) -> Settings:
    return load_settings(REPO_CONFIG, environ=environ)


def test_a_trunk_that_does_not_register_has_no_row() -> None:
    assert registration_row(settings()) is None
    assert registration_row(settings(**{**REGISTERING, "PBX_TRUNK__REGISTER": "false"})) is None


def test_the_row_registers_the_account_at_the_provider_through_its_uri() -> None:
    row = registration_row(settings(**REGISTERING))
    assert row == {
        "l_uuid": REGISTRATION_ID,
        "l_username": "4930123",
        "l_domain": "pbx.example.com",
        "r_username": "4930123",
        "r_domain": "sip.provider.example",
        "realm": "",
        "auth_username": "4930123",
        "auth_password": "pw",
        "auth_proxy": "sip:sip.provider.example:5070",
        "expires": 600,
    }


@pytest.mark.parametrize(("expires", "tick"), [(60, 6), (600, 60), (3600, 360), (61, 6)])
def test_renewal_tick_is_a_tenth_of_the_lifetime(expires: int, tick: int) -> None:
    trunk = TrunkSettings.model_validate({"register_expires": expires})
    assert renewal_tick_seconds(trunk) == tick


@pytest.mark.parametrize(
    ("record", "state"),
    [
        (None, RegistrationState.FAILED),  # Kamailio refused the row
        ({"flags": 4 | 16, "diff_expires": 590}, RegistrationState.REGISTERED),
        ({"flags": 4 | 16, "diff_expires": 0}, RegistrationState.FAILED),  # lapsed
        ({"flags": 2 | 16, "diff_expires": 0}, RegistrationState.REGISTERING),
        ({"flags": 2 | 8 | 16, "diff_expires": 0}, RegistrationState.REGISTERING),  # challenged
        ({"flags": 16, "diff_expires": 55}, RegistrationState.FAILED),  # waiting to retry
        ({"flags": 1 | 16, "diff_expires": 0}, RegistrationState.FAILED),  # disabled
    ],
)
def test_state_of_a_uac_record(record: Mapping[str, Any] | None, state: RegistrationState) -> None:
    assert state_of_record(record) is state


class Edge:
    def __init__(self, record: Mapping[str, Any] | None, *, answers: bool = True) -> None:
        self.record = record
        self.answers = answers
        self.asked: list[str] = []
        self.unregistered: list[str] = []

    async def uac_registration(self, l_uuid: str) -> Mapping[str, Any] | None:
        self.asked.append(l_uuid)
        if not self.answers:
            raise EdgeUnavailable("no answer")
        return self.record

    async def uac_unregister(self, l_uuid: str) -> None:
        self.unregistered.append(l_uuid)


async def test_state_is_off_without_asking_the_edge_when_the_trunk_does_not_register() -> None:
    edge = Edge(None)
    assert await registration_state(settings().trunk, edge) is RegistrationState.OFF
    assert edge.asked == []


async def test_state_is_asked_by_registration_id_and_unknown_when_the_edge_is_silent() -> None:
    trunk = settings(**REGISTERING).trunk
    online = Edge({"flags": 4, "diff_expires": 300})
    assert await registration_state(trunk, online) is RegistrationState.REGISTERED
    assert online.asked == [REGISTRATION_ID]
    silent = Edge(None, answers=False)
    assert await registration_state(trunk, silent) is RegistrationState.UNKNOWN


@pytest.mark.parametrize(
    ("environ", "edge", "sent"),
    [
        (REGISTERING, Edge({"flags": 4, "diff_expires": 300}), [REGISTRATION_ID]),
        ({}, Edge({"flags": 4, "diff_expires": 300}), []),  # the trunk does not register
        (REGISTERING, Edge({"flags": 2, "diff_expires": 0}), []),  # not registered yet
        (REGISTERING, Edge(None), []),  # Kamailio holds no such registration
        (REGISTERING, Edge(None, answers=False), []),  # Kamailio does not answer
    ],
)
async def test_unregister_only_what_the_provider_holds(
    environ: dict[str, str], edge: Edge, sent: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("pbx.provider_registration.UNREGISTER_LINGER_S", 0)
    await unregister(settings(**environ).trunk, edge)
    assert edge.unregistered == sent
