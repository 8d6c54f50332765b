"""IVR menus as a resource: stored menus, their extension in the shared namespace, validation
(every destination exists, no menu that can reach nothing), and what a call needs of them."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog
from pydantic import TypeAdapter
from sqlalchemy import JSON, Float, ForeignKey, Integer, String, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from core.context import ServiceContext
from core.db import Base, UtcDateTime, utcnow
from core.errors import Conflict, InvalidInput, NotFound
from core.events import Event
from destinations.checks import check_destination
from destinations.destination import Destination
from destinations.references import is_menu, references_to
from extensions.models import Extension
from extensions.namespace import free_extension, take_extension
from extensions.numbering import OwnerType
from ivr.menu import BackOption, MenuOption, MenuPlan, RepeatOption, menus_reaching_nothing
from ivr.prompt_refs import PromptRef, prepare_prompt, prompt_path
from ivr.prompts import system_prompt

log = structlog.get_logger(__name__)
_destination: TypeAdapter[Destination] = TypeAdapter(Destination)
_option: TypeAdapter[MenuOption] = TypeAdapter(MenuOption)

DEFAULT_TIMEOUT_S = 5.0
DEFAULT_RETRIES = 2


class MenuRow(Base):
    __tablename__ = "menus"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # Each prompt is one of the two: a text spoken with espeak-ng, or a library prompt.
    prompt_text: Mapped[str | None] = mapped_column(String(2000), default=None)
    prompt_id: Mapped[int | None] = mapped_column(
        ForeignKey("prompts.id"), default=None, index=True
    )
    # {"1": {"type": "extension", ...}, "9": {"type": "repeat"}, ...}
    options: Mapped[dict[str, Any]] = mapped_column(JSON)
    timeout_s: Mapped[float] = mapped_column(Float, default=DEFAULT_TIMEOUT_S)
    retries: Mapped[int] = mapped_column(Integer, default=DEFAULT_RETRIES)
    invalid_prompt_text: Mapped[str | None] = mapped_column(String(2000), default=None)
    invalid_prompt_id: Mapped[int | None] = mapped_column(
        ForeignKey("prompts.id"), default=None, index=True
    )
    timeout_prompt_text: Mapped[str | None] = mapped_column(String(2000), default=None)
    timeout_prompt_id: Mapped[int | None] = mapped_column(
        ForeignKey("prompts.id"), default=None, index=True
    )
    final_destination: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


@dataclass(frozen=True)
class MenuSpec:
    name: str
    extension: str | None
    prompt: PromptRef
    options: dict[str, MenuOption]
    timeout_s: float
    retries: int
    invalid_prompt: PromptRef | None
    timeout_prompt: PromptRef | None
    final_destination: Destination


@dataclass(frozen=True)
class Menu:
    """A stored menu with its extension, as the API shows it."""

    id: int
    spec: MenuSpec
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class MenuMedia:
    """What the call flow plays for one menu: WAV paths, ready on disk."""

    prompt: Path
    invalid: Path
    timeout: Path
    timeout_s: float


class MenuReachesNothing(InvalidInput):
    code = "menu_reaches_nothing"


class MenuInUse(Conflict):
    code = "menu_in_use"


async def create_menu(ctx: ServiceContext, spec: MenuSpec) -> Menu:
    await _prepare_prompts(ctx, spec)
    events: list[Event] = []
    async with ctx.sessions.begin() as session:
        row = MenuRow(**_columns(spec), created_at=utcnow(), updated_at=utcnow())
        session.add(row)
        await session.flush()
        await _validate(session, row.id, spec)
        if spec.extension is not None:
            await _take_extension(session, spec.extension, row.id)
        events.append(await ctx.events.stage(session, "menu_created", menu_data(row.id, spec)))
        if spec.extension is not None:
            events.append(await _stage_extension(ctx, session, "extension_assigned",
                                                 spec.extension, row.id))  # fmt: skip
    await ctx.events.publish(*events)
    log.info("menu_created", menu_id=row.id, extension=spec.extension)
    return Menu(id=row.id, spec=spec, created_at=row.created_at, updated_at=row.updated_at)


async def update_menu(ctx: ServiceContext, menu_id: int, changes: dict[str, Any]) -> Menu:
    """`changes` holds only the fields sent (MenuSpec names), already valid in shape."""
    current = await get_menu(ctx, menu_id)
    merged = replace(current.spec, **changes)
    await _prepare_prompts(ctx, merged)
    events: list[Event] = []
    async with ctx.sessions.begin() as session:
        row = await _load(session, menu_id)
        old_extension = await _menu_extension(session, menu_id)
        for column, value in _columns(merged).items():
            setattr(row, column, value)
        row.updated_at = utcnow()
        await session.flush()
        await _validate(session, menu_id, merged)
        if merged.extension != old_extension:
            if old_extension is not None:
                await free_extension(session, old_extension)
                events.append(await _stage_extension(ctx, session, "extension_released",
                                                     old_extension, menu_id))  # fmt: skip
            if merged.extension is not None:
                await _take_extension(session, merged.extension, menu_id)
                events.append(await _stage_extension(ctx, session, "extension_assigned",
                                                     merged.extension, menu_id))  # fmt: skip
        events.insert(0, await ctx.events.stage(session, "menu_updated",
                                                menu_data(menu_id, merged)))  # fmt: skip
    await ctx.events.publish(*events)
    return Menu(id=menu_id, spec=merged, created_at=row.created_at, updated_at=row.updated_at)


async def delete_menu(ctx: ServiceContext, menu_id: int) -> None:
    events: list[Event] = []
    async with ctx.sessions.begin() as session:
        row = await _load(session, menu_id)
        extension = await _menu_extension(session, menu_id)
        found = await references_to(session, is_menu(menu_id, extension), except_menu=menu_id)
        if found:
            raise MenuInUse(
                f"menu {menu_id} is a destination of {found.describe()}", details=found.details()
            )
        spec = _spec(row, extension)
        if extension is not None:
            await free_extension(session, extension)
            events.append(
                await _stage_extension(ctx, session, "extension_released", extension, menu_id)
            )
        await session.delete(row)
        events.insert(0, await ctx.events.stage(session, "menu_deleted",
                                                menu_data(menu_id, spec)))  # fmt: skip
    await ctx.events.publish(*events)


async def get_menu(ctx: ServiceContext, menu_id: int) -> Menu:
    async with ctx.sessions() as session:
        row = await _load(session, menu_id)
        extension = await _menu_extension(session, menu_id)
    return Menu(id=row.id, spec=_spec(row, extension), created_at=row.created_at,
                updated_at=row.updated_at)  # fmt: skip


async def list_menus(ctx: ServiceContext) -> list[Menu]:
    async with ctx.sessions() as session:
        rows = list(await session.scalars(select(MenuRow).order_by(MenuRow.id)))
        extensions = await _menu_extensions(session)
    return [
        Menu(id=row.id, spec=_spec(row, extensions.get(row.id)), created_at=row.created_at,
             updated_at=row.updated_at)
        for row in rows
    ]  # fmt: skip


# -- for the call flows -------------------------------------------------------------------


async def menu_plans(ctx: ServiceContext) -> dict[int, MenuPlan]:
    """Every menu as the walk needs it (menus are few; one read per walk)."""
    async with ctx.sessions() as session:
        rows = list(await session.scalars(select(MenuRow)))
    return {row.id: _plan(row) for row in rows}


async def menu_options(ctx: ServiceContext, menu_id: int) -> frozenset[str]:
    """The keys of a menu (empty if it is gone): what a greeting digit may pick."""
    async with ctx.sessions() as session:
        row = await session.get(MenuRow, menu_id)
    return frozenset(row.options) if row is not None else frozenset()


async def menu_media(ctx: ServiceContext, menu_id: int) -> MenuMedia | None:
    async with ctx.sessions() as session:
        row = await session.get(MenuRow, menu_id)
    if row is None:
        return None
    spec = _spec(row, None)
    return MenuMedia(
        prompt=await prompt_path(ctx, spec.prompt),
        invalid=await (
            prompt_path(ctx, spec.invalid_prompt)
            if spec.invalid_prompt
            else system_prompt(ctx, "menu_invalid")
        ),
        timeout=await (
            prompt_path(ctx, spec.timeout_prompt)
            if spec.timeout_prompt
            else system_prompt(ctx, "menu_timeout")
        ),
        timeout_s=row.timeout_s,
    )


async def menu_for_extension(ctx: ServiceContext, extension: str) -> int | None:
    """The menu holding `extension`, if a menu holds it."""
    async with ctx.sessions() as session:
        holder = await session.get(Extension, extension)
    if holder is None or holder.owner_type != OwnerType.MENU.value:
        return None
    return holder.owner_id


def menu_data(menu_id: int, spec: MenuSpec) -> dict[str, Any]:
    return {
        "id": menu_id,
        "name": spec.name,
        "extension": spec.extension,
        "options": {key: option.model_dump() for key, option in spec.options.items()},
        "final_destination": spec.final_destination.model_dump(),
    }


# -- inside -------------------------------------------------------------------------------


async def _prepare_prompts(ctx: ServiceContext, spec: MenuSpec) -> None:
    await prepare_prompt(ctx, spec.prompt, "prompt")
    await prepare_prompt(ctx, spec.invalid_prompt, "invalid_prompt")
    await prepare_prompt(ctx, spec.timeout_prompt, "timeout_prompt")


async def _validate(session: AsyncSession, menu_id: int, spec: MenuSpec) -> None:
    """Every destination exists, and no menu (this one or one leading here) reaches nothing.
    Runs after this menu's row is flushed, so options pointing at itself resolve."""
    for key, option in spec.options.items():
        if not isinstance(option, RepeatOption | BackOption):
            await check_destination(session, option, f"options.{key}")
    await check_destination(session, spec.final_destination, "final_destination")
    plans = {row.id: _plan(row) for row in await session.scalars(select(MenuRow))}
    stuck = menus_reaching_nothing(plans)
    if stuck:
        names = ", ".join(str(m) for m in sorted(stuck))
        raise MenuReachesNothing(
            f"menus {names} would lead callers only between menus, never to a destination "
            "(give an option or the final destination a real target)",
            field="options" if menu_id in stuck else "final_destination",
            details={"menus": sorted(stuck)},
        )


async def _take_extension(session: AsyncSession, extension: str, menu_id: int) -> None:
    await take_extension(session, extension, OwnerType.MENU, menu_id)


async def _stage_extension(
    ctx: ServiceContext, session: AsyncSession, kind: str, extension: str, menu_id: int
) -> Event:
    return await ctx.events.stage(
        session, kind, {"extension": extension, "holder": {"type": "menu", "id": menu_id}}
    )


async def _menu_extension(session: AsyncSession, menu_id: int) -> str | None:
    number: str | None = await session.scalar(
        select(Extension.number).where(
            Extension.owner_type == OwnerType.MENU.value, Extension.owner_id == menu_id
        )
    )
    return number


async def _menu_extensions(session: AsyncSession) -> dict[int, str]:
    rows = await session.execute(
        select(Extension.owner_id, Extension.number).where(
            Extension.owner_type == OwnerType.MENU.value
        )
    )
    return {owner: number for owner, number in rows}


async def _load(session: AsyncSession, menu_id: int) -> MenuRow:
    row = await session.get(MenuRow, menu_id)
    if row is None:
        raise NotFound(f"menu {menu_id} does not exist")
    return row


def _columns(spec: MenuSpec) -> dict[str, Any]:
    invalid = spec.invalid_prompt or PromptRef()
    timeout = spec.timeout_prompt or PromptRef()
    return {
        "name": spec.name,
        "prompt_text": spec.prompt.text,
        "prompt_id": spec.prompt.prompt_id,
        "options": {key: option.model_dump() for key, option in spec.options.items()},
        "timeout_s": spec.timeout_s,
        "retries": spec.retries,
        "invalid_prompt_text": invalid.text,
        "invalid_prompt_id": invalid.prompt_id,
        "timeout_prompt_text": timeout.text,
        "timeout_prompt_id": timeout.prompt_id,
        "final_destination": spec.final_destination.model_dump(),
    }


def _spec(row: MenuRow, extension: str | None) -> MenuSpec:
    prompt = PromptRef.of(row.prompt_text, row.prompt_id)
    assert prompt is not None
    return MenuSpec(
        name=row.name,
        extension=extension,
        prompt=prompt,
        options={key: _option.validate_python(value) for key, value in row.options.items()},
        timeout_s=row.timeout_s,
        retries=row.retries,
        invalid_prompt=PromptRef.of(row.invalid_prompt_text, row.invalid_prompt_id),
        timeout_prompt=PromptRef.of(row.timeout_prompt_text, row.timeout_prompt_id),
        final_destination=_destination.validate_python(row.final_destination),
    )


def _plan(row: MenuRow) -> MenuPlan:
    return MenuPlan(
        id=row.id,
        options={key: _option.validate_python(value) for key, value in row.options.items()},
        retries=row.retries,
        final_destination=_destination.validate_python(row.final_destination),
    )
