"""The link between controllers and a media host (pbx.media_link, pbx.media_host) over real
sockets: a linked host joins the controller's pool; a newer controller (a takeover) takes the
host over, and the one it replaced cannot take it back while it is linked (fencing by term);
a controller with another secret is refused. No worker is started: the pool here only
records hosts."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import aiohttp
import pytest

from core.settings import Settings
from pbx.channel import WorkerHost, WorkerLauncher
from pbx.media_host import MAX_HANDSHAKES, MediaHost
from pbx.media_link import MediaHosts
from pbx.media_metrics import serve_metrics
from pbx.pool import AdoptedWorker
from tests.conftest import make_settings
from tests.support.ports import free_port

pytestmark = pytest.mark.no_sql  # no SQL at all

SECRET = "media-link-secret-0123"
ADDRESS = "127.0.0.1"
LINKED_S = 10.0


class RecordingPool:
    """Which hosts a controller's pool holds now (pbx.media_link.HostRegistry)."""

    def __init__(self) -> None:
        self.hosts: dict[str, WorkerHost] = {}
        self.changed = asyncio.Event()

    def add_host(
        self, place: WorkerHost, launcher: WorkerLauncher, adopted: Sequence[AdoptedWorker] = ()
    ) -> None:
        self.hosts[place.name] = place
        self.changed.set()

    def remove_host(self, name: str) -> None:
        self.hosts.pop(name, None)
        self.changed.set()

    async def until(self, linked: bool) -> None:
        async with asyncio.timeout(LINKED_S):
            while bool(self.hosts) is not linked:
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
async def host(tmp_path: Path) -> AsyncIterator[MediaHost]:
    settings = make_settings(
        tmp_path / "media", workers={"host": ADDRESS}, media={"name": "m1", "port": free_port()},
        cluster={"secret": SECRET},
    )  # fmt: skip
    media = MediaHost(settings)
    await media.start()
    yield media
    await media.stop()


def controller_settings(tmp_path: Path, host: MediaHost, name: str, secret: str) -> Settings:
    ours = host.settings
    return make_settings(
        tmp_path / name,
        workers={"first_sip_port": ours.workers.first_sip_port, "max_workers": 2},
        # Through PBX_* variables, as make_settings passes them: a list is JSON there.
        cluster={"secret": secret, "media_hosts": json.dumps([f"{ADDRESS}:{ours.media.port}"])},
    )  # fmt: skip


def refused(host: MediaHost, reason: str) -> float:
    return host.metrics.refused.labels(reason=reason)._value.get()


async def until_refused(host: MediaHost, reason: str, times: int) -> None:
    async with asyncio.timeout(LINKED_S):
        while refused(host, reason) < times:
            await asyncio.sleep(0.05)


async def test_a_newer_controller_takes_the_host_and_an_older_one_cannot_take_it_back(
    tmp_path: Path, host: MediaHost
) -> None:
    pools = {name: RecordingPool() for name in ("old", "new", "past")}
    links = {
        "old": MediaHosts(controller_settings(tmp_path, host, "old", SECRET), pools["old"],
                          term=2),
        "new": MediaHosts(controller_settings(tmp_path, host, "new", SECRET), pools["new"],
                          term=3),
        "past": MediaHosts(controller_settings(tmp_path, host, "past", SECRET), pools["past"],
                           term=1),
    }  # fmt: skip
    try:
        links["old"].start()
        await pools["old"].until(linked=True)
        assert pools["old"].hosts["m1"].address == ADDRESS

        links["new"].start()  # the takeover
        await pools["new"].until(linked=True)
        await pools["old"].until(linked=False)  # replaced; and its relinks are refused
        links["past"].start()
        await until_refused(host, "past_controller", 3)  # each tried, and tried again
        assert not pools["old"].hosts and not pools["past"].hosts
        assert "m1" in pools["new"].hosts

        # The fence is the live link only: once its controller is gone, a lower term (a
        # Redis counter that went back) is served, not locked out until the host restarts.
        await links["old"].stop()
        await links["new"].stop()
        await pools["past"].until(linked=True)
    finally:
        for link in links.values():
            await link.stop()


async def test_a_controller_without_the_secret_is_not_linked(
    tmp_path: Path, host: MediaHost
) -> None:
    pool = RecordingPool()
    link = MediaHosts(controller_settings(tmp_path, host, "other", "not-the-secret-0000"), pool,
                      term=5)  # fmt: skip
    link.start()
    try:
        await until_refused(host, "proof", 2)  # a refused link is tried again, refused again
        assert not pool.hosts
    finally:
        await link.stop()


async def test_connections_beyond_the_handshake_limit_are_cut_at_once(
    tmp_path: Path, host: MediaHost
) -> None:
    port = host.settings.media.port
    silent = [await asyncio.open_connection(ADDRESS, port) for _ in range(MAX_HANDSHAKES)]
    try:
        for reader, _ in silent:  # each is proving itself: it got its challenge
            assert (await reader.readline()).startswith(b'* {"type":"challenge"')
        reader, writer = await asyncio.open_connection(ADDRESS, port)
        async with asyncio.timeout(LINKED_S):
            assert await reader.read() == b"", "cut without a challenge"
        writer.close()
        assert refused(host, "busy") == 1
    finally:
        for _, quiet in silent:
            quiet.close()
    # Once they are gone, a controller is linked as before.
    pool = RecordingPool()
    link = MediaHosts(controller_settings(tmp_path, host, "later", SECRET), pool, term=1)
    link.start()
    try:
        await pool.until(linked=True)
    finally:
        await link.stop()


async def test_the_host_serves_its_metrics(tmp_path: Path, host: MediaHost) -> None:
    """Linked or not, refused links, workers: what only the host knows, on its own /metrics."""
    port = free_port()
    runner = await serve_metrics(host.metrics, ADDRESS, port)
    pool = RecordingPool()
    link = MediaHosts(controller_settings(tmp_path, host, "scraped", SECRET), pool, term=1)
    link.start()
    try:
        await pool.until(linked=True)
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://{ADDRESS}:{port}/metrics") as reply,
        ):
            assert reply.status == 200
            text = await reply.text()
    finally:
        await link.stop()
        await runner.cleanup()
    for line in ("pbx_media_host_linked 1.0", "pbx_media_host_links_total 1.0",
                 'pbx_media_host_workers{state="linked"} 0.0'):  # fmt: skip
        assert line in text.splitlines(), text
