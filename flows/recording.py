"""Call recording: which connected calls are recorded, and recording them.

An external call (from the provider to a company number, or from a phone to an external
number) is recorded from the moment it is connected to a person when the number called, the
queue it came through or the user who talks on it asks for it. Internal calls never are. The
recording holds both voices (the worker mixes the caller's leg and its bridged peer) and is a
WAV under `<data>/recordings/<day>/call-<id>.wav`, named on the call record when it is
complete; retention (`retention.recordings_days`) deletes old ones. With
`recording.announcement` set, the external party hears it before being connected.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from core.context import ServiceContext
from core.errors import DomainError
from core.read_cache import ReadCache
from extensions.users import recording_users
from ivr.cdr import CallLog, Direction
from ivr.prompts import spoken
from pbx.legs import Leg, LegGone, WorkerCommandFailed

log = structlog.get_logger(__name__)

RECORDINGS_DIR = "recordings"
# A recording stops after this long even if the call goes on (a forgotten line).
MAX_RECORDING_S = 4 * 3600.0


def should_record(direction: Direction, *, by_number: bool, by_queue: bool, by_user: bool) -> bool:
    """Internal calls never; an external one when any of its number, queue or user asks."""
    if direction is Direction.INTERNAL:
        return False
    return by_number or by_queue or by_user


def recording_path(data_dir: Path, call_id: int, now: datetime) -> Path:
    return data_dir / RECORDINGS_DIR / now.strftime("%Y-%m-%d") / f"call-{call_id}.wav"


class CallRecorder:
    """Starts the recording of a connected call when its rules say so; one per controller."""

    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx
        # Users who asked for their calls to be recorded, from memory between user changes.
        self._users: ReadCache[None, frozenset[int]] = ReadCache(
            lambda _all: recording_users(ctx), emptied_by=("user_",), wakeups=ctx.wakeups
        )
        self._tasks: set[asyncio.Task[None]] = set()

    async def will_record(
        self, leg: Leg, call: CallLog, *, user_id: int | None, by_queue: bool = False
    ) -> bool:
        """Whether the call, about to connect `leg` to the person `user_id` (None: nobody
        known, such as an external number), is to be recorded and is not yet: a recording
        under way goes on through a transfer (one file per call)."""
        if leg.recording_open:
            return False
        by_user = user_id is not None and user_id in await self._users.get(None)
        return should_record(
            call.direction, by_number=call.number_records, by_queue=by_queue, by_user=by_user
        )

    async def announce(self, external: Leg) -> None:
        """The recording announcement, played to the external party to its end (before the
        bridge: a bridged leg hears its peer, not prompts)."""
        text = self._ctx.settings.recording.announcement
        if not text:
            return
        try:
            prompt = await spoken(self._ctx, text)
        except DomainError as exc:  # espeak-ng or sox failed: the call is not held up
            log.error("recording_announcement_failed", error=str(exc))
            return
        playback = await external.play(prompt, barge_in=False)
        watched: list[asyncio.Future[Any]] = [playback.finished, external.ended]
        await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        if external.ended.done():
            raise LegGone(external.id)

    async def start(self, leg: Leg, call: CallLog) -> None:
        """Record both voices of `leg` (the external party's) and its bridged peer."""
        path = recording_path(self._ctx.settings.data_dir, call.id, datetime.now(UTC))
        await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
        try:
            recording = await leg.record(path, MAX_RECORDING_S, both_sides=True)
        except (LegGone, WorkerCommandFailed) as exc:
            log.warning("call_recording_not_started", call_id=call.id, error=str(exc))
            self._ctx.metrics.call_recordings.labels(result="failed").inc()
            return
        log.info("call_recording_started", call_id=call.id, path=str(path))
        task = asyncio.create_task(self._finish(call, path, recording.finished))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finish(self, call: CallLog, path: Path, finished: asyncio.Future[float]) -> None:
        seconds = await finished
        if not await asyncio.to_thread(path.exists):  # the worker died with the recording
            self._ctx.metrics.call_recordings.labels(result="failed").inc()
            log.warning("call_recording_lost", call_id=call.id)
            return
        call.recorded(str(path.relative_to(self._ctx.settings.data_dir)), seconds)
        self._ctx.metrics.call_recordings.labels(result="completed").inc()
        self._ctx.metrics.call_recording_seconds.inc(seconds)

    async def settled(self) -> None:
        """Until every recording under way has been named on its call (tests, stop)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
