"""Spoken prompts: text turned into 8 kHz mono 16-bit WAV with espeak-ng and sox, made once
and cached by content, so calls never wait for speech synthesis."""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
from pathlib import Path

from core.context import ServiceContext
from core.errors import InvalidInput

VOICE = "en"
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


async def text_prompt_path(folder: Path, text: str) -> Path:
    """The WAV for `text`, generated on first use (espeak-ng, then sox to 8 kHz mono)."""
    if not text.strip() or len(text) > MAX_TEXT_LENGTH:
        raise InvalidInput(f"a prompt text has 1 to {MAX_TEXT_LENGTH} characters", field="text")
    digest = hashlib.sha256(f"{VOICE}\0{text}".encode()).hexdigest()[:32]
    path = folder / f"tts-{digest}.wav"
    if await asyncio.to_thread(path.exists):
        return path
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        spoken = Path(scratch) / "spoken.wav"
        converted = Path(scratch) / "converted.wav"
        await _run("espeak-ng", "-v", VOICE, "-w", str(spoken), "--", text)
        await _run("sox", str(spoken), "-r", "8000", "-c", "1", "-b", "16", str(converted))
        # Atomic: a concurrent call never plays half a file.
        await asyncio.to_thread(converted.replace, path)
    return path


async def system_prompt(folder: Path, key: str) -> Path:
    return await text_prompt_path(folder, SYSTEM_PROMPTS[key])


async def _run(*argv: str) -> None:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, errors = await process.communicate()
    if process.returncode != 0:
        raise PromptFailed(f"{argv[0]} failed: {errors.decode(errors='replace').strip()}")
