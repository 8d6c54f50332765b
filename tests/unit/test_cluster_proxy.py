"""What a cluster's node passes on to the active node, and whose address a request passed on
carries (api.cluster_proxy): table-tested on requests built in memory."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request

from api.cluster_proxy import CLIENT_HEADER, SECRET_HEADER, must_pass_on, passed_on
from controller.seat import Role

SECRET = "cluster-secret-0123456789"


@pytest.mark.parametrize(
    ("role", "path", "passed"),
    [
        (Role.STANDBY, "/api/v1/users", True),
        (Role.STANDBY, "/api/v1/channels/1/inbound", True),
        (Role.STANDBY, "/api/v1/openapi.json", True),
        (Role.STANDBY, "/api/v1/health", False),  # its own role, checks
        (Role.STANDBY, "/api/v1/events", False),  # events reach every node through Redis
        (Role.STANDBY, "/metrics", False),
        (Role.STANDBY, "/", False),  # the console's files
        (Role.ACTIVE, "/api/v1/users", False),
    ],
)
def test_a_standby_passes_the_api_on_and_serves_what_is_its_own(
    role: Role, path: str, passed: bool
) -> None:
    assert must_pass_on(make_mocked_request("GET", path), role) is passed


@pytest.mark.parametrize(
    ("secret", "headers", "address"),
    [
        (SECRET, {SECRET_HEADER: SECRET, CLIENT_HEADER: "203.0.113.7"}, "203.0.113.7"),
        (SECRET, {SECRET_HEADER: "guessed", CLIENT_HEADER: "203.0.113.7"}, None),
        (SECRET, {CLIENT_HEADER: "203.0.113.7"}, None),
        (SECRET, {SECRET_HEADER: SECRET}, None),
        ("", {SECRET_HEADER: "", CLIENT_HEADER: "203.0.113.7"}, None),  # a single node
    ],
)
def test_only_the_clusters_secret_makes_a_named_client_address_trusted(
    secret: str, headers: dict[str, str], address: str | None
) -> None:
    request = make_mocked_request("POST", "/api/v1/session", headers=headers)
    expected = address if address is not None else request.remote
    assert passed_on(request, secret).remote == expected
