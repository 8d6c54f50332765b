"""IVR menus as pure logic: the option shapes, a caller's walk through menus, reachability.

A walk is a small state machine over key presses and timeouts with no timers or I/O inside:
each step returns the next state and what the shell must do (play a menu, or leave the menus
for a destination). The shell (flows.menu) owns the timers and the media.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import Enum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from destinations.destination import (
    Destination,
    ExtensionDestination,
    HangupDestination,
    MenuDestination,
    NumberDestination,
    QueueDestination,
    VoicemailDestination,
)

# Keys a menu option may have: one DTMF key.
OPTION_KEY_PATTERN = r"^[0-9*#]$"
# A walk remembers this many menus for "back"; older ones are forgotten (cycles are allowed).
MAX_TRAIL = 20


class RepeatOption(BaseModel):
    """Play the current menu again."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["repeat"] = "repeat"


class BackOption(BaseModel):
    """Return to the menu the caller came from (the top menu repeats itself)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["back"] = "back"


# What a key of a menu does: any destination, or one of the two menu-only moves.
MenuOption = Annotated[
    ExtensionDestination
    | QueueDestination
    | MenuDestination
    | VoicemailDestination
    | NumberDestination
    | HangupDestination
    | RepeatOption
    | BackOption,
    Field(discriminator="type"),
]


@dataclass(frozen=True)
class MenuPlan:
    """What a walk needs to know of one menu."""

    id: int
    options: Mapping[str, MenuOption]
    retries: int  # invalid keys or timeouts allowed before the final destination
    final_destination: Destination


class Notice(Enum):
    """Said before the next step: why the caller hears the menu again (or leaves)."""

    INVALID = "invalid"
    TIMEOUT = "timeout"


@dataclass(frozen=True)
class Walk:
    menu_id: int
    # Menus the caller came through, most recent last (for "back").
    trail: tuple[int, ...] = ()
    failures: int = 0


@dataclass(frozen=True)
class PlayMenu:
    menu_id: int
    notice: Notice | None = None


@dataclass(frozen=True)
class Leave:
    destination: Destination
    notice: Notice | None = None


Step = PlayMenu | Leave


def start_walk(menu_id: int) -> tuple[Walk, Step]:
    return Walk(menu_id=menu_id), PlayMenu(menu_id)


def press(walk: Walk, menus: Mapping[int, MenuPlan], key: str) -> tuple[Walk, Step]:
    """The caller pressed `key` in the current menu."""
    menu = menus.get(walk.menu_id)
    if menu is None:
        # The menu was deleted while the caller was in it: nowhere sensible to go but away.
        return walk, Leave(HangupDestination())
    option = menu.options.get(key)
    if option is None:
        return _failed(walk, menu, Notice.INVALID)
    if isinstance(option, RepeatOption) or (
        isinstance(option, MenuDestination) and option.id == walk.menu_id
    ):
        return replace(walk, failures=0), PlayMenu(walk.menu_id)
    if isinstance(option, BackOption):
        if not walk.trail:
            return replace(walk, failures=0), PlayMenu(walk.menu_id)
        previous = walk.trail[-1]
        return Walk(menu_id=previous, trail=walk.trail[:-1]), PlayMenu(previous)
    if isinstance(option, MenuDestination):
        if option.id not in menus:
            return _failed(walk, menu, Notice.INVALID)
        trail = (*walk.trail, walk.menu_id)[-MAX_TRAIL:]
        return Walk(menu_id=option.id, trail=trail), PlayMenu(option.id)
    return walk, Leave(option)


def time_out(walk: Walk, menus: Mapping[int, MenuPlan]) -> tuple[Walk, Step]:
    """Nothing was pressed within the menu's timeout after its prompt."""
    menu = menus.get(walk.menu_id)
    if menu is None:
        return walk, Leave(HangupDestination())
    return _failed(walk, menu, Notice.TIMEOUT)


def _failed(walk: Walk, menu: MenuPlan, notice: Notice) -> tuple[Walk, Step]:
    failures = walk.failures + 1
    if failures > menu.retries:
        # A menu as the final destination: the shell continues the walk there (enter_menu).
        return replace(walk, failures=0), Leave(menu.final_destination, notice)
    return replace(walk, failures=failures), PlayMenu(walk.menu_id, notice)


def enter_menu(walk: Walk, menu_id: int) -> tuple[Walk, Step]:
    """Go to `menu_id` as a final destination: the current menu becomes the way back."""
    if menu_id == walk.menu_id:
        return replace(walk, failures=0), PlayMenu(menu_id)
    trail = (*walk.trail, walk.menu_id)[-MAX_TRAIL:]
    return Walk(menu_id=menu_id, trail=trail), PlayMenu(menu_id)


# -- reachability ---------------------------------------------------------------------------


def _menu_targets(menu: MenuPlan) -> tuple[set[int], bool]:
    """(menus this one leads to, whether it leads straight to a real destination)."""
    targets: set[int] = set()
    terminal = False
    for choice in (*menu.options.values(), menu.final_destination):
        if isinstance(choice, MenuDestination):
            targets.add(choice.id)
        elif not isinstance(choice, RepeatOption | BackOption):
            terminal = True
    return targets, terminal


def menus_reaching_nothing(menus: Mapping[int, MenuPlan]) -> set[int]:
    """Menus from which no sequence of choices leads out of the menus to a destination
    (extension, queue, voicemail, number, hang-up). Repeat and back lead nowhere new."""
    edges: dict[int, set[int]] = {}
    good: set[int] = set()
    for menu_id, menu in menus.items():
        targets, terminal = _menu_targets(menu)
        edges[menu_id] = targets
        if terminal:
            good.add(menu_id)
    changed = True
    while changed:
        changed = False
        for menu_id, targets in edges.items():
            if menu_id not in good and targets & good:
                good.add(menu_id)
                changed = True
    return set(menus) - good


def menus_referenced(menu: MenuPlan) -> set[int]:
    """Ids of the other menus `menu` points at (options and final destination)."""
    return _menu_targets(menu)[0] - {menu.id}
