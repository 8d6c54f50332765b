"""The asyncio shell of a caller's walk through IVR menus (the pure walk is ivr.menu).

It plays menus and notices, waits for keys with the menu's timeout, and hands the caller to
`route` once the walk leaves the menus; `route` is the call flows' destination dispatch, so a
menu option reaches everything a number's destination can.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import structlog

from core.context import ServiceContext
from destinations.destination import Destination, HangupDestination, MenuDestination
from ivr.menu import (
    BackOption,
    Leave,
    MenuPlan,
    Notice,
    PlayMenu,
    RepeatOption,
    Step,
    Walk,
    enter_menu,
    press,
    start_walk,
    time_out,
)
from ivr.menus import MenuMedia, menu_media, menu_plans
from pbx.legs import Leg, LegGone

log = structlog.get_logger(__name__)
T = TypeVar("T")


async def walk_menus(
    ctx: ServiceContext,
    leg: Leg,
    menu_id: int,
    route: Callable[[Destination], Awaitable[T]],
    *,
    first_key: str | None = None,
    call_id: int | None = None,
) -> T:
    """Walk from `menu_id` until a destination is chosen, then return `route(destination)`.

    `first_key`: a key the caller already pressed for this menu (during the greeting); the
    menu's prompt is then not played first. LegGone when the caller hangs up.
    """
    plans = await menu_plans(ctx)
    walk, step = start_walk(menu_id)
    if first_key is not None:
        walk, step = _pressed(ctx, walk, plans, first_key)
    while True:
        log.debug("menu_step", call_id=call_id, menu_id=walk.menu_id, step=repr(step))
        if isinstance(step, Leave):
            if step.notice is not None:
                media = await menu_media(ctx, walk.menu_id)
                if media is not None:
                    await _play_through(leg, _notice_prompt(media, step.notice))
                ctx.metrics.menu_choices.labels(result="final").inc()
            if isinstance(step.destination, MenuDestination):
                walk, step = enter_menu(walk, step.destination.id)
                continue
            log.info("menu_left", call_id=call_id, menu_id=walk.menu_id,
                     destination=step.destination.model_dump())  # fmt: skip
            return await route(step.destination)
        media = await menu_media(ctx, step.menu_id)
        if media is None:  # deleted while the caller walked
            return await route(HangupDestination())
        key = await _offer(leg, media, step)
        if key is None:
            ctx.metrics.menu_choices.labels(result="timeout").inc()
            walk, step = time_out(walk, plans)
        else:
            walk, step = _pressed(ctx, walk, plans, key)


def _pressed(
    ctx: ServiceContext, walk: Walk, plans: dict[int, MenuPlan], key: str
) -> tuple[Walk, Step]:
    menu = plans.get(walk.menu_id)
    option = menu.options.get(key) if menu is not None else None
    if option is None:
        result = "invalid"
    elif isinstance(option, RepeatOption):
        result = "repeat"
    elif isinstance(option, BackOption):
        result = "back"
    else:
        result = "option"
    ctx.metrics.menu_choices.labels(result=result).inc()
    return press(walk, plans, key)


async def _offer(leg: Leg, media: MenuMedia, step: PlayMenu) -> str | None:
    """Play the notice (if any) and the menu, either cut short by a key; then wait up to the
    menu's timeout for one. The key, or None when none came."""
    prompts = [media.prompt]
    if step.notice is not None:
        prompts.insert(0, _notice_prompt(media, step.notice))
    for prompt in prompts:
        playback = await leg.play(prompt, barge_in=True)
        key = await leg.next_digit(None, until=playback.finished)
        if key is None and leg.ended.done():
            raise LegGone(leg.id)
        if key is not None:
            with contextlib.suppress(LegGone):
                await leg.stop_playback()
            return key
    key = await leg.next_digit(media.timeout_s)
    if key is None and leg.ended.done():
        raise LegGone(leg.id)
    return key


def _notice_prompt(media: MenuMedia, notice: Notice) -> Path:
    return media.invalid if notice is Notice.INVALID else media.timeout


async def _play_through(leg: Leg, prompt: Path) -> None:
    playback = await leg.play(prompt, barge_in=False)
    watched: set[asyncio.Future[Any]] = {playback.finished, leg.ended}
    await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
    if not playback.finished.done():
        raise LegGone(leg.id)


async def discard_pending_keys(leg: Leg) -> None:
    """Forget keys pressed before the menus (left over from the greeting's digits)."""
    while await leg.next_digit(0) is not None:
        pass
