"""The prompt library: named prompts, spoken from text or uploaded as audio, kept as 8 kHz
mono 16-bit WAV files (what the media workers play) under <data>/prompts."""

from __future__ import annotations

import asyncio
import secrets
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import Integer, String, column, or_, select, table
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from core.context import ServiceContext
from core.db import Base, UtcDateTime, utcnow
from core.errors import Conflict, InvalidInput, NotFound
from ivr.prompts import prompts_dir, spoken

log = structlog.get_logger(__name__)

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_SECONDS = 600.0


class PromptRow(Base):
    __tablename__ = "prompts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(8))  # text | audio
    text: Mapped[str | None] = mapped_column(String(2000), default=None)
    # The WAV's file name inside the prompts folder.
    file: Mapped[str] = mapped_column(String(100))
    seconds: Mapped[float] = mapped_column(default=0.0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class InvalidAudio(InvalidInput):
    code = "invalid_audio"


class PromptInUse(Conflict):
    code = "prompt_in_use"


async def create_text_prompt(ctx: ServiceContext, name: str, text: str) -> PromptRow:
    path = await spoken(ctx, text)
    return await _store(ctx, name=name, kind="text", text=text, path=path)


async def upload_prompt(ctx: ServiceContext, name: str, data: bytes) -> PromptRow:
    """Validate any audio sox reads and convert it; non-audio, silence-only files of no
    length, over-long or over-large uploads are refused with 422 invalid_audio."""
    if not data:
        raise InvalidAudio("the upload is empty", field="body")
    if len(data) > MAX_UPLOAD_BYTES:
        raise InvalidAudio(f"the upload exceeds {MAX_UPLOAD_BYTES} bytes", field="body")
    folder = prompts_dir(ctx)
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    target = folder / f"upload-{secrets.token_hex(8)}.wav"
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        original = Path(scratch) / "original"
        await asyncio.to_thread(original.write_bytes, data)
        # The header's length refuses obvious cases before any conversion work...
        _check_length(await _duration(original))
        converted = Path(scratch) / "converted.wav"
        await _sox(str(original), "-r", "8000", "-c", "1", "-b", "16", "-e", "signed-integer",
                   str(converted))  # fmt: skip
        # ...and the converted file's is the truth (a header may lie).
        seconds = await _duration(converted)
        _check_length(seconds)
        await asyncio.to_thread(converted.replace, target)
    return await _store(ctx, name=name, kind="audio", text=None, path=target, seconds=seconds)


async def list_prompts(ctx: ServiceContext) -> list[PromptRow]:
    async with ctx.sessions() as session:
        return list(await session.scalars(select(PromptRow).order_by(PromptRow.id)))


async def get_prompt(ctx: ServiceContext, prompt_id: int) -> PromptRow:
    async with ctx.sessions() as session:
        row = await session.get(PromptRow, prompt_id)
    if row is None:
        raise NotFound(f"prompt {prompt_id} does not exist", details={"prompt_id": prompt_id})
    return row


def prompt_file(ctx: ServiceContext, row: PromptRow) -> Path:
    return prompts_dir(ctx) / row.file


# The tables that use prompts, as far as this module needs them (they import this module).
_numbers = table(
    "numbers", column("id", Integer), column("number", String),
    column("greeting_prompt_id", Integer),
)  # fmt: skip
_hours = table("number_hours", column("number_id", Integer), column("off_hours_prompt_id", Integer))
_menus = table(
    "menus", column("id", Integer), column("prompt_id", Integer),
    column("invalid_prompt_id", Integer), column("timeout_prompt_id", Integer),
)  # fmt: skip
_boxes = table("voicemail_boxes", column("id", Integer), column("greeting_prompt_id", Integer))
_queues = table("queues", column("name", String), column("hold_music_prompt_id", Integer))


async def delete_prompt(ctx: ServiceContext, prompt_id: int) -> None:
    async with ctx.sessions.begin() as session:
        row = await session.get(PromptRow, prompt_id)
        if row is None:
            raise NotFound(f"prompt {prompt_id} does not exist")
        users = await _prompt_users(session, prompt_id)
        if any(users.values()):
            raise PromptInUse(
                f"prompt {prompt_id} is used by " + _describe_users(users), details=users
            )
        data = _event_data(row)
        uploaded = prompt_file(ctx, row) if row.kind == "audio" else None
        await session.delete(row)
        event = await ctx.events.stage(session, "prompt_deleted", data)
    # Spoken prompts share the text cache (a number may speak the same text); uploads are
    # the row's own file.
    if uploaded is not None:
        await asyncio.to_thread(uploaded.unlink, missing_ok=True)
    await ctx.events.publish(event)


async def _store(
    ctx: ServiceContext, *, name: str, kind: str, text: str | None, path: Path,
    seconds: float | None = None,
) -> PromptRow:  # fmt: skip
    if seconds is None:
        seconds = await _duration(path)
    async with ctx.sessions.begin() as session:
        row = PromptRow(name=name, kind=kind, text=text, file=path.name, seconds=seconds,
                        created_at=utcnow())  # fmt: skip
        session.add(row)
        await session.flush()
        event = await ctx.events.stage(session, "prompt_created", _event_data(row))
    await ctx.events.publish(event)
    log.info("prompt_created", prompt_id=row.id, kind=kind, seconds=round(seconds, 2))
    return row


async def _prompt_users(session: AsyncSession, prompt_id: int) -> dict[str, list[Any]]:
    """Who plays this prompt: numbers (greeting or off-hours announcement), menus, boxes."""
    greeting = select(_numbers.c.number).where(_numbers.c.greeting_prompt_id == prompt_id)
    off_hours = (
        select(_numbers.c.number)
        .join(_hours, _hours.c.number_id == _numbers.c.id)
        .where(_hours.c.off_hours_prompt_id == prompt_id)
    )
    menus = select(_menus.c.id).where(
        or_(
            _menus.c.prompt_id == prompt_id,
            _menus.c.invalid_prompt_id == prompt_id,
            _menus.c.timeout_prompt_id == prompt_id,
        )
    )
    boxes = select(_boxes.c.id).where(_boxes.c.greeting_prompt_id == prompt_id)
    queues = select(_queues.c.name).where(_queues.c.hold_music_prompt_id == prompt_id)
    return {
        "numbers": list(await session.scalars(greeting)),
        "business_hours": list(await session.scalars(off_hours)),
        "menus": list(await session.scalars(menus)),
        "voicemail_boxes": list(await session.scalars(boxes)),
        "queues": list(await session.scalars(queues)),
    }


def _describe_users(users: dict[str, list[Any]]) -> str:
    labels = {
        "numbers": "the greeting of",
        "business_hours": "the off-hours announcement of",
        "menus": "menus",
        "voicemail_boxes": "voicemail boxes",
        "queues": "the hold music of queues",
    }
    return "; ".join(
        f"{labels[kind]} {', '.join(str(u) for u in found)}"
        for kind, found in users.items()
        if found
    )


def _check_length(seconds: float) -> None:
    if seconds <= 0:
        raise InvalidAudio("the audio has no length", field="body")
    if seconds > MAX_SECONDS:
        raise InvalidAudio(f"the audio is longer than {MAX_SECONDS:.0f} s", field="body")


def _event_data(row: PromptRow) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "kind": row.kind, "seconds": row.seconds}


async def _duration(path: Path) -> float:
    output = await _sox_output("soxi", "-D", str(path))
    try:
        return float(output.strip())
    except ValueError:
        raise InvalidAudio("the upload is not audio sox can read", field="body") from None


async def _sox(*args: str) -> None:
    await _sox_output("sox", *args)


async def _sox_output(program: str, *args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        program, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    output, errors = await process.communicate()
    if process.returncode != 0:
        detail = errors.decode(errors="replace").strip().splitlines()
        reason = detail[-1] if detail else "unreadable"
        raise InvalidAudio(f"the upload is not audio sox can read ({reason})", field="body")
    return output.decode(errors="replace")
