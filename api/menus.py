"""Menus resource: /menus and /menus/{menu_id} (IVR menus: options per key, retries, final)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from api.numbers import Greeting
from api.routing import ADMIN, STAFF, ApiRequest, RouteTable
from core.errors import InvalidInput
from destinations.destination import Destination, HangupDestination
from extensions.numbering import EXTENSION_PATTERN
from ivr import menus
from ivr.menu import OPTION_KEY_PATTERN, MenuOption
from ivr.prompt_refs import PromptRef

routes = RouteTable()

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
OptionKey = Annotated[str, StringConstraints(pattern=OPTION_KEY_PATTERN)]
Extension = Annotated[str, Field(pattern=EXTENSION_PATTERN, examples=["500"])]
Options = dict[OptionKey, MenuOption]
TimeoutS = Annotated[float, Field(gt=0, le=60)]
Retries = Annotated[int, Field(ge=0, le=10)]


class MenuCreate(BaseModel):
    """`options` maps one key (0-9, *, #) to a destination or to {"type": "repeat"} /
    {"type": "back"}. After the prompt the caller has `timeout_s` to press a key; an invalid
    key or no key plays `invalid_prompt` / `timeout_prompt` (standard ones when null) and the
    menu again, `retries` times, then the call goes to `final_destination`."""

    model_config = ConfigDict(extra="forbid")
    name: Name
    extension: Extension | None = None
    prompt: Greeting
    options: Options = {}
    timeout_s: TimeoutS = menus.DEFAULT_TIMEOUT_S
    retries: Retries = menus.DEFAULT_RETRIES
    invalid_prompt: Greeting | None = None
    timeout_prompt: Greeting | None = None
    final_destination: Destination = HangupDestination()


class MenuPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name | None = None
    extension: Extension | None = None
    prompt: Greeting | None = None
    options: Options | None = None
    timeout_s: TimeoutS | None = None
    retries: Retries | None = None
    invalid_prompt: Greeting | None = None
    timeout_prompt: Greeting | None = None
    final_destination: Destination | None = None


class MenuOut(BaseModel):
    id: int
    name: str
    extension: str | None
    prompt: Greeting
    options: dict[str, MenuOption]
    timeout_s: float
    retries: int
    invalid_prompt: Greeting | None
    timeout_prompt: Greeting | None
    final_destination: Destination
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, menu: menus.Menu) -> MenuOut:
        spec = menu.spec
        return cls(
            id=menu.id, name=spec.name, extension=spec.extension, prompt=_greeting(spec.prompt),
            options=spec.options, timeout_s=spec.timeout_s, retries=spec.retries,
            invalid_prompt=_greeting(spec.invalid_prompt) if spec.invalid_prompt else None,
            timeout_prompt=_greeting(spec.timeout_prompt) if spec.timeout_prompt else None,
            final_destination=spec.final_destination,
            created_at=menu.created_at, updated_at=menu.updated_at,
        )  # fmt: skip


class MenuList(BaseModel):
    items: list[MenuOut]


# Fields that may be set to null in a PATCH: it clears them (no extension, standard prompts).
_NULLABLE = frozenset({"extension", "invalid_prompt", "timeout_prompt"})
_PROMPTS = frozenset({"prompt", "invalid_prompt", "timeout_prompt"})


@routes.add(
    "POST",
    "/menus",
    summary="Create an IVR menu",
    tag="menus",
    roles=ADMIN,
    body=MenuCreate,
    response=MenuOut,
    status=201,
    errors=(401, 403, 409, 422),
)
async def create_menu(req: ApiRequest) -> MenuOut:
    body: MenuCreate = req.body
    spec = menus.MenuSpec(
        name=body.name, extension=body.extension, prompt=_ref(body.prompt), options=body.options,
        timeout_s=body.timeout_s, retries=body.retries,
        invalid_prompt=_ref(body.invalid_prompt) if body.invalid_prompt else None,
        timeout_prompt=_ref(body.timeout_prompt) if body.timeout_prompt else None,
        final_destination=body.final_destination,
    )  # fmt: skip
    return MenuOut.of(await menus.create_menu(req.ctx, spec))


@routes.add(
    "GET",
    "/menus",
    summary="List IVR menus",
    tag="menus",
    roles=STAFF,
    response=MenuList,
    errors=(401, 403),
)
async def list_menus(req: ApiRequest) -> MenuList:
    return MenuList(items=[MenuOut.of(menu) for menu in await menus.list_menus(req.ctx)])


@routes.add(
    "GET",
    "/menus/{menu_id}",
    summary="Read an IVR menu",
    tag="menus",
    roles=STAFF,
    response=MenuOut,
    errors=(401, 403, 404),
)
async def get_menu(req: ApiRequest) -> MenuOut:
    return MenuOut.of(await menus.get_menu(req.ctx, req.path["menu_id"]))


@routes.add(
    "PATCH",
    "/menus/{menu_id}",
    summary="Change an IVR menu",
    tag="menus",
    roles=ADMIN,
    body=MenuPatch,
    response=MenuOut,
    errors=(401, 403, 404, 409, 422),
)
async def patch_menu(req: ApiRequest) -> MenuOut:
    body: MenuPatch = req.body
    changes: dict[str, Any] = {}
    for field in body.model_fields_set:
        value = getattr(body, field)
        if value is None and field not in _NULLABLE:
            raise InvalidInput(f"{field} cannot be null", field=field)
        changes[field] = _ref(value) if field in _PROMPTS and value is not None else value
    return MenuOut.of(await menus.update_menu(req.ctx, req.path["menu_id"], changes))


@routes.add(
    "DELETE",
    "/menus/{menu_id}",
    summary="Delete an IVR menu nothing points at",
    tag="menus",
    roles=ADMIN,
    status=204,
    errors=(401, 403, 404, 409),
)
async def delete_menu(req: ApiRequest) -> None:
    await menus.delete_menu(req.ctx, req.path["menu_id"])


def _ref(greeting: Greeting) -> PromptRef:
    return PromptRef(text=greeting.text, prompt_id=greeting.prompt_id)


def _greeting(ref: PromptRef) -> Greeting:
    return Greeting(text=ref.text, prompt_id=ref.prompt_id)
