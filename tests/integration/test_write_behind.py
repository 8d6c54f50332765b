"""Call records and queue-log rows written behind the call, against the real SQLite: they
appear with their events after the call, and a process that dies before committing them
loses none (the next start replays its journal and closes its open calls as failed), except
the calls of callers a media host keeps waiting for the controller that takes over."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from acd.models import QueueLogRow
from acd.queue_places import PLACES_KEY, QueuePlace, QueuePlaces, kept_calls
from core.context import ServiceContext
from core.events import EventRow
from core.redis_server import ManagedRedis
from core.settings import Settings
from core.write_behind import Change, Journal
from flows.call_recovery import close_interrupted_calls
from ivr.cdr import CallLog, CallRecord, Direction
from migrations import upgrade_database
from tests.conftest import ADMIN_TOKEN, MakePhone
from tests.support.api_client import ApiClient
from tests.support.crashing_writer import QUEUE_ID, service_context
from tests.support.postgres import new_test_database_url

EVENT_WAIT_S = 10.0


async def events_until(ws: aiohttp.ClientWebSocketResponse, done: Any) -> list[dict[str, Any]]:
    """Envelopes from the stream until `done(envelope)` holds (bounded)."""
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(EVENT_WAIT_S):
        while True:
            message = await ws.receive()
            assert message.type == aiohttp.WSMsgType.TEXT, message
            seen.append(json.loads(message.data))
            if done(seen[-1]):
                return seen


async def test_record_and_events_follow_the_call(
    admin: ApiClient, settings: Settings, phone: MakePhone, http: aiohttp.ClientSession,
    api_base: str,
) -> None:  # fmt: skip
    caller, caller_ext = await phone("Written Behind")
    callee, callee_ext = await phone("Answers Behind")
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with http.ws_connect(api_base + "/events", headers=headers) as ws:
        call = await caller.call(f"sip:{callee_ext}@{settings.sip.host}:{settings.sip.port}")
        incoming = await callee.next_incoming(timeout=10)
        await asyncio.wait_for(call.progress.answered, 10)
        await incoming.hangup()
        assert await asyncio.wait_for(call.progress.ended, 5) == 200
        seen = await events_until(
            ws, lambda e: e["type"] == "call_ended" and e["data"]["called"] == callee_ext
        )
    ours = [e for e in seen if e["type"].startswith("call_") and e["data"]["called"] == callee_ext]
    assert [e["type"] for e in ours] == ["call_started", "call_answered", "call_ended"]
    call_id = ours[-1]["data"]["call_id"]
    assert {e["data"]["call_id"] for e in ours} == {call_id}
    # The event follows the commit: the record is there once it arrives.
    record = (await admin.get(f"/calls/{call_id}")).body
    assert (record["caller"], record["connected_to"]) == (caller_ext, callee_ext)
    assert (record["disposition"], record["hangup_by"]) == ("answered", "callee")
    assert [leg["role"] for leg in record["legs"]] == ["caller", "callee"]
    async with http.get(api_base.removesuffix("/api/v1") + "/metrics") as response:
        text = await response.text()
    assert 'pbx_write_behind_rows_total{kind="call_ended"}' in text
    assert "pbx_write_behind_pending_rows" in text and "pbx_write_behind_flush_seconds" in text


@pytest.fixture
async def fresh_database(tmp_path: Path) -> AsyncIterator[str]:
    url = new_test_database_url() or f"sqlite+aiosqlite:///{tmp_path / 'crash.sqlite3'}"
    await asyncio.to_thread(upgrade_database, url)
    yield url


async def test_a_crash_loses_no_row_and_its_open_calls_end_as_failed(
    settings: Settings, redis_server: ManagedRedis, fresh_database: str, tmp_path: Path,
    repo_root: Path,
) -> None:  # fmt: skip
    folder = tmp_path / "write-behind"
    crashed = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.support.crashing_writer", fresh_database,
        settings.redis_url, str(folder), cwd=repo_root, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(crashed.communicate(), 60)
    assert crashed.returncode == 3, output
    ids = json.loads(output.decode().strip().splitlines()[-1])  # after any log lines
    # A committed batch whose journal was deleted might have been replayed too: it must
    # change nothing (an end written twice, the first wins).
    Journal(folder).append(Change("call_ended", {
        "id": ids["done"], "at": "2030-01-01T00:00:00+00:00", "disposition": "busy",
        "hangup_by": "system",
    }))  # fmt: skip

    ctx = service_context(settings, fresh_database, folder)
    async with ctx.sessions() as session:
        assert await session.get(CallRecord, ids["waiting"]) is None  # never committed
    assert await ctx.writes.start() > 0  # the service's start-up order
    assert await close_interrupted_calls(ctx) == 2
    try:
        async with ctx.sessions() as session:
            done = await session.get(CallRecord, ids["done"])
            waiting = await session.get(CallRecord, ids["waiting"])
            talking = await session.get(CallRecord, ids["talking"])
            queue_rows = list(await session.scalars(select(QueueLogRow).order_by(QueueLogRow.id)))
            ended_events = list(await session.scalars(
                select(EventRow).where(EventRow.type == "call_ended").order_by(EventRow.id)
            ))  # fmt: skip
        assert done is not None and waiting is not None and talking is not None
        assert (done.disposition, done.hangup_by) == ("answered", "caller")
        assert [leg["leg"] for leg in done.legs] == ["leg-1"]
        # Cut by the crash: a caller nobody had answered failed; a talk that began counts.
        assert (waiting.disposition, waiting.hangup_by) == ("failed", "system")
        assert (talking.disposition, talking.hangup_by) == ("answered", "system")
        assert waiting.system_answered_at is not None and waiting.legs[0]["leg"] == "leg-2"
        assert talking.connected_to == "203" and talking.user_id == 6
        by_call: dict[int, list[QueueLogRow]] = {}
        for row in queue_rows:
            by_call.setdefault(row.call_id, []).append(row)
        assert [r.event for r in by_call[waiting.id]] == ["enter", "offer", "failed"]
        assert [r.event for r in by_call[talking.id]] == ["enter", "connect", "complete"]
        assert {r.queue_id for r in queue_rows} == {QUEUE_ID}
        # Each ends at the last thing known of it: the queue row after its record's own times.
        assert waiting.ended_at == by_call[waiting.id][1].at
        assert talking.ended_at == by_call[talking.id][1].at
        failed = by_call[waiting.id][2]
        assert failed.wait_seconds is not None and failed.wait_seconds >= 0
        assert by_call[talking.id][2].detail == {"hangup_by": "system"}
        assert [e.data["call_id"] for e in ended_events] == [done.id, waiting.id, talking.id]
        assert [e.data["disposition"] for e in ended_events[1:]] == ["failed", "answered"]
        assert list(folder.iterdir()) == []
        # New ids follow those the crashed process handed out.
        assert ctx.writes.next_id("calls") == talking.id + 1
        # A second start finds nothing left to do.
        await ctx.writes.stop()
        again = service_context(settings, fresh_database, folder)
        assert await again.writes.start() == 0
        assert await close_interrupted_calls(again) == 0
        await again.writes.stop()
    finally:
        await ctx.writes.stop()


async def test_a_kept_callers_call_stays_open_until_no_worker_taken_over_holds_them(
    settings: Settings, redis_server: ManagedRedis, fresh_database: str, tmp_path: Path
) -> None:
    cluster = settings.cluster.model_copy(update={"media_hosts": ["127.0.0.4:7000"]})
    ctx = service_context(settings.model_copy(update={"cluster": cluster}), fresh_database,
                          tmp_path / "write-behind")  # fmt: skip
    await ctx.redis.delete(PLACES_KEY)
    await ctx.writes.start()
    try:
        kept, unclaimed, gone = calls = [open_call(ctx).id for _ in range(3)]
        places = QueuePlaces(ctx.redis, enabled=True)  # the controller that died
        for leg, call_id in (("w10000-1", kept), ("w10000-2", unclaimed)):
            place = QueuePlace(call_id=call_id, queue_id=QUEUE_ID, priority=0,
                               entered_at=time.time() - 30, number_records=False)  # fmt: skip
            await places.keep(leg, place)
        await ctx.writes.flush()

        assert await close_interrupted_calls(ctx) == 1  # the takeover: only the call not kept
        taker = QueuePlaces(ctx.redis, enabled=True)
        await taker.take_left()
        assert await kept_calls(ctx.redis) == {kept, unclaimed}  # till claimed or given up
        claimed = taker.claim("w10000-1")
        assert claimed is not None and claimed.call_id == kept
        assert taker.claim("w10000-1") is None
        assert [place.call_id for place in taker.unclaimed().values()] == [unclaimed]
        assert taker.given_up("w10000-2") and not taker.given_up("w10000-1")
        assert await close_interrupted_calls(ctx, only={unclaimed}) == 1
        async with ctx.sessions() as session:
            rows = {call_id: await session.get(CallRecord, call_id) for call_id in calls}
        assert rows[gone] is not None and rows[gone].disposition == "failed"
        assert rows[unclaimed] is not None and rows[unclaimed].disposition == "failed"
        assert rows[kept] is not None and rows[kept].disposition is None  # taken over
    finally:
        await ctx.writes.stop()


def open_call(ctx: ServiceContext) -> CallLog:
    return CallLog.open(ctx, direction=Direction.INBOUND, caller="4930111", called="4930999",
                        worker_id=10_000)  # fmt: skip
