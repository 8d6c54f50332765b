"""A reference to what callers hear: a text (spoken with espeak-ng, cached) or a prompt of the
library. Menus, voicemail greetings and off-hours announcements use the same shape as a
number's greeting: {"text"} or {"prompt_id"}."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.context import ServiceContext
from core.errors import InvalidInput, NotFound
from ivr.prompt_library import get_prompt, prompt_file
from ivr.prompts import spoken


class UnknownPrompt(InvalidInput):
    code = "unknown_prompt"


@dataclass(frozen=True)
class PromptRef:
    text: str | None = None
    prompt_id: int | None = None

    @classmethod
    def of(cls, text: str | None, prompt_id: int | None) -> PromptRef | None:
        """From a row's two columns; None when both are empty."""
        if text is None and prompt_id is None:
            return None
        return cls(text=text, prompt_id=prompt_id)

    def as_dict(self) -> dict[str, str | int | None]:
        return {"text": self.text, "prompt_id": self.prompt_id}


async def prepare_prompt(ctx: ServiceContext, ref: PromptRef | None, field: str) -> None:
    """Speak a text now, not while a caller waits; check a library prompt exists (422)."""
    if ref is None:
        return
    if ref.prompt_id is not None:
        try:
            await get_prompt(ctx, ref.prompt_id)
        except NotFound:
            raise UnknownPrompt(
                f"prompt {ref.prompt_id} does not exist", field=f"{field}.prompt_id"
            ) from None
    elif ref.text is not None:
        await spoken(ctx, ref.text)
    else:
        raise InvalidInput("a prompt needs a text or a prompt_id", field=field)


async def prompt_path(ctx: ServiceContext, ref: PromptRef) -> Path:
    """The WAV a worker plays for `ref` (NotFound if its library prompt went away)."""
    if ref.prompt_id is not None:
        return prompt_file(ctx, await get_prompt(ctx, ref.prompt_id))
    assert ref.text is not None
    return await spoken(ctx, ref.text)
