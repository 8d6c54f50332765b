"""Voicemail resource: /voicemail/boxes and /voicemail/messages (listen, mark heard, delete).

Admins manage boxes; admins, supervisors and a box's own user read and handle its messages.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from api.auth import authenticated_principal
from api.numbers import Greeting
from api.openapi import wav_download
from api.routing import (
    ADMIN,
    ANY_ROLE,
    API_PREFIX,
    CONTEXT_KEY,
    STAFF,
    ApiRequest,
    RouteTable,
    path_ids,
)
from core.context import ServiceContext
from core.errors import Forbidden, InvalidInput
from core.sql_bounds import Id
from extensions.tokens import Principal
from ivr import voicemail
from ivr.prompt_refs import PromptRef

routes = RouteTable()

MaxSeconds = Annotated[float, Field(ge=5, le=600)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)]


class BoxOwner(BaseModel):
    """Whose box: a user or a queue."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["user", "queue"]
    id: Id


class BoxCreate(BaseModel):
    """`greeting` null: the standard one. `max_seconds`: the longest message (5 to 600)."""

    model_config = ConfigDict(extra="forbid")
    owner: BoxOwner
    name: Name = ""
    greeting: Greeting | None = None
    max_seconds: MaxSeconds = voicemail.DEFAULT_MAX_SECONDS


class BoxPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name | None = None
    greeting: Greeting | None = None
    max_seconds: MaxSeconds | None = None


class BoxOut(BaseModel):
    id: int
    owner: BoxOwner
    name: str
    greeting: Greeting | None
    max_seconds: float
    messages: int
    unheard: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, counted: voicemail.BoxCounts) -> BoxOut:
        box = counted.box
        ref = PromptRef.of(box.greeting_text, box.greeting_prompt_id)
        greeting = Greeting(text=ref.text, prompt_id=ref.prompt_id) if ref else None
        owner = BoxOwner.model_validate({"type": box.owner_type, "id": box.owner_id})
        return cls(
            id=box.id, owner=owner, name=box.name, greeting=greeting,
            max_seconds=box.max_seconds, messages=counted.messages, unheard=counted.unheard,
            created_at=box.created_at, updated_at=box.updated_at,
        )  # fmt: skip


class BoxList(BaseModel):
    items: list[BoxOut]


class MessageOut(BaseModel):
    id: int
    box_id: int
    caller: str
    call_id: int | None
    seconds: float
    heard: bool
    heard_at: datetime | None
    created_at: datetime
    # GET it (with the token) for the 8 kHz mono 16-bit WAV.
    audio: str

    @classmethod
    def of(cls, row: voicemail.VoicemailMessageRow) -> MessageOut:
        return cls(
            id=row.id, box_id=row.box_id, caller=row.caller, call_id=row.call_id,
            seconds=row.seconds, heard=row.heard_at is not None, heard_at=row.heard_at,
            created_at=row.created_at, audio=f"{API_PREFIX}/voicemail/messages/{row.id}/audio",
        )  # fmt: skip


class MessageList(BaseModel):
    items: list[MessageOut]


class MessageQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    heard: bool | None = None


class MessagePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    heard: bool


@routes.add(
    "POST",
    "/voicemail/boxes",
    summary="Create a voicemail box",
    tag="voicemail",
    roles=ADMIN,
    body=BoxCreate,
    response=BoxOut,
    status=201,
    errors=(401, 403, 409, 422),
)
async def create_box(req: ApiRequest) -> BoxOut:
    body: BoxCreate = req.body
    spec = voicemail.BoxSpec(
        owner_type=body.owner.type, owner_id=body.owner.id, name=body.name,
        greeting=_ref(body.greeting), max_seconds=body.max_seconds,
    )  # fmt: skip
    row = await voicemail.create_box(req.ctx, spec)
    return BoxOut.of(voicemail.BoxCounts(row, 0, 0))


@routes.add(
    "GET",
    "/voicemail/boxes",
    summary="List voicemail boxes (an operator sees their own)",
    tag="voicemail",
    roles=ANY_ROLE,
    response=BoxList,
    errors=(401,),
)
async def list_boxes(req: ApiRequest) -> BoxList:
    principal = req.principal
    assert principal is not None
    own = None if principal.role in STAFF else (principal.user_id or 0)
    return BoxList(items=[BoxOut.of(b) for b in await voicemail.list_boxes(req.ctx, own)])


@routes.add(
    "GET",
    "/voicemail/boxes/{box_id}",
    summary="Read a voicemail box",
    tag="voicemail",
    roles=ANY_ROLE,
    response=BoxOut,
    errors=(401, 403, 404),
)
async def get_box(req: ApiRequest) -> BoxOut:
    box = await _readable_box(req.ctx, req.principal, req.path["box_id"])
    return BoxOut.of(await voicemail.box_counts(req.ctx, box))


@routes.add(
    "PATCH",
    "/voicemail/boxes/{box_id}",
    summary="Change a voicemail box",
    tag="voicemail",
    roles=ADMIN,
    body=BoxPatch,
    response=BoxOut,
    errors=(401, 403, 404, 422),
)
async def patch_box(req: ApiRequest) -> BoxOut:
    body: BoxPatch = req.body
    changes: dict[str, Any] = {}
    for field in body.model_fields_set:
        value = getattr(body, field)
        if value is None and field != "greeting":
            raise InvalidInput(f"{field} cannot be null", field=field)
        changes[field] = _ref(value) if field == "greeting" else value
    row = await voicemail.update_box(req.ctx, req.path["box_id"], changes)
    return BoxOut.of(await voicemail.box_counts(req.ctx, row))


@routes.add(
    "DELETE",
    "/voicemail/boxes/{box_id}",
    summary="Delete a voicemail box and its messages",
    tag="voicemail",
    roles=ADMIN,
    status=204,
    errors=(401, 403, 404, 409),
)
async def delete_box(req: ApiRequest) -> None:
    await voicemail.delete_box(req.ctx, req.path["box_id"])


@routes.add(
    "GET",
    "/voicemail/boxes/{box_id}/messages",
    summary="List a box's messages, newest first",
    tag="voicemail",
    roles=ANY_ROLE,
    query=MessageQuery,
    response=MessageList,
    errors=(401, 403, 404, 422),
)
async def list_messages(req: ApiRequest) -> MessageList:
    box_id = req.path["box_id"]
    await _readable_box(req.ctx, req.principal, box_id)
    query: MessageQuery = req.query
    rows = await voicemail.list_messages(req.ctx, box_id, heard=query.heard)
    return MessageList(items=[MessageOut.of(row) for row in rows])


@routes.add(
    "GET",
    "/voicemail/messages/{message_id}",
    summary="Read a voicemail message",
    tag="voicemail",
    roles=ANY_ROLE,
    response=MessageOut,
    errors=(401, 403, 404),
)
async def get_message(req: ApiRequest) -> MessageOut:
    return MessageOut.of(await _readable_message(req.ctx, req.principal, req.path["message_id"]))


@routes.add(
    "PATCH",
    "/voicemail/messages/{message_id}",
    summary="Mark a voicemail message heard (or unheard)",
    tag="voicemail",
    roles=ANY_ROLE,
    body=MessagePatch,
    response=MessageOut,
    errors=(401, 403, 404, 422),
)
async def patch_message(req: ApiRequest) -> MessageOut:
    body: MessagePatch = req.body
    message_id = req.path["message_id"]
    await _readable_message(req.ctx, req.principal, message_id)
    return MessageOut.of(await voicemail.mark_heard(req.ctx, message_id, body.heard))


@routes.add(
    "DELETE",
    "/voicemail/messages/{message_id}",
    summary="Delete a voicemail message",
    tag="voicemail",
    roles=ANY_ROLE,
    status=204,
    errors=(401, 403, 404),
)
async def delete_message(req: ApiRequest) -> None:
    message_id = req.path["message_id"]
    await _readable_message(req.ctx, req.principal, message_id)
    await voicemail.delete_message(req.ctx, message_id)


async def message_audio(request: web.Request) -> web.StreamResponse:
    """GET /voicemail/messages/{message_id}/audio: the recorded WAV."""
    ctx = request.app[CONTEXT_KEY]
    principal = await authenticated_principal(ctx, request)
    message = await _readable_message(ctx, principal, path_ids(request)["message_id"])
    return web.FileResponse(
        voicemail.message_file(ctx, message),
        headers={
            "Content-Type": "audio/wav",
            "Content-Disposition": f'attachment; filename="voicemail-{message.id}.wav"',
        },
    )


def install_audio_routes(app: web.Application) -> None:
    app.router.add_get(API_PREFIX + r"/voicemail/messages/{message_id:\d+}/audio", message_audio)


async def _readable_box(
    ctx: ServiceContext, principal: Principal | None, box_id: int
) -> voicemail.VoicemailBoxRow:
    box = await voicemail.get_box(ctx, box_id)
    _check_reader(principal, box)
    return box


async def _readable_message(
    ctx: ServiceContext, principal: Principal | None, message_id: int
) -> voicemail.VoicemailMessageRow:
    message = await voicemail.get_message(ctx, message_id)
    _check_reader(principal, await voicemail.get_box(ctx, message.box_id))
    return message


def _check_reader(principal: Principal | None, box: voicemail.VoicemailBoxRow) -> None:
    assert principal is not None
    if principal.role in STAFF:
        return
    if box.owner_type == "user" and principal.user_id == box.owner_id:
        return
    raise Forbidden("only admins, supervisors and the box's owner may read its messages")


def _ref(greeting: Greeting | None) -> PromptRef | None:
    return PromptRef(text=greeting.text, prompt_id=greeting.prompt_id) if greeting else None


OPENAPI_PATHS: dict[str, Any] = {
    API_PREFIX + "/voicemail/messages/{message_id}/audio": wav_download(
        summary="Download a voicemail message's WAV",
        tag="voicemail",
        operation_id="voicemail_message_audio",
        roles="admin, supervisor, the box's own user",
        id_name="message_id",
        errors={
            "401": "Missing or unknown token",
            "403": "Not staff and not the box's owner",
            "404": "No such message",
        },
    ),
}
