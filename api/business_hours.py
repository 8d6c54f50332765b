"""Business hours resource: /numbers/{number_id}/hours (one schedule per inbound number)."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from api.numbers import Greeting
from api.routing import ADMIN, STAFF, ApiRequest, RouteTable
from destinations.destination import Destination
from ivr import number_hours
from ivr.business_hours import CLOCK_PATTERN
from ivr.prompt_refs import PromptRef

routes = RouteTable()

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
Clock = Annotated[str, Field(pattern=CLOCK_PATTERN, examples=["09:00"])]


class Span(BaseModel):
    """Open from `from` up to `to` (local time, HH:MM, "24:00" ends the day)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)
    from_: Clock = Field(alias="from")
    to: Clock


class Holiday(BaseModel):
    model_config = ConfigDict(extra="forbid")
    date: date
    name: Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)] = ""


class HoursBody(BaseModel):
    """Closed on the listed dates and outside the weekly spans, in `time_zone` (IANA, e.g.
    Europe/Berlin). When closed, callers hear `off_hours_prompt` (if any) and go to
    `off_hours_destination` instead of the greeting."""

    model_config = ConfigDict(extra="forbid")
    time_zone: Annotated[str, Field(min_length=1, max_length=64, examples=["Europe/Berlin"])]
    weekly: dict[Weekday, list[Span]] = {}
    holidays: list[Holiday] = []
    off_hours_prompt: Greeting | None = None
    off_hours_destination: Destination


class HoursOut(HoursBody):
    number_id: int


@routes.add(
    "PUT",
    "/numbers/{number_id}/hours",
    summary="Set a number's business hours",
    tag="numbers",
    roles=ADMIN,
    body=HoursBody,
    response=HoursOut,
    errors=(401, 403, 404, 422),
)
async def put_hours(req: ApiRequest) -> HoursOut:
    body: HoursBody = req.body
    prompt = body.off_hours_prompt
    spec = number_hours.HoursSpec(
        time_zone=body.time_zone,
        weekly={day: [(s.from_, s.to) for s in spans] for day, spans in body.weekly.items()},
        holidays=[number_hours.Holiday(h.date, h.name) for h in body.holidays],
        off_hours_prompt=PromptRef(prompt.text, prompt.prompt_id) if prompt else None,
        off_hours_destination=body.off_hours_destination,
    )
    number_id = req.path["number_id"]
    return _out(number_id, await number_hours.set_hours(req.ctx, number_id, spec))


@routes.add(
    "GET",
    "/numbers/{number_id}/hours",
    summary="Read a number's business hours",
    tag="numbers",
    roles=STAFF,
    response=HoursOut,
    errors=(401, 403, 404),
)
async def get_hours(req: ApiRequest) -> HoursOut:
    number_id = req.path["number_id"]
    return _out(number_id, await number_hours.get_hours(req.ctx, number_id))


@routes.add(
    "DELETE",
    "/numbers/{number_id}/hours",
    summary="Remove a number's business hours (always open)",
    tag="numbers",
    roles=ADMIN,
    status=204,
    errors=(401, 403, 404),
)
async def delete_hours(req: ApiRequest) -> None:
    await number_hours.remove_hours(req.ctx, req.path["number_id"])


def _out(number_id: int, spec: number_hours.HoursSpec) -> HoursOut:
    prompt = spec.off_hours_prompt
    return HoursOut(
        number_id=number_id,
        time_zone=spec.time_zone,
        weekly={
            day: [Span(from_=start, to=end) for start, end in spans]
            for day, spans in spec.weekly.items()
        },
        holidays=[Holiday(date=h.date, name=h.name) for h in spec.holidays],
        off_hours_prompt=Greeting(text=prompt.text, prompt_id=prompt.prompt_id) if prompt else None,
        off_hours_destination=spec.off_hours_destination,
    )
