"""Session fixtures: a real Redis, a migrated SQLite database, Kamailio and the API, on loopback."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from api.app import create_app
from core.redis_server import ManagedRedis
from core.settings import Settings, load_settings
from migrations import upgrade_database
from pbx.kamailio import KamailioProcess, KamailioRpc
from pbx.ua_thread import shared_user_agent
from tests.support.agents import Agent, MakeAgent, set_status
from tests.support.api_client import ApiClient
from tests.support.clock import TestClock
from tests.support.phone import TestPhone
from tests.support.ports import free_port, free_port_block
from tests.support.postgres import new_test_database_url, selected_backend, stop_test_server

ADMIN_TOKEN = "test-admin-token-0123456789abcdef"
# The `phone` fixture: make("Name", auto_answer=200) -> (registered phone, its extension).
MakePhone = Callable[..., Awaitable[tuple[TestPhone, str]]]
EMPTY_CONFIG = Path(__file__).parent / "support" / "empty-config.toml"


def make_settings(data_dir: Path, **sections: dict[str, object]) -> Settings:
    """Settings as an operator would write them, every port free on 127.0.0.1."""
    environ = {
        "PBX_DATA__DIR": str(data_dir),
        "PBX_REDIS__PORT": str(free_port()),
        "PBX_SIP__PORT": str(free_port()),
        "PBX_SIP__RPC_PORT": str(free_port()),
        "PBX_API__PORT": str(free_port()),
        "PBX_WORKERS__MAX_WORKERS": "2",
        "PBX_WORKERS__SPARE_LEGS": "8",
        "PBX_WORKERS__FIRST_SIP_PORT": str(free_port_block(2)),
        "PBX_WORKERS__FIRST_RTP_PORT": str(free_port_block(80)),
        "PBX_ADMIN_TOKEN": ADMIN_TOKEN,
        "PBX_LOG__LEVEL": "warning",
        # Short waits keep call tests quick; the defaults suit people.
        "PBX_CALLS__INTER_DIGIT_TIMEOUT": "1.5",
        "PBX_CALLS__WAIT_AFTER_GREETING": "1.0",
        "PBX_CALLS__RING_TIMEOUT": "5",
        "PBX_ACD__MAX_MISSED_OFFERS": "2",
        "PBX_VOICEMAIL__SILENCE_SECONDS": "2",
        "PBX_CHAT__DELIVERY_RETRY_SECONDS": "0.2",
        # Failed sign-ins still wait, only less (the rule is unit-tested with real values).
        "PBX_SIGN_IN__FAILURE_DELAY_SECONDS": "0.01",
    }
    if "url" not in sections.get("database", {}) and (url := new_test_database_url()):
        # PBX_TEST_DATABASE=postgresql: a database of its own in the suite's PostgreSQL.
        environ["PBX_DATABASE__URL"] = url
    if "uri" not in sections.get("trunk", {}):
        # The provider for outbound calls: a PJSUA2 account on the test process's endpoint
        # (started here, so tests that name another provider run without PJSUA2).
        environ["PBX_TRUNK__URI"] = f"sip:127.0.0.1:{shared_user_agent().sip_port}"
    for section, values in sections.items():
        for key, value in values.items():
            environ[f"PBX_{section.upper()}__{key.upper()}"] = str(value)
    return load_settings(EMPTY_CONFIG, environ)


def pytest_report_header() -> str:
    return f"database: {selected_backend()} (PBX_TEST_DATABASE=sqlite|postgresql)"


@pytest.fixture(scope="session", autouse=True)
def stop_database_server_at_the_end() -> Iterator[None]:
    """Stops the suite's PostgreSQL server, if a test started one (PBX_TEST_DATABASE)."""
    try:
        yield
    finally:
        stop_test_server()


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return make_settings(tmp_path_factory.mktemp("pbx-data"))


@pytest.fixture(scope="session")
async def database(settings: Settings) -> str:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(upgrade_database, settings.database_url)
    return settings.database_url


@pytest.fixture(scope="session")
async def redis_server(settings: Settings) -> AsyncIterator[ManagedRedis]:
    server = ManagedRedis(settings.redis.host, settings.redis.port, settings.data_dir / "redis")
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="session")
async def kamailio(settings: Settings, database: str) -> AsyncIterator[KamailioProcess]:
    process = KamailioProcess(settings)
    await process.start()
    yield process
    await process.stop()


@pytest.fixture(scope="session")
async def edge_rpc(settings: Settings, kamailio: KamailioProcess) -> AsyncIterator[KamailioRpc]:
    rpc = KamailioRpc("127.0.0.1", settings.sip.rpc_port)
    yield rpc
    await rpc.close()


@pytest.fixture(scope="session")
def clock() -> TestClock:
    """The service's clock: real time unless a test sets `clock.fixed` (and resets it)."""
    return TestClock()


@pytest.fixture(scope="session")
async def api_server(
    settings: Settings, database: str, redis_server: ManagedRedis, kamailio: KamailioProcess,
    clock: TestClock,
) -> AsyncIterator[TestServer]:  # fmt: skip
    server = TestServer(create_app(settings, clock=clock), host="127.0.0.1", port=settings.api.port)
    await server.start_server()
    yield server
    await server.close()


@pytest.fixture(scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture(scope="session")
def api_base(settings: Settings, api_server: TestServer) -> str:
    return f"http://127.0.0.1:{settings.api.port}/api/v1"


@pytest.fixture
def admin(http: aiohttp.ClientSession, api_base: str) -> ApiClient:
    return ApiClient(http, api_base, ADMIN_TOKEN)


@pytest.fixture
def anonymous(http: aiohttp.ClientSession, api_base: str) -> ApiClient:
    return ApiClient(http, api_base, None)


_extensions = itertools.count(2000)


@pytest.fixture
def next_extension() -> Callable[[], str]:
    """A number no other test of this session uses."""
    return lambda: str(next(_extensions))


@pytest.fixture
async def agent(
    admin: ApiClient, settings: Settings, next_extension: Callable[[], str]
) -> AsyncIterator[MakeAgent]:
    """A user with a registered desk phone and a presence (ready unless told otherwise)."""
    made: list[Agent] = []

    async def make(name: str, *, auto_answer: int | None = 200, status: str | None = "ready",
                   reason: str | None = None) -> Agent:  # fmt: skip
        user = await admin.new_user(name)
        extension = next_extension()
        sip = (await admin.assign(user["id"], extension))["sip"]
        phone = TestPhone(auto_answer=auto_answer)
        assert await phone.register(
            extension, sip["password"], settings.sip.domain, settings.sip.host, settings.sip.port
        ) == 200  # fmt: skip
        made.append(each := Agent(phone, extension, user["id"]))
        if status is not None:
            await set_status(admin, each, status, reason=reason)
        return each

    yield make
    for each in made:
        await admin.put(f"/users/{each.user_id}/presence", {"status": "logged_out"})
        each.phone.close()


@pytest.fixture
async def phone(
    admin: ApiClient, settings: Settings, next_extension: Callable[[], str]
) -> AsyncIterator[MakePhone]:
    """A registered desk phone of a new user: (phone, its extension)."""
    phones: list[TestPhone] = []

    async def make(name: str, auto_answer: int | None = 200) -> tuple[TestPhone, str]:
        user = await admin.new_user(name)
        extension = next_extension()
        sip = (await admin.assign(user["id"], extension))["sip"]
        desk = TestPhone(auto_answer=auto_answer)
        phones.append(desk)
        status = await desk.register(
            extension, sip["password"], settings.sip.domain, settings.sip.host, settings.sip.port
        )
        assert status == 200
        return desk, extension

    yield make
    for each in phones:
        each.close()


@pytest.fixture(scope="session")
def repo_root() -> Iterator[Path]:
    yield Path(__file__).resolve().parent.parent
