"""The Kamailio edge against real phones, and the child processes the service supervises."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import signal
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import cast

import aiohttp
import pytest
from redis.asyncio import Redis
from structlog.testing import capture_logs

from core.child_process import ChildProcess, ChildProcessFailed
from core.context import EdgeUnavailable
from core.redis_server import ManagedRedis
from core.settings import DatabaseSettings, DataSettings, Settings, SipSettings, TrunkSettings
from migrations import upgrade_database
from pbx.kamailio import (
    DROP_REASONS,
    DROP_SUMMARY_SECONDS,
    KamailioError,
    KamailioProcess,
    KamailioRpc,
    WorkerSlot,
    kamailio_db_url,
    render_dispatcher_list,
    render_kamailio_config,
)
from pbx.ua_thread import UserAgentError, UserAgentThread, shared_user_agent
from tests.support.phone import TestPhone
from tests.support.ports import free_port
from tests.support.postgres import new_test_database_url
from tests.support.sql import execute

REPO_ROOT = Path(__file__).resolve().parents[2]
DOMAIN = "127.0.0.1"
BAN_SECONDS = 2
MAX_FAILURES = 3
PHONE_LIMIT_PER_2S = 20
TRUNK_LIMIT_PER_S = 10
# A provider at the stretch target of 100 calls/s sends 100 INVITEs/s: three times that.
TRUNK_BURST_PER_S = 300


def edge_settings(
    data_dir: Path, trunk: TrunkSettings | None = None, *, sqlite: bool = False, **sip: int
) -> Settings:
    """An edge on the suite's database (PBX_TEST_DATABASE), or on SQLite when asked."""
    url = "" if sqlite else new_test_database_url() or ""
    return Settings(
        data=DataSettings(dir=data_dir),
        database=DatabaseSettings(url=url),
        sip=SipSettings(port=free_port(), rpc_port=free_port(), domain=DOMAIN, **sip),
        trunk=trunk or TrunkSettings(),
    )


async def add_subscriber(settings: Settings, username: str, password: str) -> None:
    ha1 = hashlib.md5(f"{username}:{DOMAIN}:{password}".encode()).hexdigest()
    await execute(
        settings.database_url,
        "INSERT INTO subscriber (username, domain, password, ha1, ha1b)"
        " VALUES (:username, :domain, '', :ha1, '')",
        username=username, domain=DOMAIN, ha1=ha1,
    )  # fmt: skip


async def remove_subscriber(settings: Settings, username: str) -> None:
    await execute(
        settings.database_url, "DELETE FROM subscriber WHERE username = :username",
        username=username,
    )  # fmt: skip


def sip_request(
    method: str, port: int, local_port: int, *, user: str = "", to_tag: str = ""
) -> tuple[str, bytes]:
    """(Call-ID, datagram) of a request from 127.0.0.1:`local_port` to the edge at `port`:
    to sip:`user`@ the edge (no user: the edge itself); with `to_tag`, inside a dialog."""
    call_id = f"{uuid.uuid4().hex}@127.0.0.1"
    target = f"{user}@127.0.0.1:{port}" if user else f"127.0.0.1:{port}"
    request = (
        f"{method} sip:{target} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{local_port};branch=z9hG4bK{call_id[:16]};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:probe@127.0.0.1>;tag={call_id[16:24]}\r\n"
        f"To: <sip:{target}>{f';tag={to_tag}' if to_tag else ''}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: 1 {method}\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    return call_id, request.encode()


def sip_status(port: int, timeout: float, method: str = "OPTIONS") -> int | None:
    """Status code of the edge's answer to an out-of-dialog request, None if it stays silent."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        probe.settimeout(timeout)
        _, request = sip_request(method, port, probe.getsockname()[1])
        probe.sendto(request, ("127.0.0.1", port))
        try:
            answer = probe.recv(65535)
        except TimeoutError:
            return None
    return int(answer.split(b" ", 2)[1])


class SipBurst(asyncio.DatagramProtocol):
    """Many requests from one UDP socket on 127.0.0.1, and the first answer to each."""

    def __init__(self) -> None:
        self.requests: dict[str, str] = {}  # Call-ID -> method
        self.answers: dict[str, int] = {}  # Call-ID -> status code
        self._transport: asyncio.DatagramTransport | None = None

    @classmethod
    async def open(cls) -> SipBurst:
        loop = asyncio.get_running_loop()
        _, burst = await loop.create_datagram_endpoint(cls, local_addr=("127.0.0.1", 0))
        return burst

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's UDP transport implements DatagramTransport without subclassing it.
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        head, _, rest = data.partition(b"\r\n")
        found = re.search(rb"^Call-ID: *(\S+)", rest, re.MULTILINE | re.IGNORECASE)
        if head.startswith(b"SIP/2.0 ") and found:
            self.answers.setdefault(found[1].decode(), int(head.split(b" ", 2)[1]))

    @property
    def local_port(self) -> int:
        assert self._transport is not None
        port: int = self._transport.get_extra_info("sockname")[1]
        return port

    async def send(
        self, port: int, requests: list[tuple[str, str, str]], per_second: float
    ) -> None:
        """Send (method, user, to_tag) requests to the edge at `port`, `per_second` a second."""
        assert self._transport is not None
        started = time.monotonic()
        for number, (method, user, to_tag) in enumerate(requests):
            call_id, datagram = sip_request(method, port, self.local_port, user=user, to_tag=to_tag)
            self.requests[call_id] = method
            self._transport.sendto(datagram, ("127.0.0.1", port))
            # Paced by the clock, not by the sleeps: a late wake-up sends the overdue at once.
            delay = started + (number + 1) / per_second - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)

    def statuses(self, method: str) -> list[int | None]:
        return [self.answers.get(cid) for cid, m in self.requests.items() if m == method]

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]], within: float, what: str
) -> None:
    deadline = time.monotonic() + within
    while True:
        met = condition()
        if met if isinstance(met, bool) else await met:
            return
        assert time.monotonic() < deadline, f"{what}: not within {within:g} s"
        await asyncio.sleep(0.05)


async def started_edge(settings: Settings) -> KamailioProcess:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(upgrade_database, settings.database_url)
    edge = KamailioProcess(settings)
    await edge.start()
    return edge


@pytest.fixture(scope="module")
async def edge_config(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Settings]:
    settings = edge_settings(tmp_path_factory.mktemp("edge"))
    edge = await started_edge(settings)
    yield settings
    await edge.stop()


@pytest.fixture(scope="module")
async def guarded_edge_config(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Settings]:
    """A second edge that bans quickly, so banning 127.0.0.1 there spares the other tests."""
    settings = edge_settings(
        tmp_path_factory.mktemp("guarded-edge"),
        max_auth_failures=MAX_FAILURES,
        auth_ban_seconds=BAN_SECONDS,
    )
    edge = await started_edge(settings)
    yield settings
    await edge.stop()


@pytest.fixture(scope="module")
async def trunk_edge_config(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Settings]:
    """An edge whose trunk is 127.0.0.1, with a phones' limit far below the trunk's default."""
    settings = edge_settings(
        tmp_path_factory.mktemp("trunk-edge"),
        TrunkSettings(sources=["127.0.0.1"]),
        max_requests_per_2s=PHONE_LIMIT_PER_2S,
    )
    edge = await started_edge(settings)
    yield settings
    await edge.stop()


@pytest.fixture(scope="module")
async def limited_trunk_edge_config(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Settings]:
    """An edge whose trunk (127.0.0.1) may send only TRUNK_LIMIT_PER_S new requests a second."""
    settings = edge_settings(
        tmp_path_factory.mktemp("limited-trunk-edge"),
        TrunkSettings(sources=["127.0.0.1"], max_requests_per_s=TRUNK_LIMIT_PER_S),
        max_requests_per_2s=PHONE_LIMIT_PER_2S,
    )
    edge = await started_edge(settings)
    yield settings
    await edge.stop()


@pytest.fixture(scope="module")
async def phone_edge_config(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Settings]:
    """An edge with no trunk, so 127.0.0.1 is a phone; flooding it blocks 127.0.0.1 there."""
    settings = edge_settings(
        tmp_path_factory.mktemp("phone-edge"),
        TrunkSettings(sources=[]),
        max_requests_per_2s=PHONE_LIMIT_PER_2S,
    )
    edge = await started_edge(settings)
    yield settings
    await edge.stop()


@pytest.fixture(scope="module")
async def rpc(edge_config: Settings) -> AsyncIterator[KamailioRpc]:
    client = KamailioRpc("127.0.0.1", edge_config.sip.rpc_port)
    yield client
    await client.close()


@pytest.fixture(scope="module")
def user_agent() -> UserAgentThread:
    return shared_user_agent()


@pytest.fixture
def phone(user_agent: UserAgentThread) -> Iterator[Callable[[], TestPhone]]:
    phones: list[TestPhone] = []

    def make() -> TestPhone:
        phones.append(TestPhone(user_agent))
        return phones[-1]

    yield make
    for each in phones:
        each.close()


async def register(
    make_phone: Callable[[], TestPhone],
    settings: Settings,
    user: str,
    password: str,
    answer_within: float = 5.0,
) -> int:
    return await make_phone().register(
        user, password, DOMAIN, settings.sip.host, settings.sip.port, timeout=answer_within
    )


@pytest.mark.sip
async def test_phone_with_the_right_password_registers_and_is_located(
    edge_config: Settings, rpc: KamailioRpc, phone: Callable[[], TestPhone]
) -> None:
    await add_subscriber(edge_config, "1001", "right-secret")
    desk = phone()
    code = await desk.register("1001", "right-secret", DOMAIN, "127.0.0.1", edge_config.sip.port)
    assert code == 200
    contacts = await rpc.registered_contacts("1001")
    assert len(contacts) == 1 and contacts[0].startswith("sip:1001@127.0.0.1:")
    await desk.unregister()
    assert await rpc.registered_contacts("1001") == []


@pytest.mark.sip
async def test_wrong_password_is_refused(
    edge_config: Settings, rpc: KamailioRpc, phone: Callable[[], TestPhone]
) -> None:
    await add_subscriber(edge_config, "1002", "right-secret")
    assert await register(phone, edge_config, "1002", "wrong-secret") == 401
    assert await register(phone, edge_config, "1999", "no-such-user") == 401
    assert await rpc.registered_contacts("1002") == []


@pytest.mark.sip
async def test_deleted_subscriber_cannot_register_with_old_credentials(
    edge_config: Settings, phone: Callable[[], TestPhone]
) -> None:
    await add_subscriber(edge_config, "1003", "old-secret")
    assert await register(phone, edge_config, "1003", "old-secret") == 200
    await remove_subscriber(edge_config, "1003")
    assert await register(phone, edge_config, "1003", "old-secret") == 401


@pytest.mark.sip
async def test_dropped_registrations_leave_no_binding(
    edge_config: Settings, rpc: KamailioRpc, phone: Callable[[], TestPhone]
) -> None:
    await add_subscriber(edge_config, "1004", "secret-1004")
    assert await register(phone, edge_config, "1004", "secret-1004") == 200
    assert await rpc.registered_contacts("1004")
    await rpc.drop_registrations("1004")
    assert await rpc.registered_contacts("1004") == []
    await rpc.drop_registrations("1004")  # nothing left to drop is fine


@pytest.mark.sip
async def test_credentials_of_another_extension_are_forbidden(
    edge_config: Settings, phone: Callable[[], TestPhone]
) -> None:
    await add_subscriber(edge_config, "1005", "secret-1005")
    desk = phone()
    code = await desk.register(
        "1006", "secret-1005", DOMAIN, "127.0.0.1", edge_config.sip.port, auth_username="1005"
    )
    assert code == 403


@pytest.mark.sip
async def test_edge_answers_options_and_refuses_other_requests(edge_config: Settings) -> None:
    port = edge_config.sip.port
    assert await asyncio.to_thread(sip_status, port, 2.0) == 200
    # An INVITE to no inbound number must come from a phone of ours: challenged.
    assert await asyncio.to_thread(sip_status, port, 2.0, "INVITE") == 407
    assert await asyncio.to_thread(sip_status, port, 2.0, "MESSAGE") == 403


@pytest.mark.sip
async def test_rpc_and_metrics_only_on_the_rpc_port(edge_config: Settings) -> None:
    sip, rpc_port = edge_config.sip, edge_config.sip.rpc_port
    request = {"jsonrpc": "2.0", "method": "core.version", "id": 1}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"http://127.0.0.1:{rpc_port}/RPC", json=request) as reply:
            assert "kamailio" in (await reply.json(content_type=None))["result"]
        async with http.get(f"http://127.0.0.1:{rpc_port}/metrics") as reply:
            assert reply.status == 200 and "kamailio_" in await reply.text()
        async with http.get(f"http://127.0.0.1:{rpc_port}/elsewhere") as reply:
            assert reply.status == 404
        # The SIP port also accepts TCP, but never serves RPC.
        async with http.post(f"http://127.0.0.1:{sip.port}/RPC", json=request) as reply:
            assert reply.status == 403


@pytest.mark.sip
async def test_rpc_to_a_stopped_edge_raises_edge_unavailable() -> None:
    client = KamailioRpc("127.0.0.1", free_port())
    try:
        with pytest.raises(EdgeUnavailable):
            await client.drop_registrations("1001")
    finally:
        await client.close()


@pytest.mark.sip
async def test_address_goes_silent_after_too_many_wrong_answers(
    guarded_edge_config: Settings, phone: Callable[[], TestPhone]
) -> None:
    settings = guarded_edge_config
    await add_subscriber(settings, "2001", "right-secret")
    for _ in range(MAX_FAILURES):
        assert await register(phone, settings, "2001", "guess") == 401
    # Banned: even the right password and a plain OPTIONS get no answer at all.
    with pytest.raises(TimeoutError):
        await register(phone, settings, "2001", "right-secret", answer_within=1.0)
    assert await asyncio.to_thread(sip_status, settings.sip.port, 0.5) is None
    edge = KamailioRpc("127.0.0.1", settings.sip.rpc_port)
    try:
        # The REGISTER (and its retransmissions) and the OPTIONS, each counted.
        assert (await edge.dropped_requests())["banned"] >= 2
    finally:
        await edge.close()
    banned_at = time.monotonic()
    while await asyncio.to_thread(sip_status, settings.sip.port, 0.25) is None:
        assert time.monotonic() - banned_at < BAN_SECONDS + 4, "the ban never lifted"
    assert await register(phone, settings, "2001", "right-secret") == 200


@pytest.mark.sip
async def test_trunk_burst_far_above_the_phones_limit_is_answered_in_full(
    trunk_edge_config: Settings,
) -> None:
    settings = trunk_edge_config
    edge = KamailioRpc("127.0.0.1", settings.sip.rpc_port)
    burst = await SipBurst.open()
    try:
        # INVITEs to no inbound number: the edge asks for a phone's credentials (407).
        count = TRUNK_BURST_PER_S  # one second of it
        invites = [("INVITE", "4930000000", "")] * count
        await burst.send(settings.sip.port, invites, per_second=TRUNK_BURST_PER_S)
        await wait_until(lambda: len(burst.answers) == count, 10, "every INVITE answered")
        assert set(burst.statuses("INVITE")) == {407}
        assert await edge.dropped_requests() == dict.fromkeys(DROP_REASONS, 0)
    finally:
        burst.close()
        await edge.close()


@pytest.mark.sip
async def test_trunk_limit_refuses_new_requests_but_never_in_dialog_ones(
    limited_trunk_edge_config: Settings,
) -> None:
    settings = limited_trunk_edge_config
    edge = KamailioRpc("127.0.0.1", settings.sip.rpc_port)
    burst = await SipBurst.open()
    try:
        # New INVITEs and BYEs of (unknown) dialogs in turn, 6 times the limit of INVITEs.
        requests = [("INVITE", "4930000000", ""), ("BYE", "4930000000", "dialog")]
        count = 6 * TRUNK_LIMIT_PER_S
        await burst.send(settings.sip.port, requests * count, per_second=20 * TRUNK_LIMIT_PER_S)
        await wait_until(lambda: len(burst.answers) == 2 * count, 10, "every request answered")
        invites = burst.statuses("INVITE")
        assert set(invites) == {407, 503} and invites[0] == 407
        # A BYE is routed as its dialog says (here: nowhere, 404), never refused as excess.
        assert set(burst.statuses("BYE")) == {404}
        dropped = await edge.dropped_requests()
        assert dropped == {
            "banned": 0,
            "phone_flood": 0,
            "trunk_limit": invites.count(503),
            "no_worker": 0,
        }
    finally:
        burst.close()
        await edge.close()


@pytest.mark.sip
async def test_phone_flood_is_dropped_counted_and_logged_as_a_summary(
    phone_edge_config: Settings,
) -> None:
    settings = phone_edge_config
    edge = KamailioRpc("127.0.0.1", settings.sip.rpc_port)
    burst = await SipBurst.open()
    count = 10 * PHONE_LIMIT_PER_2S

    async def all_accounted_for() -> bool:
        dropped = (await edge.dropped_requests())["phone_flood"]
        return len(burst.answers) + dropped == count

    try:
        with capture_logs() as logs:
            await burst.send(settings.sip.port, [("OPTIONS", "", "")] * count, per_second=400)
            # Each request is answered or dropped, and counted when it is dropped.
            await wait_until(all_accounted_for, 10, "every OPTIONS answered or counted")
            dropped = (await edge.dropped_requests())["phone_flood"]
            assert dropped >= count - 2 * PHONE_LIMIT_PER_2S
            assert set(burst.statuses("OPTIONS")) == {200, None}

            def summarised() -> list[int]:
                return [
                    int(found[1])
                    for entry in logs
                    if (found := SUMMARY.search(str(entry.get("event", ""))))
                ]

            await wait_until(
                lambda: sum(summarised()) == dropped,
                2 * DROP_SUMMARY_SECONDS + 5,
                "the drops summarised in the log",
            )
        # One line per summary period the burst touched, none per dropped request.
        assert 1 <= len(summarised()) <= 2
        # Other edges of this module log their own summaries meanwhile: summaries too.
        lines = [str(entry.get("event", "")) for entry in logs]
        assert [line for line in lines if "dropp" in line.lower()] == [
            line for line in lines if ANY_SUMMARY.search(line)
        ]
    finally:
        burst.close()
        await edge.close()


ANY_SUMMARY = re.compile(r"guard: dropped \d+ requests from \S+ \(\w+\) in the last \d+ s")
SUMMARY = re.compile(
    rf"guard: dropped (\d+) requests from 127\.0\.0\.1 \(phone_flood\)"
    rf" in the last {DROP_SUMMARY_SECONDS} s"
)


@pytest.mark.sip
@pytest.mark.parametrize(
    "database_url",
    ["", "postgresql+asyncpg://pbx:secret@127.0.0.1:5432/pbx"],
    ids=["sqlite", "postgresql"],
)
@pytest.mark.parametrize("register", [False, True], ids=["", "registering"])
async def test_rendered_config_passes_kamailio_check(
    tmp_path: Path, database_url: str, register: bool
) -> None:
    trunk = TrunkSettings.model_validate(
        {"uri": "sip:192.0.2.10:5060", "username": "acct", "password": "pw", "register": register}
    )
    settings = edge_settings(tmp_path, sqlite=True).model_copy(
        update={"database": DatabaseSettings(url=database_url), "trunk": trunk}
    )
    config = tmp_path / "kamailio.cfg"
    dispatcher_list = tmp_path / "dispatcher.list"
    worker = WorkerSlot(uri="sip:127.0.0.1:5080", duid="w0", max_calls=2)
    dispatcher_list.write_text(render_dispatcher_list([worker], [worker.uri]))
    config.write_text(render_kamailio_config(settings, tmp_path / "run", dispatcher_list))
    check = await asyncio.create_subprocess_exec(
        settings.sip.kamailio_binary,
        "-c",
        "-f",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await check.communicate()
    assert check.returncode == 0, output.decode()


def test_registration_needs_an_edge_address_the_provider_can_reach(tmp_path: Path) -> None:
    trunk = TrunkSettings.model_validate(
        {"uri": "sip:192.0.2.10", "username": "acct", "password": "pw", "register": True}
    )
    settings = Settings(
        data=DataSettings(dir=tmp_path), sip=SipSettings(host="0.0.0.0"), trunk=trunk
    )
    with pytest.raises(ValueError, match=r"trunk\.register .* not 0\.0\.0\.0"):
        render_kamailio_config(settings, tmp_path / "run", tmp_path / "dispatcher.list")


async def test_kamailio_refuses_to_start_without_a_migrated_database(tmp_path: Path) -> None:
    with pytest.raises(KamailioError, match="run the migrations"):
        await KamailioProcess(edge_settings(tmp_path, sqlite=True)).start()


@pytest.mark.parametrize(
    ("database_url", "expected"),
    [
        ("sqlite+aiosqlite:////var/lib/pbx/pbx.sqlite3", "sqlite:////var/lib/pbx/pbx.sqlite3"),
        ("sqlite:////srv/pbx.sqlite3", "sqlite:////srv/pbx.sqlite3"),
        ("postgresql+asyncpg://pbx:pw@db.local:5433/pbx", "postgres://pbx:pw@db.local:5433/pbx"),
        ("postgresql://pbx@10.0.0.5/pbx", "postgres://pbx@10.0.0.5/pbx"),
    ],
)
def test_kamailio_db_url_translates_service_urls(database_url: str, expected: str) -> None:
    assert kamailio_db_url(database_url) == expected


def test_kamailio_db_url_makes_a_relative_sqlite_path_absolute() -> None:
    assert kamailio_db_url("sqlite+aiosqlite:///data/pbx.sqlite3") == (
        f"sqlite:///{Path.cwd() / 'data' / 'pbx.sqlite3'}"
    )


@pytest.mark.parametrize(
    "database_url",
    [
        "mysql+aiomysql://pbx:pw@127.0.0.1/pbx",
        "sqlite+aiosqlite://",
        "sqlite+aiosqlite:///:memory:",
        "postgresql+asyncpg://pbx:pw@/pbx",
        'postgresql+asyncpg://pbx:p"w@127.0.0.1/pbx',
        "not a url",
    ],
)
def test_kamailio_db_url_rejects_what_kamailio_cannot_use(database_url: str) -> None:
    with pytest.raises(ValueError):
        kamailio_db_url(database_url)


async def test_managed_redis_starts_answers_and_stops(tmp_path: Path) -> None:
    server = ManagedRedis("127.0.0.1", free_port(), tmp_path / "redis")
    await server.start()
    client = Redis.from_url(server.url)
    try:
        assert await client.set("greeting", "hello")
        assert await client.get("greeting") == b"hello"
    finally:
        await client.aclose()
    await server.stop()
    await server.stop()  # idempotent
    assert (tmp_path / "redis" / "appendonlydir").is_dir()


async def test_managed_redis_on_a_taken_port_fails_clearly(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        server = ManagedRedis("127.0.0.1", port, tmp_path / "redis")
        with pytest.raises(ChildProcessFailed, match=f"127.0.0.1:{port}.*in use"):
            await server.start()


async def test_child_exiting_before_ready_reports_its_output() -> None:
    child = ChildProcess("broken", ["/bin/sh", "-c", "echo loading; echo bad config >&2; exit 3"])
    await child.start()

    async def never_ready() -> bool:
        return False

    with pytest.raises(ChildProcessFailed, match=r"(?s)exited with code 3.*bad config"):
        await child.wait_ready(never_ready, timeout=5.0)
    assert child.returncode == 3
    assert child.last_output == ["loading", "bad config"]


async def test_child_not_ready_in_time_fails_and_stop_escalates_to_kill() -> None:
    child = ChildProcess("stubborn", ["/bin/sh", "-c", "trap '' TERM; echo up; sleep 30"])
    await child.start()

    async def never_ready() -> bool:
        return False

    with pytest.raises(ChildProcessFailed, match=r"not ready after 0\.3 s"):
        await child.wait_ready(never_ready, timeout=0.3)
    await child.stop(timeout=0.3)
    assert child.returncode == -signal.SIGKILL
    await child.stop()


async def test_child_dies_with_its_parent(tmp_path: Path) -> None:
    parent_script = (
        "import asyncio, os, sys\n"
        "from core.child_process import ChildProcess\n"
        "async def main():\n"
        "    child = ChildProcess('sleeper', ['sleep', '60'])\n"
        "    await child.start()\n"
        "    print(child.pid, file=sys.stderr, flush=True)  # stdout carries the log\n"
        "    os._exit(1)  # a crash: no cleanup runs\n"
        "asyncio.run(main())\n"
    )
    parent = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        parent_script,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO_ROOT,
    )
    _, errors = await parent.communicate()
    child_pid = int(errors.split()[0])
    deadline = time.monotonic() + 5
    while _is_alive(child_pid):
        assert time.monotonic() < deadline, f"child {child_pid} outlived its parent"
        await asyncio.sleep(0.05)


def _is_alive(pid: int) -> bool:
    # The orphan is reaped by init (or a subreaper); a zombie counts as dead.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_user_agent_is_one_per_process(user_agent: UserAgentThread) -> None:
    assert user_agent.running and user_agent.sip_port > 0
    with pytest.raises(UserAgentError, match="already runs"):
        UserAgentThread().start()
    assert user_agent.run(lambda: os.getpid()) == os.getpid()
