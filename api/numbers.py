"""Inbound numbers resource: /numbers and /numbers/{number_id}."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from api.routing import ADMIN, STAFF, ApiRequest, RouteTable
from core.errors import InvalidInput
from core.sql_bounds import Id
from destinations.destination import EXTERNAL_NUMBER_PATTERN, Destination
from ivr import numbers
from ivr.prompts import MAX_TEXT_LENGTH

routes = RouteTable()

Text = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_TEXT_LENGTH)
]


class Greeting(BaseModel):
    """Exactly one of: `text`, spoken with espeak-ng when the number is saved, or
    `prompt_id`, a prompt of the library (POST /prompts or /prompts/upload)."""

    model_config = ConfigDict(extra="forbid")
    text: Text | None = None
    prompt_id: Id | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Greeting:
        if (self.text is None) == (self.prompt_id is None):
            raise ValueError("give either text or prompt_id")
        return self


class NumberCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    number: Annotated[str, Field(pattern=EXTERNAL_NUMBER_PATTERN, examples=["+4930123456"])]
    name: Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)] = ""
    greeting: Greeting
    extension_dialing: bool = True
    # Record calls to this number once connected to someone (both voices; never internal).
    record_calls: bool = False
    default_destination: Destination
    # Where a rung extension that does not answer sends the caller (default: as above).
    no_answer_destination: Destination | None = None


class NumberPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    number: Annotated[str, Field(pattern=EXTERNAL_NUMBER_PATTERN)] | None = None
    name: Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)] | None = None
    greeting: Greeting | None = None
    extension_dialing: bool | None = None
    record_calls: bool | None = None
    default_destination: Destination | None = None
    no_answer_destination: Destination | None = None


class NumberOut(BaseModel):
    id: int
    number: str
    name: str
    greeting: Greeting
    extension_dialing: bool
    record_calls: bool
    default_destination: Destination
    no_answer_destination: Destination | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: numbers.NumberRow) -> NumberOut:
        return cls(
            id=row.id, number=row.number, name=row.name,
            greeting=Greeting(text=row.greeting_text, prompt_id=row.greeting_prompt_id),
            extension_dialing=row.extension_dialing, record_calls=row.record_calls,
            default_destination=row.default_destination,
            no_answer_destination=row.no_answer_destination,
            created_at=row.created_at, updated_at=row.updated_at,
        )  # fmt: skip


class NumberList(BaseModel):
    items: list[NumberOut]


ERRORS = (401, 403, 404, 409, 422)


@routes.add(
    "POST",
    "/numbers",
    summary="Configure an inbound number",
    tag="numbers",
    roles=ADMIN,
    body=NumberCreate,
    response=NumberOut,
    status=201,
    errors=(401, 403, 409, 422),
)
async def create_number(req: ApiRequest) -> NumberOut:
    body: NumberCreate = req.body
    spec = numbers.NumberSpec(
        number=body.number, name=body.name, **_greeting_fields(body.greeting),
        extension_dialing=body.extension_dialing, default_destination=body.default_destination,
        no_answer_destination=body.no_answer_destination, record_calls=body.record_calls,
    )  # fmt: skip
    return NumberOut.of(await numbers.create_number(req.ctx, spec))


@routes.add(
    "GET",
    "/numbers",
    summary="List inbound numbers",
    tag="numbers",
    roles=STAFF,
    response=NumberList,
    errors=(401, 403),
)
async def list_numbers(req: ApiRequest) -> NumberList:
    return NumberList(items=[NumberOut.of(row) for row in await numbers.list_numbers(req.ctx)])


@routes.add(
    "GET",
    "/numbers/{number_id}",
    summary="Read an inbound number",
    tag="numbers",
    roles=STAFF,
    response=NumberOut,
    errors=(401, 403, 404),
)
async def get_number(req: ApiRequest) -> NumberOut:
    return NumberOut.of(await numbers.get_number(req.ctx, req.path["number_id"]))


@routes.add(
    "PATCH",
    "/numbers/{number_id}",
    summary="Change an inbound number",
    tag="numbers",
    roles=ADMIN,
    body=NumberPatch,
    response=NumberOut,
    errors=ERRORS,
)
async def patch_number(req: ApiRequest) -> NumberOut:
    body: NumberPatch = req.body
    changes: dict[str, Any] = {}
    for field in body.model_fields_set:
        value = getattr(body, field)
        if value is None and field != "no_answer_destination":
            raise InvalidInput(f"{field} cannot be null", field=field)
        if field == "greeting":
            changes.update(_greeting_fields(value))
        else:
            changes[field] = value
    return NumberOut.of(await numbers.update_number(req.ctx, req.path["number_id"], changes))


@routes.add(
    "DELETE",
    "/numbers/{number_id}",
    summary="Remove an inbound number",
    tag="numbers",
    roles=ADMIN,
    status=204,
    errors=(401, 403, 404),
)
async def delete_number(req: ApiRequest) -> None:
    await numbers.delete_number(req.ctx, req.path["number_id"])


def _greeting_fields(greeting: Greeting) -> dict[str, Any]:
    return {"greeting_text": greeting.text, "greeting_prompt_id": greeting.prompt_id}
