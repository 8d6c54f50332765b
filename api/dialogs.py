"""Dialogs resource: agents list, read, claim, reply to, forward and close chat dialogs; the
customer rates a closed one through the channel's connector."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from api.channels import SECRET_HEADER
from api.routing import ANY_ROLE, ApiRequest, RouteTable
from chat import dialogs
from chat.models import ChatMessageRow, DialogRow, OutboxRow
from core.sql_bounds import Count, SqlInt

routes = RouteTable()

State = Literal["new", "assigned", "answered", "waiting", "closed"]
ERRORS = (401, 403, 404, 409, 422)


class CustomerOut(BaseModel):
    id: str
    name: str | None


class DialogOut(BaseModel):
    id: int
    channel_id: int
    customer: CustomerOut
    state: State
    spam: bool
    assignee_id: int | None
    # to_all channels: the agents a waiting dialog is shown to.
    offered_to: list[int]
    created_at: datetime
    queued_at: datetime
    assigned_at: datetime | None
    first_response_at: datetime | None
    last_message_at: datetime
    closed_at: datetime | None
    closed_by: str | None
    rating: int | None

    @classmethod
    def of(cls, dialog: DialogRow, offered: list[int]) -> DialogOut:
        return cls.model_validate({**dialogs.dialog_data(dialog), "offered_to": offered})


class DeliveryOut(BaseModel):
    status: Literal["pending", "delivered"]
    attempts: int
    last_error: str | None
    delivered_at: datetime | None


class MessageOut(BaseModel):
    id: int
    direction: Literal["in", "out"]
    author_id: int | None
    text: str
    created_at: datetime
    # Outgoing messages of a channel with a reply_url; null otherwise.
    delivery: DeliveryOut | None

    @classmethod
    def of(cls, message: ChatMessageRow, outbox: OutboxRow | None) -> MessageOut:
        delivery = None
        if outbox is not None:
            delivery = DeliveryOut(
                status="delivered" if outbox.delivered_at is not None else "pending",
                attempts=outbox.attempts, last_error=outbox.last_error,
                delivered_at=outbox.delivered_at,
            )  # fmt: skip
        return cls(id=message.id, direction=message.direction,
                   author_id=message.author_id, text=message.text,
                   created_at=message.created_at, delivery=delivery)  # fmt: skip


class DialogDetail(DialogOut):
    messages: list[MessageOut]


class DialogList(BaseModel):
    items: list[DialogOut]


class DialogQuery(BaseModel):
    """Operators see their own dialogs and the ones offered to them, whatever the filter."""

    model_config = ConfigDict(extra="forbid")
    channel_id: SqlInt | None = None
    state: State | None = None
    assignee_id: SqlInt | None = None
    customer_id: str | None = None
    spam: bool | None = None
    limit: int = Field(100, ge=1, le=1000)
    offset: Count = 0


class ReplyIn(BaseModel):
    """`text`, or a `canned_response_id` whose {customer_name} and {agent_name} are filled in.
    `wait_for_customer` leaves the dialog waiting (else answered)."""

    model_config = ConfigDict(extra="forbid")
    text: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1,
                                           max_length=10000)] | None = None  # fmt: skip
    canned_response_id: SqlInt | None = None
    wait_for_customer: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> ReplyIn:
        if (self.text is None) == (self.canned_response_id is None):
            raise ValueError("send exactly one of text and canned_response_id")
        return self


class ForwardIn(BaseModel):
    """To an agent (`user_id`: theirs at once) or a channel (`channel_id`: its queue)."""

    model_config = ConfigDict(extra="forbid")
    user_id: SqlInt | None = None
    channel_id: SqlInt | None = None

    @model_validator(mode="after")
    def _one_target(self) -> ForwardIn:
        if (self.user_id is None) == (self.channel_id is None):
            raise ValueError("send exactly one of user_id and channel_id")
        return self


class RatingIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rating: int = Field(ge=1, le=5)


@routes.add(
    "GET", "/dialogs", summary="List chat dialogs", tag="chat", roles=ANY_ROLE,
    query=DialogQuery, response=DialogList, errors=(401, 422),
)  # fmt: skip
async def list_dialogs(req: ApiRequest) -> DialogList:
    query: DialogQuery = req.query
    assert req.principal is not None
    where = dialogs.DialogFilter(**query.model_dump())
    found = await dialogs.list_dialogs(req.ctx, req.principal, where)
    return DialogList(items=[DialogOut.of(d, offered) for d, offered in found])


@routes.add(
    "GET", "/dialogs/{dialog_id}", summary="Read a chat dialog with its messages", tag="chat",
    roles=ANY_ROLE, response=DialogDetail, errors=(401, 403, 404),
)  # fmt: skip
async def get_dialog(req: ApiRequest) -> DialogDetail:
    assert req.principal is not None
    dialog, offered, messages = await dialogs.read_dialog(
        req.ctx, req.principal, req.path["dialog_id"]
    )
    return DialogDetail.model_validate({
        **DialogOut.of(dialog, offered).model_dump(),
        "messages": [MessageOut.of(m, o) for m, o in messages],
    })  # fmt: skip


@routes.add(
    "POST", "/dialogs/{dialog_id}/messages", summary="Reply to the customer", tag="chat",
    roles=ANY_ROLE, body=ReplyIn, response=MessageOut, status=201, errors=ERRORS,
)  # fmt: skip
async def reply_to_dialog(req: ApiRequest) -> MessageOut:
    body: ReplyIn = req.body
    assert req.principal is not None
    message = await dialogs.reply(
        req.ctx, req.principal, req.path["dialog_id"], text=body.text,
        canned_response_id=body.canned_response_id, wait_for_customer=body.wait_for_customer,
    )  # fmt: skip
    return MessageOut.of(message, None)


@routes.add(
    "POST", "/dialogs/{dialog_id}/claim", summary="Take a waiting dialog offered to you",
    tag="chat", roles=ANY_ROLE, response=DialogOut, errors=ERRORS,
)  # fmt: skip
async def claim_dialog(req: ApiRequest) -> DialogOut:
    assert req.principal is not None
    return DialogOut.of(await dialogs.claim(req.ctx, req.principal, req.path["dialog_id"]), [])


@routes.add(
    "POST", "/dialogs/{dialog_id}/forward", summary="Forward a dialog to an agent or channel",
    tag="chat", roles=ANY_ROLE, body=ForwardIn, response=DialogOut, errors=ERRORS,
)  # fmt: skip
async def forward_dialog(req: ApiRequest) -> DialogOut:
    body: ForwardIn = req.body
    assert req.principal is not None
    dialog = await dialogs.forward(req.ctx, req.principal, req.path["dialog_id"],
                                   user_id=body.user_id, channel_id=body.channel_id)  # fmt: skip
    return DialogOut.of(dialog, [])


@routes.add(
    "POST", "/dialogs/{dialog_id}/close", summary="Close a dialog", tag="chat", roles=ANY_ROLE,
    response=DialogOut, errors=(401, 403, 404, 409),
)  # fmt: skip
async def close_dialog(req: ApiRequest) -> DialogOut:
    assert req.principal is not None
    return DialogOut.of(await dialogs.close(req.ctx, req.principal, req.path["dialog_id"]), [])


@routes.add(
    "POST", "/dialogs/{dialog_id}/rating", summary="The customer rates a closed dialog (1-5)",
    tag="chat", roles=None, headers=(SECRET_HEADER,), body=RatingIn, response=DialogOut,
    errors=(401, 404, 409, 422),
)  # fmt: skip
async def rate_dialog(req: ApiRequest) -> DialogOut:
    body: RatingIn = req.body
    dialog = await dialogs.rate(req.ctx, req.path["dialog_id"],
                                req.raw.headers.get(SECRET_HEADER, ""), body.rating)  # fmt: skip
    return DialogOut.of(dialog, [])
