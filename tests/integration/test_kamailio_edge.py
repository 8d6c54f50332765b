"""The Kamailio edge against real phones, and the child processes the service supervises."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import signal
import socket
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from contextlib import closing
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
from redis.asyncio import Redis
from structlog.testing import capture_logs

from core.child_process import ChildProcess, ChildProcessFailed
from core.context import EdgeUnavailable
from core.redis_server import ManagedRedis
from core.settings import (
    DatabaseSettings,
    DataSettings,
    Settings,
    SipSettings,
    TrunkSettings,
    WorkerSettings,
)
from migrations import upgrade_database
from pbx.kamailio import (
    DROP_REASONS,
    DROP_SUMMARY_LINES,
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
from tests.support.postgres import new_test_database_url, selected_backend
from tests.support.sql import execute

REPO_ROOT = Path(__file__).resolve().parents[2]
DOMAIN = "127.0.0.1"
BAN_SECONDS = 2
# The guarded edges' brute-force limits: per account and address, then per address.
MAX_FAILURES = 3
MAX_ACCOUNTS = 4
MAX_ADDRESS_FAILURES = 5
PHONE_LIMIT_PER_2S = 20
TRUNK_LIMIT_PER_S = 10
# A provider at the stretch target of 100 calls/s sends 100 INVITEs/s: three times that.
TRUNK_BURST_PER_S = 300


def edge_settings(
    data_dir: Path,
    trunk: TrunkSettings | None = None,
    workers: WorkerSettings | None = None,
    **sip: int,
) -> Settings:
    """An edge on the suite's database (PBX_TEST_DATABASE): Kamailio reads and writes it."""
    return Settings(
        data=DataSettings(dir=data_dir),
        database=DatabaseSettings(url=new_test_database_url() or ""),
        sip=SipSettings(port=free_port(), rpc_port=free_port(), domain=DOMAIN, **sip),
        trunk=trunk or TrunkSettings(),
        workers=workers or WorkerSettings(),
    )


GUARD_LIMITS = {
    "max_auth_failures": MAX_FAILURES,
    "max_auth_accounts_per_address": MAX_ACCOUNTS,
    "max_auth_failures_per_address": MAX_ADDRESS_FAILURES,
    "auth_ban_seconds": BAN_SECONDS,
}


def database_file(settings: Settings) -> Path:
    return Path(settings.database_url.removeprefix("sqlite+aiosqlite:///"))


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


async def add_inbound_number(settings: Settings, number: str) -> None:
    await execute(
        settings.database_url,
        "INSERT INTO numbers (number, name, extension_dialing, default_destination,"
        " created_at, updated_at) VALUES (:number, '', true, '{\"type\": \"hangup\"}',"
        " '2026-01-01 00:00:00', '2026-01-01 00:00:00')",
        number=number,
    )  # fmt: skip


async def location_rows(settings: Settings, username: str) -> int:
    """Bindings of `username` in the database (what a restart of Kamailio loads)."""
    ((count,),) = await execute(
        settings.database_url, "SELECT count(*) FROM location WHERE username = :username",
        username=username,
    )  # fmt: skip
    return int(count)


async def bindings(rpc: KamailioRpc, username: str) -> list[tuple[str, str, int]]:
    """(Contact, Call-ID, CSeq) of each binding Kamailio holds: a new REGISTER changes CSeq."""
    try:
        result = await rpc.call("ul.lookup", "location", username)
    except EdgeUnavailable as exc:
        if "not found" in str(exc):
            return []
        raise
    return [
        (entry["Contact"]["Address"], entry["Contact"]["Call-ID"], entry["Contact"]["CSeq"])
        for entry in result["Contacts"]
    ]


def sip_request(
    method: str,
    port: int,
    local_port: int,
    *,
    user: str = "",
    to_tag: str = "",
    source: str = "127.0.0.1",
    caller: str = "probe",
    headers: str = "",
) -> tuple[str, bytes]:
    """(Call-ID, datagram) of a request from `source`:`local_port` to the edge at `port`:
    to sip:`user`@ the edge (no user: the edge itself); with `to_tag`, inside a dialog;
    from sip:`caller`@`source`, with more `headers` ("Name: value\\r\\n" each)."""
    call_id = f"{uuid.uuid4().hex}@{source}"
    target = f"{user}@127.0.0.1:{port}" if user else f"127.0.0.1:{port}"
    request = (
        f"{method} sip:{target} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {source}:{local_port};branch=z9hG4bK{call_id[:16]};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:{caller}@{source}>;tag={call_id[16:24]}\r\n"
        f"To: <sip:{target}>{f';tag={to_tag}' if to_tag else ''}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: 1 {method}\r\n"
        f"{headers}"
        "Content-Length: 0\r\n\r\n"
    )
    return call_id, request.encode()


def send_from(source: str, port: int, datagrams: list[bytes]) -> None:
    """Send each datagram to the edge at `port` from `source` (any 127/8 address is ours);
    their answers, if any, go unread."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        sender.bind((source, 0))
        for datagram in datagrams:
            sender.sendto(datagram, ("127.0.0.1", port))


def wrong_digest_answer(source: str, port: int, account: str) -> int | None:
    """REGISTER `account` from `source`, answer the edge's challenge with a wrong digest:
    the final status (401 when the edge challenges again, None for silence)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as phone:
        phone.bind((source, 0))
        phone.settimeout(2.0)
        local_port = phone.getsockname()[1]
        _, register = sip_request(
            "REGISTER", port, local_port, user=account, source=source, caller=account
        )
        phone.sendto(register, ("127.0.0.1", port))
        try:
            challenge = phone.recv(65535).decode()
        except TimeoutError:
            return None
        nonce = re.search(r'nonce="([^"]+)"', challenge)
        if nonce is None:
            return int(challenge.split(" ", 2)[1])
        authorization = (
            f'Authorization: Digest username="{account}", realm="{DOMAIN}",'
            f' nonce="{nonce[1]}", uri="sip:{account}@127.0.0.1:{port}",'
            f' response="{"0" * 32}", algorithm=MD5\r\n'
        )
        _, answer = sip_request(
            "REGISTER", port, local_port, user=account, source=source, caller=account,
            headers=authorization,
        )  # fmt: skip
        phone.sendto(answer, ("127.0.0.1", port))
        try:
            return int(phone.recv(65535).split(b" ", 2)[1])
        except TimeoutError:
            return None


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
    """A second edge that bans quickly and has no trunk, so banning 127.0.0.1 there spares the
    other tests."""
    settings = edge_settings(
        tmp_path_factory.mktemp("guarded-edge"), TrunkSettings(sources=[]), **GUARD_LIMITS
    )
    edge = await started_edge(settings)
    yield settings
    await edge.stop()


@pytest.fixture(scope="module")
async def guarded_trunk_edge_config(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Settings]:
    """An edge with the same limits whose trunk is 127.0.0.1, where the phones are too."""
    settings = edge_settings(
        tmp_path_factory.mktemp("guarded-trunk-edge"),
        TrunkSettings(sources=["127.0.0.1"]),
        **GUARD_LIMITS,
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


# A worker's audio offer (nothing is sent to that port).
OFFER = (
    "v=0\r\no=worker 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


def invite_from_worker(settings: Settings, user: str, timeout: float = 5.0) -> int | None:
    """Final status of an INVITE to `user` sent from the first media worker's port, the way a
    worker rings a phone; the negative answer is acknowledged. None: no final answer."""
    port = settings.sip.port
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as worker:
        worker.bind((settings.workers.host, settings.workers.first_sip_port))
        worker.settimeout(timeout)
        _, request = sip_request("INVITE", port, settings.workers.first_sip_port, user=user)
        head = request.decode().removesuffix("Content-Length: 0\r\n\r\n")
        invite = (
            f"{head}Contact: <sip:worker@127.0.0.1:{settings.workers.first_sip_port}>\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(OFFER)}\r\n\r\n{OFFER}"
        ).encode()
        worker.sendto(invite, ("127.0.0.1", port))
        while True:
            try:
                answer = worker.recv(65535).decode()
            except TimeoutError:
                return None
            status = int(answer.split(" ", 2)[1])
            if status >= 200:
                break
        to = re.search(r"^To: *(.+?)\r$", answer, re.MULTILINE | re.IGNORECASE)
        assert to is not None, answer
        ack = re.sub(r"^INVITE ", "ACK ", head)
        ack = re.sub(r"^To: .*?\r$", f"To: {to[1]}\r", ack, flags=re.MULTILINE)
        ack = ack.replace("CSeq: 1 INVITE", "CSeq: 1 ACK")
        worker.sendto(f"{ack}Content-Length: 0\r\n\r\n".encode(), ("127.0.0.1", port))
    return status


@pytest.mark.sip
async def test_registrations_survive_a_kill_of_the_edge(
    tmp_path: Path, user_agent: UserAgentThread
) -> None:
    settings = edge_settings(
        tmp_path / "edge", workers=WorkerSettings(first_sip_port=free_port(), max_workers=1)
    )
    edge = await started_edge(settings)
    rpc = KamailioRpc("127.0.0.1", settings.sip.rpc_port)
    desk = TestPhone(user_agent, auto_answer=486)
    try:
        await add_subscriber(settings, "3001", "secret-3001")
        await add_subscriber(settings, "3002", "secret-3002")
        assert await desk.register("3001", "secret-3001", DOMAIN, "127.0.0.1", settings.sip.port)
        before = await bindings(rpc, "3001")
        assert len(before) == 1 and await location_rows(settings, "3001") == 1

        # kill -9 of every Kamailio process: nothing runs at exit.
        assert edge.pid is not None
        os.killpg(edge.pid, signal.SIGKILL)
        await edge.wait()
        edge = await started_edge(settings)

        # The same binding, the same CSeq: loaded from the database, not registered again.
        assert await bindings(rpc, "3001") == before
        # A worker reaches the phone through it (which answers "busy" here).
        assert await asyncio.to_thread(invite_from_worker, settings, "3001") == 486
        await desk.next_incoming(timeout=1)

        # Dropping a phone's registrations still works, and stays dropped after a restart.
        await rpc.drop_registrations("3001")
        assert await rpc.registered_contacts("3001") == []
        assert await location_rows(settings, "3001") == 0
        await edge.stop()
        edge = await started_edge(settings)
        assert await rpc.registered_contacts("3001") == []
        assert await asyncio.to_thread(invite_from_worker, settings, "3001") == 480
    finally:
        desk.close()
        await rpc.close()
        await edge.stop()


@pytest.mark.sip
async def test_registration_waits_for_the_services_write_lock(
    edge_config: Settings, rpc: KamailioRpc, phone: Callable[[], TestPhone]
) -> None:
    if selected_backend() != "sqlite":
        pytest.skip("SQLite's one write lock; PostgreSQL locks rows")
    await add_subscriber(edge_config, "1008", "secret-1008")
    locked = threading.Event()

    def hold_the_write_lock() -> None:
        # As the service's writes do: BEGIN IMMEDIATE takes SQLite's one write lock.
        with closing(sqlite3.connect(database_file(edge_config), isolation_level=None)) as db:
            db.execute("BEGIN IMMEDIATE")
            locked.set()
            time.sleep(0.5)
            db.execute("COMMIT")

    holder = asyncio.create_task(asyncio.to_thread(hold_the_write_lock))
    await asyncio.to_thread(locked.wait, 5)
    # Kamailio's write of the binding waits for the lock instead of failing the REGISTER.
    assert await register(phone, edge_config, "1008", "secret-1008") == 200
    await holder
    assert await location_rows(edge_config, "1008") == 1
    assert await rpc.registered_contacts("1008")


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


async def ban_lifts(settings: Settings) -> None:
    banned_at = time.monotonic()
    while await asyncio.to_thread(sip_status, settings.sip.port, 0.25) is None:
        assert time.monotonic() - banned_at < BAN_SECONDS + 4, "the ban never lifted"


@pytest.mark.sip
async def test_address_goes_silent_when_many_accounts_fail_there(
    guarded_edge_config: Settings, phone: Callable[[], TestPhone]
) -> None:
    settings = guarded_edge_config
    await add_subscriber(settings, "2001", "right-secret")
    # Names being tried: one wrong answer each, and the last one bans the address.
    for number in range(MAX_ACCOUNTS):
        assert await register(phone, settings, f"29{number:02}", "guess") == 401
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
    await ban_lifts(settings)
    assert await register(phone, settings, "2001", "right-secret") == 200


@pytest.mark.sip
async def test_address_goes_silent_when_its_accounts_fail_too_often_in_all(
    guarded_edge_config: Settings, phone: Callable[[], TestPhone]
) -> None:
    settings = guarded_edge_config
    await add_subscriber(settings, "2011", "right-secret")
    await add_subscriber(settings, "2012", "right-secret")
    # Two accounts, each below its own limit or refused at it, but too many answers in all.
    for _ in range(MAX_FAILURES):
        assert await register(phone, settings, "2011", "guess") == 401
    for _ in range(MAX_ADDRESS_FAILURES - MAX_FAILURES):
        assert await register(phone, settings, "2012", "guess") == 401
    assert await asyncio.to_thread(sip_status, settings.sip.port, 0.5) is None
    await ban_lifts(settings)


@pytest.mark.sip
async def test_stale_phone_is_refused_alone_and_the_trunks_address_is_never_banned(
    guarded_trunk_edge_config: Settings, phone: Callable[[], TestPhone]
) -> None:
    """A phone with an old password, a good phone and the provider, all on 127.0.0.1."""
    settings = guarded_trunk_edge_config
    port = settings.sip.port
    await add_subscriber(settings, "2101", "new-secret")  # the stale phone still has "old-secret"
    await add_subscriber(settings, "2102", "good-secret")
    await add_inbound_number(settings, "4930123456")
    edge = KamailioRpc("127.0.0.1", settings.sip.rpc_port)
    burst = await SipBurst.open()
    try:
        for _ in range(MAX_FAILURES):
            assert await register(phone, settings, "2101", "old-secret") == 401
        # Refused at once from now on, at this address: no challenge, no digest work.
        assert await register(phone, settings, "2101", "old-secret") == 403
        assert await register(phone, settings, "2101", "new-secret") == 403
        # Its neighbour registers and calls (no media worker here: the edge's own 503).
        good = phone()
        assert await good.register("2102", "good-secret", DOMAIN, "127.0.0.1", port) == 200
        call = await good.call(f"sip:4930999999@127.0.0.1:{port}")
        assert await asyncio.wait_for(call.ended, 5) == 503

        # More accounts failing at the provider's address than would ban any other address.
        for number in range(MAX_ACCOUNTS + MAX_ADDRESS_FAILURES):
            assert await register(phone, settings, f"28{number:02}", "guess") == 401
        assert await asyncio.to_thread(sip_status, port, 2.0) == 200
        assert await register(phone, settings, "2102", "good-secret") == 200
        # The provider's calls still come in (to the workers, of which this edge has none).
        await burst.send(port, [("INVITE", "4930123456", "")], per_second=10)
        await wait_until(lambda: len(burst.answers) == 1, 5, "the trunk's INVITE answered")
        assert burst.statuses("INVITE") == [503]

        dropped = await edge.dropped_requests()
        assert dropped["banned"] == 0
        assert dropped["banned_account"] == 2
        assert dropped["auth_failures"] == MAX_FAILURES + MAX_ACCOUNTS + MAX_ADDRESS_FAILURES
        assert dropped["no_worker"] == 2

        # The block ends with its time: the stale phone is challenged again.
        await asyncio.sleep(BAN_SECONDS + 1)
        assert await register(phone, settings, "2101", "new-secret") == 200
    finally:
        burst.close()
        await edge.close()


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
        # The BYEs are counted as requests for dialogs the edge does not know, not logged.
        assert dropped == {
            **dict.fromkeys(DROP_REASONS, 0),
            "trunk_limit": invites.count(503),
            "unknown_dialog": count,
        }
    finally:
        burst.close()
        await edge.close()


@pytest.mark.sip
@pytest.mark.no_sql  # the guard's counters only: nothing the database changes
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


ANY_SUMMARY = re.compile(
    r"guard: dropped \d+ requests from \S+ \(\w+\) in the last \d+ s"
    r"|guard: \d+ more lines left out, with \d+ dropped requests, in the last \d+ s"
)
SUMMARY = re.compile(
    rf"guard: dropped (\d+) requests from 127\.0\.0\.1 \(phone_flood\)"
    rf" in the last {DROP_SUMMARY_SECONDS} s"
)


@pytest.fixture(scope="module")
async def summary_edge_config(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Settings]:
    """An edge with the guarded edges' limits, for traffic from addresses of its own."""
    settings = edge_settings(
        tmp_path_factory.mktemp("summary-edge"),
        TrunkSettings(sources=[]),
        max_requests_per_2s=1000,
        **GUARD_LIMITS,
    )
    edge = await started_edge(settings)
    yield settings
    await edge.stop()


# The sources of test_every_guard_path_is_only_summarised: one that goes through every path,
# and more than a summary has lines for, one malformed request each.
GUARDED_SOURCE = "127.0.2.1"
MANY_SOURCES = [f"127.0.3.{n}" for n in range(1, 2 * DROP_SUMMARY_LINES + 6)]
EACH = 30


@pytest.mark.sip
async def test_every_guard_path_is_counted_and_only_summarised(
    summary_edge_config: Settings,
) -> None:
    settings = summary_edge_config
    port = settings.sip.port
    edge = KamailioRpc("127.0.0.1", port=settings.sip.rpc_port)
    source = GUARDED_SOURCE

    def requests(method: str, count: int, **options: str) -> list[bytes]:
        return [sip_request(method, port, 9, source=source, **options)[1] for _ in range(count)]

    def malformed(source: str) -> bytes:
        _, request = sip_request("OPTIONS", port, 9, source=source)
        return request.replace(b"CSeq: 1 OPTIONS", b"CSeq: 1 INVITE")

    async def all_summarised() -> bool:
        dropped = sum((await edge.dropped_requests()).values())
        return dropped > 0 and summarised(logs) == dropped

    try:
        with capture_logs() as logs:
            await asyncio.to_thread(send_from, source, port, [malformed(source)] * EACH)
            await asyncio.to_thread(send_from, source, port, requests("BYE", EACH, to_tag="x"))
            # One account fails until it is refused here, then sends on.
            for _ in range(MAX_FAILURES):
                assert await asyncio.to_thread(wrong_digest_answer, source, port, "probe") == 401
            assert await asyncio.to_thread(wrong_digest_answer, source, port, "probe") == 403
            await asyncio.to_thread(send_from, source, port, requests("REGISTER", EACH))
            # Other accounts fail, until too many answers failed here: the address is ignored,
            # and goes on sending.
            for number in range(1, MAX_ADDRESS_FAILURES - MAX_FAILURES + 1):
                account = f"guess{number}"
                assert await asyncio.to_thread(wrong_digest_answer, source, port, account) == 401
            await asyncio.to_thread(send_from, source, port, requests("OPTIONS", EACH))
            # And many addresses at once.
            for other in MANY_SOURCES:
                await asyncio.to_thread(send_from, other, port, [malformed(other)])

            await wait_until(all_summarised, 2 * DROP_SUMMARY_SECONDS + 5, "all summarised")
        dropped = await edge.dropped_requests()
        assert dropped == {
            **dict.fromkeys(DROP_REASONS, 0),
            "malformed": EACH + len(MANY_SOURCES),
            "unknown_dialog": EACH,
            "auth_failures": MAX_ADDRESS_FAILURES,
            # The REGISTERs after the block (the one answered 403 included).
            "banned_account": EACH + 1,
            # The OPTIONS after the ban (none answered, each counted once).
            "banned": EACH,
        }
        lines = [
            str(entry.get("event", "")) for entry in logs if entry.get("process") == "kamailio"
        ]
        ours = [line[line.index("guard: ") :] for line in lines if ours_in(line)]
        # The block and the ban, each once, and summaries: no line per request, and never more
        # than DROP_SUMMARY_LINES (and one for the rest) at a time.
        events = [line for line in ours if not ANY_SUMMARY.search(line)]
        assert sorted(events) == sorted(
            [
                f"guard: refusing account probe at {source} for {BAN_SECONDS} s after"
                f" {MAX_FAILURES} wrong digest answers",
                f"guard: ignoring {source} for {BAN_SECONDS} s after"
                f" {MAX_ADDRESS_FAILURES} wrong digest answers for"
                f" {1 + MAX_ADDRESS_FAILURES - MAX_FAILURES} accounts",
            ]
        )
        assert any(LEFT_OUT.search(line) for line in ours)
        assert len(ours) <= 2 * (DROP_SUMMARY_LINES + 1)
        assert len(ours) < len(MANY_SOURCES)
    finally:
        await edge.close()


LEFT_OUT = re.compile(r"guard: (\d+) more lines left out, with (\d+) dropped requests")
OURS = re.compile(
    rf"guard: dropped (\d+) requests from (\S+@)?(127\.0\.[23]\.\d+) \("
    rf"|guard: .*{re.escape(GUARDED_SOURCE)} for"
)


def ours_in(line: str) -> bool:
    """A line of test_every_guard_path_is_counted_and_only_summarised's edge (only its
    summaries are long enough to leave lines out)."""
    return bool(OURS.search(line) or LEFT_OUT.search(line))


def summarised(logs: list[MutableMapping[str, Any]]) -> int:
    """Requests from that test's sources in the summaries so far."""
    total = 0
    for entry in logs:
        line = str(entry.get("event", ""))
        if (found := OURS.search(line)) and found[1]:
            total += int(found[1])
        elif found := LEFT_OUT.search(line):
            total += int(found[2])
    return total


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
    settings = edge_settings(tmp_path).model_copy(
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
        # SQLite: a missing file is told apart before Kamailio starts.
        sqlite = edge_settings(tmp_path).model_copy(update={"database": DatabaseSettings()})
        await KamailioProcess(sqlite).start()


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
