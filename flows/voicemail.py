"""The asyncio shell of leaving a voicemail: the box's greeting, a beep, a recording that ends
on '#', silence, the box's maximum length or the caller hanging up; then the message is kept
(if long enough) and announced as an event."""

from __future__ import annotations

import asyncio
import contextlib
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from core.context import ServiceContext
from ivr.prompts import system_prompt
from ivr.voicemail import box_for_call, new_message_path, save_message
from pbx.legs import Leg, LegGone

log = structlog.get_logger(__name__)

END_KEY = "#"
# The worker reports a recording complete within about half a second of its end.
RECORDING_CLOSE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class VoicemailResult:
    box_found: bool
    message_id: int | None  # None: nothing kept (too short, box gone)
    hangup_by: str  # caller | system


async def leave_voicemail(
    ctx: ServiceContext, leg: Leg, box_id: int, beep: Path, *, caller: str,
    call_id: int | None,
) -> VoicemailResult:  # fmt: skip
    """Take a message for `box_id` from an answered caller; the leg is hung up at the end."""
    box = await box_for_call(ctx, box_id)
    if box is None:
        return VoicemailResult(box_found=False, message_id=None, hangup_by="system")
    greeting = await leg.play(box.greeting, barge_in=True)  # a key skips to the beep
    await _first(greeting.finished, leg.ended)
    while await leg.next_digit(0) is not None:
        pass  # keys pressed during the greeting only skipped it
    await _play_through(leg, beep)
    path = await asyncio.to_thread(new_message_path, box)
    settings = ctx.settings.voicemail
    recording = await leg.record(path, box.max_seconds, silence_s=settings.silence_seconds or None)
    while not recording.finished.done() and not leg.ended.done():
        key = await leg.next_digit(None, until=recording.finished)
        if key == END_KEY:
            with contextlib.suppress(LegGone):
                await leg.stop_recording()
    hangup_by = leg.ended.result().ended_by("caller") if leg.ended.done() else "system"
    try:
        async with asyncio.timeout(RECORDING_CLOSE_TIMEOUT_S):
            await recording.finished
    except TimeoutError:
        log.error("voicemail_recording_not_closed", box_id=box_id, path=str(path))
    seconds = await asyncio.to_thread(_wav_seconds, path)
    message_id = None
    if seconds >= max(settings.min_seconds, 0.1):
        message = await save_message(
            ctx, box.id, caller=caller, call_id=call_id, path=path, seconds=seconds
        )
        message_id = message.id if message is not None else None
    else:
        log.info("voicemail_discarded", box_id=box_id, seconds=round(seconds, 2))
        ctx.metrics.voicemail_messages.labels(outcome="discarded").inc()
        await asyncio.to_thread(path.unlink, missing_ok=True)
    if not leg.ended.done():
        with contextlib.suppress(LegGone):
            key = "voicemail_saved" if message_id is not None else "goodbye"
            await _play_through(leg, await system_prompt(ctx, key))
            await leg.hangup()
    return VoicemailResult(box_found=True, message_id=message_id, hangup_by=hangup_by)


def _wav_seconds(path: Path) -> float:
    """The recorded length (0 when the file is missing or unreadable)."""
    try:
        with wave.open(str(path)) as wav:
            frames: int = wav.getnframes()
            rate: int = wav.getframerate()
            return frames / float(rate)
    except (OSError, EOFError, wave.Error):
        return 0.0


async def _first(*futures: asyncio.Future[Any]) -> None:
    await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)


async def _play_through(leg: Leg, prompt: Path) -> None:
    playback = await leg.play(prompt, barge_in=False)
    await _first(playback.finished, leg.ended)
    if not playback.finished.done():
        raise LegGone(leg.id)
