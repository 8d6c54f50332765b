"""The controller and the API, each working without the other, and the controller's retention
job (real Redis and SQLite; no Kamailio, no media workers)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy import select

from acd import agents
from acd.models import PresenceHistoryRow
from acd.queues import QueueSpec, create_queue
from api.app import create_app
from controller.component import Controller
from controller.plumbing import REDIS_CONNECTIONS, open_plumbing
from controller.retention import RetentionJob
from core.db import utcnow
from core.events import EventRow
from core.metrics import Metrics
from core.redis_server import ManagedRedis
from core.settings import Settings
from extensions.phones import assign_extension
from extensions.roles import Role
from extensions.users import create_user
from ivr import voicemail
from ivr.cdr import CallRecord
from ivr.voicemail import VoicemailMessageRow
from migrations import upgrade_database
from tests.conftest import ADMIN_TOKEN, make_settings


@contextlib.asynccontextmanager
async def services_of_its_own(
    tmp_path: Path, **sections: dict[str, object]
) -> AsyncIterator[Settings]:
    """A database and a Redis of this test's own (settings `sections` changed): nothing of
    the session's service runs."""
    settings = make_settings(tmp_path / "data", **sections)
    settings.data_dir.mkdir(parents=True)
    await asyncio.to_thread(upgrade_database, settings.database_url)
    redis = ManagedRedis(settings.redis.host, settings.redis.port, settings.data_dir / "redis")
    await redis.start()
    try:
        yield settings
    finally:
        await redis.stop()


@pytest.fixture
async def own_services(tmp_path: Path) -> AsyncIterator[Settings]:
    async with services_of_its_own(tmp_path) as settings:
        yield settings


async def test_the_controller_offers_a_caller_to_an_agent_with_no_web_app(
    own_services: Settings,
) -> None:
    async with open_plumbing(own_services, Metrics()) as plumbing:
        ctx = plumbing.ctx
        controller = Controller(ctx, plumbing.edge, media_workers=False)
        await controller.start()
        try:
            user = await create_user(ctx, name="Alone", email=None, role=Role.OPERATOR)
            await assign_extension(ctx, user.id, "4711")
            queue = await create_queue(ctx, QueueSpec(name="Alone", members=(user.id,)))
            entry = controller.dispatcher.join(queue.id, call_id=1)
            assert [w.ringing for w in controller.waiting_callers(queue.id)] == [False]
            await agents.choose(ctx, user.id, "ready", reason=None, message=None, by="test")
            async with asyncio.timeout(10):
                offer = await entry.offers.get()
            assert [(a.user_id, a.extension) for a in offer.agents] == [(user.id, "4711")]
            assert [w.ringing for w in controller.waiting_callers(queue.id)] == [True]
            await controller.dispatcher.withdraw(user.id, entry)
            await controller.dispatcher.leave(entry)
        finally:
            await controller.stop()


async def test_the_api_serves_without_a_controller(own_services: Settings) -> None:
    settings = own_services
    server = TestServer(create_app(settings, controller=False), host="127.0.0.1",
                        port=settings.api.port)  # fmt: skip
    await server.start_server()
    base = f"http://127.0.0.1:{settings.api.port}"
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    try:
        async with aiohttp.ClientSession(headers=headers) as http:
            async with http.post(f"{base}/api/v1/queues", json={"name": "No controller"}) as made:
                assert made.status == 201, await made.text()
                queue = await made.json()
            async with http.get(f"{base}/api/v1/queues/{queue['id']}/waiting") as waiting:
                assert waiting.status == 200
                assert (await waiting.json())["items"] == []
            async with http.get(f"{base}/metrics") as metrics:
                assert metrics.status == 200
                assert "pbx_worker_pool_workers{" not in await metrics.text()  # no pool, no samples
    finally:
        await server.close()


async def test_with_redis_gone_live_state_answers_503_not_500(own_services: Settings) -> None:
    settings = own_services
    server = TestServer(create_app(settings, controller=False), host="127.0.0.1",
                        port=settings.api.port)  # fmt: skip
    await server.start_server()
    base = f"http://127.0.0.1:{settings.api.port}/api/v1"
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    try:
        async with aiohttp.ClientSession(headers=headers) as http:
            async with http.post(f"{base}/users", json={"name": "Ruth"}) as made:
                user = await made.json()
            redis = Redis(host=settings.redis.host, port=settings.redis.port)
            with contextlib.suppress(RedisConnectionError):  # it goes before it answers
                await redis.shutdown(nosave=True)
            await redis.aclose()
            async with http.get(f"{base}/users/{user['id']}/presence") as presence:
                assert presence.status == 503
                assert (await presence.json())["error"]["code"] == "unavailable"
                assert presence.headers["Retry-After"] == "1"
    finally:
        await server.close()


async def test_history_past_its_retention_is_deleted_and_the_newest_row_kept(
    own_services: Settings,
) -> None:
    old, recent = utcnow() - timedelta(days=400), utcnow() - timedelta(days=1)
    async with open_plumbing(own_services, Metrics()) as plumbing:
        ctx = plumbing.ctx
        async with ctx.sessions.begin() as session:
            for at in (old, old, recent):
                session.add(EventRow(type="thing_happened", occurred_at=at, data={}))
                session.add(PresenceHistoryRow(user_id=1, at=at, status="ready", activity="idle",
                                               cause="test"))  # fmt: skip
                session.add(CallRecord(direction="inbound", caller="1", called="2", worker_id=0,
                                       started_at=at, ended_at=at, legs=[]))  # fmt: skip
            # Open for a year (a crash left it): not history.
            session.add(CallRecord(direction="inbound", caller="1", called="2", worker_id=0,
                                   started_at=old, legs=[]))  # fmt: skip
            # The newest event is old too: kept, so that its id is never handed out again.
            session.add(EventRow(type="thing_happened", occurred_at=old, data={}))
        deleted = await RetentionJob(ctx).apply()
        assert deleted == {"events": 2, "presence_history": 2, "calls": 2}
        async with ctx.sessions() as session:
            events = list(await session.scalars(select(EventRow.type).order_by(EventRow.id)))
            calls = list(await session.scalars(select(CallRecord.ended_at)))
        # The recent one, the newest old one, and the retention_applied event itself.
        assert events == ["thing_happened", "thing_happened", "retention_applied"]
        assert len(calls) == 2 and None in calls
        # Kept only while it was the newest: the next pass takes it.
        assert await RetentionJob(ctx).apply() == {"events": 1}
        assert await RetentionJob(ctx).apply() == {}


async def test_voicemail_past_its_retention_goes_with_its_recording_and_an_event(
    tmp_path: Path,
) -> None:
    async with (
        services_of_its_own(tmp_path, retention={"voicemail_days": 30}) as settings,
        open_plumbing(settings, Metrics()) as plumbing,
    ):
        ctx = plumbing.ctx
        owner = await create_user(ctx, name="Vera", email=None, role=Role.OPERATOR,
                                  wrap_up_time=None)  # fmt: skip
        box = await voicemail.create_box(ctx, voicemail.BoxSpec(
            owner_type="user", owner_id=owner.id, name="Kept short", greeting=None,
            max_seconds=60,
        ))  # fmt: skip
        ids = []
        async with ctx.sessions.begin() as session:
            for age_days, file in ((31, "old.wav"), (29, "new.wav")):
                row = VoicemailMessageRow(
                    box_id=box.id, caller="+4930123", file=file, seconds=3.0,
                    created_at=utcnow() - timedelta(days=age_days),
                )  # fmt: skip
                session.add(row)
                await session.flush()
                ids.append(row.id)
                voicemail.message_file(ctx, row).parent.mkdir(parents=True, exist_ok=True)
                voicemail.message_file(ctx, row).write_bytes(b"RIFF")
        deleted = await RetentionJob(ctx).apply()
        assert deleted == {"voicemail_messages": 1}
        async with ctx.sessions() as session:
            left = list(await session.scalars(select(VoicemailMessageRow.file)))
            gone = await session.scalar(
                select(EventRow.data).where(EventRow.type == "voicemail_message_deleted")
            )
        assert left == ["new.wav"]
        assert not (voicemail.voicemail_dir(ctx, box.id) / "old.wav").exists()
        assert gone is not None and gone["id"] == ids[0]


@pytest.mark.parametrize(
    ("retention", "deleted"),
    [
        ({"recordings_days": 30}, {"call_recordings": 1}),
        # Kept for ever, but the call record goes after 30 days: its recording goes first.
        ({"recordings_days": 0, "calls_days": 30}, {"call_recordings": 1, "calls": 1}),
    ],
)
async def test_call_recordings_past_their_retention_are_deleted_before_their_calls(
    tmp_path: Path, retention: dict[str, int], deleted: dict[str, int]
) -> None:
    async with (
        services_of_its_own(tmp_path, retention=retention) as settings,
        open_plumbing(settings, Metrics()) as plumbing,
    ):
        ctx = plumbing.ctx
        async with ctx.sessions.begin() as session:
            for age_days in (31, 29, 29):
                at = utcnow() - timedelta(days=age_days)
                path = f"recordings/day-{age_days}/call-{age_days}.wav"
                (settings.data_dir / path).parent.mkdir(parents=True, exist_ok=True)
                (settings.data_dir / path).write_bytes(b"RIFF")
                session.add(CallRecord(
                    direction="inbound", caller="1", called="2", worker_id=0, started_at=at,
                    ended_at=at, legs=[], recording_path=path, recording_seconds=3.0,
                ))  # fmt: skip
        assert await RetentionJob(ctx).apply() == deleted
        async with ctx.sessions() as session:
            left = list(await session.execute(
                select(CallRecord.recording_path, CallRecord.recording_seconds)
            ))  # fmt: skip
        # The call keeps that it was recorded, and for how long, until it goes itself.
        kept = [tuple(row) for row in left if row[0] is not None]
        assert kept == [("recordings/day-29/call-29.wav", 3.0)] * 2
        assert not (settings.data_dir / "recordings/day-31/call-31.wav").exists()
        assert (settings.data_dir / "recordings/day-29/call-29.wav").exists()


async def test_a_burst_beyond_the_redis_pool_waits_for_connections(
    own_services: Settings,
) -> None:
    async with open_plumbing(own_services, Metrics()) as plumbing:
        redis = plumbing.ctx.redis
        # Each BLPOP holds its connection for a moment: more of them at once than the pool has.
        burst = [
            redis.blpop(["pbx:test:nothing"], timeout=0.2) for _ in range(3 * REDIS_CONNECTIONS)
        ]
        assert await asyncio.gather(*burst) == [None] * len(burst)
