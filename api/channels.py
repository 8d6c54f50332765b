"""Chat channels resource: /channels, /channels/{channel_id}, and the connector's inbound door
/channels/{channel_id}/inbound (authenticated by the channel's secret, not a token)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, StringConstraints

from api.routing import ADMIN, STAFF, ApiRequest, RouteTable, running_controller
from chat import channels
from chat.assignment import HARD_CAP, Countable, Distribution
from chat.working_hours import WorkingHours
from core.errors import InvalidInput, Unavailable
from core.sql_bounds import SqlInt

routes = RouteTable()

SECRET_HEADER = "X-Channel-Secret"
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=10000)]
# Fields that may be cleared with null in a PATCH.
NULLABLE = frozenset({"max_open_dialogs", "reply_url", "working_hours", "off_hours_reply"})


class ChannelFields(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # webhook: messages in by POST .../inbound, replies out by POST to reply_url.
    type: Literal["webhook"] = "webhook"
    # User ids in order (in_order follows it).
    members: list[SqlInt] = Field(default_factory=list, max_length=1000)
    distribution: Distribution = Distribution.EVENLY
    # Skip members who are not ready/available (away, not_ready, dnd, wrap_up, logged_out).
    check_availability: bool = True
    # Open dialogs of this channel one agent holds at most (null: only the hard cap of 1000).
    max_open_dialogs: int | None = Field(None, ge=1, le=HARD_CAP)
    # Open states the limit does not count; closed dialogs never count.
    limit_excludes: list[Countable] = Field(default_factory=list)
    # Seconds an assigned dialog may stay unanswered before it moves to the next agent (0: never).
    idle_seconds: int = Field(180, ge=0, le=86400)
    # Replies are POSTed here, signed: X-Channel-Signature: sha256=HMAC(secret, body).
    reply_url: AnyHttpUrl | None = None
    # Null: always open. Outside them new dialogs wait and get off_hours_reply.
    working_hours: WorkingHours | None = None
    off_hours_reply: Text | None = None


class ChannelCreate(ChannelFields):
    name: Name


class ChannelPatch(BaseModel):
    """Only the fields sent change; max_open_dialogs, reply_url, working_hours and
    off_hours_reply accept null."""

    model_config = ConfigDict(extra="forbid")
    name: Name | None = None
    members: list[SqlInt] | None = Field(None, max_length=1000)
    distribution: Distribution | None = None
    check_availability: bool | None = None
    max_open_dialogs: int | None = Field(None, ge=1, le=HARD_CAP)
    limit_excludes: list[Countable] | None = None
    idle_seconds: int | None = Field(None, ge=0, le=86400)
    reply_url: AnyHttpUrl | None = None
    working_hours: WorkingHours | None = None
    off_hours_reply: Text | None = None


class ChannelOut(ChannelFields):
    id: int
    name: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, channel: channels.Channel) -> ChannelOut:
        data = channels.channel_data(channel)
        return cls.model_validate(
            {**data, "created_at": channel.created_at, "updated_at": channel.updated_at}
        )


class ChannelCreated(ChannelOut):
    # Shown here and on reset only: the connector sends it as X-Channel-Secret.
    inbound_secret: str


class ChannelSecret(BaseModel):
    inbound_secret: str


class ChannelList(BaseModel):
    items: list[ChannelOut]


def _spec_fields(body: BaseModel, names: set[str]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name in names:
        value = getattr(body, name)
        if name == "members":
            value = tuple(value)
        elif name == "limit_excludes":
            value = frozenset(value)
        elif name == "reply_url" and value is not None:
            value = str(value)
        fields[name] = value
    return fields


@routes.add(
    "POST", "/channels", summary="Create a chat channel", tag="chat", roles=ADMIN,
    body=ChannelCreate, response=ChannelCreated, status=201, errors=(401, 403, 409, 422),
)  # fmt: skip
async def create_channel(req: ApiRequest) -> ChannelCreated:
    body: ChannelCreate = req.body
    spec = channels.ChannelSpec(**_spec_fields(body, set(ChannelCreate.model_fields)))
    channel = await channels.create_channel(req.ctx, spec)
    return ChannelCreated.model_validate(
        {**ChannelOut.of(channel).model_dump(), "inbound_secret": channel.secret}
    )


@routes.add(
    "GET", "/channels", summary="List chat channels", tag="chat", roles=STAFF,
    response=ChannelList, errors=(401, 403),
)  # fmt: skip
async def list_channels(req: ApiRequest) -> ChannelList:
    return ChannelList(items=[ChannelOut.of(c) for c in await channels.list_channels(req.ctx)])


@routes.add(
    "GET", "/channels/{channel_id}", summary="Read a chat channel", tag="chat", roles=STAFF,
    response=ChannelOut, errors=(401, 403, 404),
)  # fmt: skip
async def get_channel(req: ApiRequest) -> ChannelOut:
    return ChannelOut.of(await channels.get_channel(req.ctx, req.path["channel_id"]))


@routes.add(
    "PATCH", "/channels/{channel_id}", summary="Change a chat channel", tag="chat", roles=ADMIN,
    body=ChannelPatch, response=ChannelOut, errors=(401, 403, 404, 409, 422),
)  # fmt: skip
async def patch_channel(req: ApiRequest) -> ChannelOut:
    body: ChannelPatch = req.body
    for name in body.model_fields_set:
        if getattr(body, name) is None and name not in NULLABLE:
            raise InvalidInput(f"{name} cannot be null", field=name)
    changes = _spec_fields(body, body.model_fields_set)
    return ChannelOut.of(await channels.update_channel(req.ctx, req.path["channel_id"], changes))


@routes.add(
    "DELETE", "/channels/{channel_id}", summary="Delete a chat channel and its dialogs",
    tag="chat", roles=ADMIN, status=204, errors=(401, 403, 404),
)  # fmt: skip
async def delete_channel(req: ApiRequest) -> None:
    await channels.delete_channel(req.ctx, req.path["channel_id"])


@routes.add(
    "POST", "/channels/{channel_id}/secret", summary="Replace a channel's secret", tag="chat",
    roles=ADMIN, response=ChannelSecret, errors=(401, 403, 404),
)  # fmt: skip
async def reset_secret(req: ApiRequest) -> ChannelSecret:
    channel = await channels.new_secret(req.ctx, req.path["channel_id"])
    return ChannelSecret(inbound_secret=channel.secret)


class Customer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # The connector's id of the customer: a messenger id, an address or a phone number.
    id: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    name: Name | None = None


class InboundMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    customer: Customer
    text: Text


class InboundOut(BaseModel):
    dialog_id: int
    message_id: int
    state: str
    spam: bool


@routes.add(
    "POST", "/channels/{channel_id}/inbound", summary="A customer's message (the connector)",
    tag="chat", roles=None, headers=(SECRET_HEADER,), body=InboundMessage, response=InboundOut,
    status=201, errors=(401, 403, 404, 422, 503),
)  # fmt: skip
async def inbound_message(req: ApiRequest) -> InboundOut:
    body: InboundMessage = req.body
    # The controller's chat assigner writes it and places its dialog in the same transaction
    # (the inbound path needs the controller; `pbx run` always starts it).
    running = running_controller(req.raw.app)
    if running is None:
        raise Unavailable("this node does not run the controller now: send to the active one")
    inbound = await running.chat_assigner.receive(
        req.path["channel_id"], req.raw.headers.get(SECRET_HEADER, ""),
        body.customer.id, body.customer.name, body.text,
    )  # fmt: skip
    return InboundOut(dialog_id=inbound.dialog_id, message_id=inbound.message_id,
                      state=inbound.state, spam=inbound.spam)  # fmt: skip
