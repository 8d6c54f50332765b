"""Callbacks resource: /callbacks, the requests of callers who asked a queue to call them back
(flows.callback): listed and read by admins and supervisors, and taken back while pending."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from acd import callbacks
from acd.callback_rules import CallbackState, callback_number
from api.routing import STAFF, ApiRequest, RouteTable, running_controller
from core.errors import InvalidInput, Unavailable
from core.sql_bounds import Count, SqlInt

routes = RouteTable()


class CallbackQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    queue_id: SqlInt | None = None
    state: CallbackState | None = None
    limit: int = Field(100, ge=1, le=1000)
    offset: Count = 0


class CallbackIn(BaseModel):
    """A callback asked for outside a call: a web form's or the CRM's "call me back"."""

    model_config = ConfigDict(extra="forbid")
    queue_id: SqlInt
    # Whom to call: 3 to 20 digits, an optional leading +.
    number: Annotated[str, StringConstraints(strip_whitespace=True, max_length=32)]
    priority: int = Field(0, ge=0, le=100)
    # The company number shown to the customer; default: one that leads to the queue, else
    # the first.
    shown_number: str | None = Field(None, max_length=21)


class CallbackOut(BaseModel):
    id: int
    queue_id: int
    # The call in which the caller asked; the queue log goes on under it.
    call_id: int
    number: str  # whom to call back
    shown_number: str  # the company number they called, shown to them as the caller
    priority: int
    entered_at: datetime  # their place in the queue
    requested_at: datetime
    state: CallbackState
    # Attempts that counted (a call the agent left before the customer answered does not).
    attempts: int
    next_attempt_at: datetime | None
    # Each attempt: at, user_id (the agent), call_id (its call record), result.
    history: list[dict[str, Any]]
    # The agent of the attempt under way, or who reached the customer.
    user_id: int | None
    updated_at: datetime

    @classmethod
    def of(cls, callback: callbacks.Callback) -> CallbackOut:
        return cls.model_validate(callbacks.callback_data(callback))


class CallbackList(BaseModel):
    items: list[CallbackOut]


@routes.add(
    "GET", "/callbacks", summary="List callback requests", tag="queues", roles=STAFF,
    query=CallbackQuery, response=CallbackList, errors=(401, 403, 422),
)  # fmt: skip
async def list_callbacks(req: ApiRequest) -> CallbackList:
    query: CallbackQuery = req.query
    found = await callbacks.list_callbacks(
        req.ctx, queue_id=query.queue_id, states=[query.state] if query.state else [],
        limit=query.limit, offset=query.offset,
    )  # fmt: skip
    return CallbackList(items=[CallbackOut.of(c) for c in found])


@routes.add(
    "POST", "/callbacks", summary="Ask for a callback (a web form, the CRM)", tag="queues",
    roles=STAFF, body=CallbackIn, response=CallbackOut, status=201,
    errors=(401, 403, 404, 409, 422, 503),
)  # fmt: skip
async def request_callback(req: ApiRequest) -> CallbackOut:
    """The request enters the queue now and is served like a caller's (see README, Callback).
    422 `invalid_number`, `unknown_number` (shown_number); 404 for the queue; 409
    `callback_exists` (an open one to this number in this queue), `no_outbound_route`,
    `no_company_number`."""
    body: CallbackIn = req.body
    number = callback_number(body.number)
    if number is None:
        raise InvalidNumber(f"{body.number!r} is no number the trunk could dial",
                            field="number")  # fmt: skip
    running = running_controller(req.raw.app)
    if running is None:
        raise Unavailable("this node does not run the controller now: send to the active one")
    return CallbackOut.of(
        await running.request_callback(body.queue_id, number, body.priority, body.shown_number)
    )


class InvalidNumber(InvalidInput):
    code = "invalid_number"


@routes.add(
    "GET", "/callbacks/{callback_id}", summary="Read a callback request", tag="queues",
    roles=STAFF, response=CallbackOut, errors=(401, 403, 404),
)  # fmt: skip
async def get_callback(req: ApiRequest) -> CallbackOut:
    return CallbackOut.of(await callbacks.get_callback(req.ctx, req.path["callback_id"]))


@routes.add(
    "DELETE", "/callbacks/{callback_id}", summary="Cancel a pending callback", tag="queues",
    roles=STAFF, response=CallbackOut, errors=(401, 403, 404, 409),
)  # fmt: skip
async def cancel_callback(req: ApiRequest) -> CallbackOut:
    """409 `callback_in_progress` while the customer is being called, `callback_over` once it
    is completed, failed or cancelled."""
    running = running_controller(req.raw.app)
    callback_id = req.path["callback_id"]
    if running is None:  # the API served alone: the controller notices at the agent's answer
        return CallbackOut.of(await callbacks.cancel_callback(req.ctx, callback_id))
    return CallbackOut.of(await running.cancel_callback(callback_id))
