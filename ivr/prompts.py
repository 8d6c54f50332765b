"""Spoken prompts: text turned into 8 kHz mono 16-bit WAV with espeak-ng and sox, made once
and cached by content, so calls never wait for speech synthesis."""

from __future__ import annotations

import asyncio
import hashlib
import re
import tempfile
from pathlib import Path

from core.context import ServiceContext
from core.errors import InvalidInput

MAX_TEXT_LENGTH = 2000
SYSTEM_PROMPTS = {
    "extension_not_found": "Sorry, that extension does not exist. Please try again.",
    "not_available": "Sorry, that person is not available.",
    "goodbye": "Thank you for calling. Goodbye.",
    "feature_ready": "You are ready.",
    "feature_not_ready": "You are not ready.",
    "feature_end_wrap_up": "Wrap up ended. You are ready.",
    "feature_logged_out": "You are logged out.",
    "feature_refused": "Sorry, that is not possible now.",
    "transfer_target": "Transfer. Dial the number, then the hash key.",
    "transfer_refused": "Sorry, that number cannot be reached. Back to your caller.",
    "callback_number": "Please key in the number we should call you back on, then the hash key.",
    "callback_accepted": "Thank you. We will call you back when it is your turn. Goodbye.",
    "callback_declined": "You keep your place in the queue.",
    "menu_invalid": "Sorry, that is not a valid choice.",
    "menu_timeout": "Sorry, I did not hear your choice.",
    "voicemail_greeting": "Nobody can take your call right now. Please leave a message after "
    "the tone, and press the hash key when you are done.",
    "voicemail_saved": "Your message has been saved. Goodbye.",
}


class PromptFailed(InvalidInput):
    code = "prompt_failed"


def prompts_dir(ctx: ServiceContext) -> Path:
    return ctx.settings.data_dir / "prompts"


class UnknownVoice(Exception):
    """prompts.voice names no espeak-ng voice (espeak-ng itself would fall back silently)."""


async def check_voice(voice: str) -> None:
    """Raise UnknownVoice unless espeak-ng knows `voice` (a language, name or file; a
    `+variant` suffix is allowed)."""
    process = await asyncio.create_subprocess_exec(
        "espeak-ng", "--voices", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    listing, _ = await process.communicate()
    known: set[str] = set()
    for line in listing.decode(errors="replace").splitlines()[1:]:
        columns = line.split()
        if len(columns) >= 5:
            language, name, file = columns[1], columns[3], columns[4]
            known.update({language, name, file, file.rsplit("/", 1)[-1]})
            # "(en 2)": another language this voice speaks.
            known.update(re.findall(r"\(([\w-]+) \d+\)", line))
    if voice.split("+", 1)[0].lower() not in {k.lower() for k in known}:
        raise UnknownVoice(f"prompts.voice: espeak-ng has no voice {voice!r} (espeak-ng --voices)")


async def spoken(ctx: ServiceContext, text: str) -> Path:
    """The WAV of `text` in the configured voice (prompts.voice)."""
    return await text_prompt_path(prompts_dir(ctx), text, ctx.settings.prompts.voice)


async def system_prompt(ctx: ServiceContext, key: str) -> Path:
    return await spoken(ctx, SYSTEM_PROMPTS[key])


def cached_speech_path(folder: Path, text: str, voice: str) -> Path:
    """Where the WAV of `text` in `voice` is kept (cached by content)."""
    digest = hashlib.sha256(f"{voice}\0{text}".encode()).hexdigest()[:32]
    return folder / f"tts-{digest}.wav"


async def text_prompt_path(folder: Path, text: str, voice: str) -> Path:
    """The WAV for `text`, generated on first use (espeak-ng, then sox to 8 kHz mono)."""
    if not text.strip() or len(text) > MAX_TEXT_LENGTH:
        raise InvalidInput(f"a prompt text has 1 to {MAX_TEXT_LENGTH} characters", field="text")
    path = cached_speech_path(folder, text, voice)
    if await asyncio.to_thread(path.exists):
        return path
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        speech = Path(scratch) / "spoken.wav"
        converted = Path(scratch) / "converted.wav"
        await _run("espeak-ng", "-v", voice, "-w", str(speech), "--", text)
        await _run("sox", str(speech), "-r", "8000", "-c", "1", "-b", "16", str(converted))
        # Atomic: a concurrent call never plays half a file.
        await asyncio.to_thread(converted.replace, path)
    return path


async def _run(*argv: str) -> None:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, errors = await process.communicate()
    if process.returncode != 0:
        raise PromptFailed(f"{argv[0]} failed: {errors.decode(errors='replace').strip()}")
