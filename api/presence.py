"""Presence resource: an agent's status (/users/{user_id}/presence) and the wallboard."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from acd import agents, forwarding
from acd.presence import Activity, Presence, Status
from api.routing import ANY_ROLE, STAFF, ApiRequest, RouteTable
from destinations.destination import Destination

routes = RouteTable()

Message = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)]


class PresenceChoice(BaseModel):
    """`status` is one an agent may choose (idle, ringing and in_call are the system's).
    not_ready needs a `reason` from the configured list (acd.not_ready_reasons). `ready`
    during wrap-up ends it early; `wrap_up` by hand lasts acd.wrap_up_time. During a call
    the change waits (shown as `pending`) and applies when the call ends."""

    model_config = ConfigDict(extra="forbid")
    status: str = Field(examples=["not_ready"])
    reason: str | None = Field(None, examples=["break"])
    message: Message | None = Field(None, examples=["back at 14:00"])


class PendingOut(BaseModel):
    status: Status
    reason: str | None
    message: str | None


class PresenceOut(BaseModel):
    user_id: int
    status: Status
    reason: str | None
    message: str | None
    activity: Activity
    since: datetime | None
    wrap_up_until: datetime | None
    pending: PendingOut | None

    @classmethod
    def of(cls, user_id: int, presence: Presence) -> PresenceOut:
        return cls.model_validate(agents.presence_data(user_id, presence))


class WallboardEntry(PresenceOut):
    name: str


class Wallboard(BaseModel):
    items: list[WallboardEntry]
    not_ready_reasons: list[str]


@routes.add(
    "GET",
    "/users/{user_id}/presence",
    summary="Read a user's presence",
    tag="presence",
    roles=ANY_ROLE,
    response=PresenceOut,
    errors=(401, 404),
)
async def get_presence(req: ApiRequest) -> PresenceOut:
    user_id = req.path["user_id"]
    return PresenceOut.of(user_id, await agents.presence_of(req.ctx, user_id))


@routes.add(
    "PUT",
    "/users/{user_id}/presence",
    summary="Set a user's presence",
    tag="presence",
    roles=STAFF,
    allow_self=True,
    body=PresenceChoice,
    response=PresenceOut,
    errors=(401, 403, 404, 409, 422),
)
async def put_presence(req: ApiRequest) -> PresenceOut:
    body: PresenceChoice = req.body
    user_id = req.path["user_id"]
    assert req.principal is not None
    by = f"user:{req.principal.user_id}" if req.principal.user_id is not None else "admin"
    presence = await agents.choose(
        req.ctx, user_id, body.status, reason=body.reason, message=body.message or None, by=by
    )
    return PresenceOut.of(user_id, presence)


@routes.add(
    "GET",
    "/presence",
    summary="Everyone's presence (wallboard)",
    tag="presence",
    roles=ANY_ROLE,
    response=Wallboard,
    errors=(401,),
)
async def list_presence(req: ApiRequest) -> Wallboard:
    board = await agents.wallboard(req.ctx)
    return Wallboard(
        items=[
            WallboardEntry.model_validate(
                {**agents.presence_data(entry.user_id, entry.presence), "name": entry.name}
            )
            for entry in board
        ],
        not_ready_reasons=list(req.ctx.settings.acd.not_ready_reasons),
    )


class Forwarding(BaseModel):
    """Where direct calls to the user's extension go, per presence status (available, away,
    ready, not_ready, wrap_up, dnd, logged_out), while on a call (`busy`) or when the phone
    does not answer (`no_answer`). A destination is an extension, an external number or
    `{"type": "hangup"}` (reject). Without a dnd rule, DND rejects direct calls."""

    model_config = ConfigDict(extra="forbid")
    rules: dict[str, Destination] = Field(
        default_factory=dict,
        examples=[{"away": {"type": "number", "number": "+491701234567"},
                   "dnd": {"type": "hangup"}}],
    )  # fmt: skip


class ForwardingOut(Forwarding):
    user_id: int
    updated_at: datetime | None


@routes.add(
    "GET",
    "/users/{user_id}/forwarding",
    summary="Read a user's call forwarding",
    tag="presence",
    roles=STAFF,
    allow_self=True,
    response=ForwardingOut,
    errors=(401, 403, 404),
)
async def get_forwarding(req: ApiRequest) -> ForwardingOut:
    user_id = req.path["user_id"]
    rules, updated_at = await forwarding.get_rules(req.ctx, user_id)
    return ForwardingOut(user_id=user_id, rules=rules, updated_at=updated_at)


@routes.add(
    "PUT",
    "/users/{user_id}/forwarding",
    summary="Replace a user's call forwarding",
    tag="presence",
    roles=STAFF,
    allow_self=True,
    body=Forwarding,
    response=ForwardingOut,
    errors=(401, 403, 404, 422),
)
async def put_forwarding(req: ApiRequest) -> ForwardingOut:
    body: Forwarding = req.body
    user_id = req.path["user_id"]
    updated_at = await forwarding.set_rules(req.ctx, user_id, body.rules)
    return ForwardingOut(user_id=user_id, rules=body.rules, updated_at=updated_at)
