"""Calls resource: the call detail records, filtered and paginated, and their recordings."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from api.auth import authenticated_principal
from api.openapi import wav_download
from api.routing import (
    API_PREFIX,
    CONTEXT_KEY,
    STAFF,
    ApiRequest,
    RouteTable,
    path_ids,
    running_controller,
)
from controller.component import NoCallControl
from core.errors import Conflict, Forbidden, NotFound
from core.sql_bounds import Count, Id, UtcInstant
from extensions.namespace import user_extension
from flows.supervision import SupervisionMode
from ivr.cdr import CallFilter, Direction, Disposition, get_call, list_calls

routes = RouteTable()


class CallTransferOut(BaseModel):
    """A phone passed the call on: `by` its extension, `to` what it asked for (an extension
    or an external number), `kind` blind or attended."""

    at: datetime
    by: str
    by_user_id: int | None
    to: str
    kind: str


class CallOut(BaseModel):
    id: int
    direction: Direction
    caller: str
    called: str
    connected_to: str | None
    user_id: int | None
    worker_id: int
    started_at: datetime
    system_answered_at: datetime | None
    answered_at: datetime | None
    ended_at: datetime | None
    disposition: Disposition | None
    hangup_by: str | None
    legs: list[dict[str, Any]]
    transfers: list[CallTransferOut]
    # Seconds of the call's recording (GET /calls/{id}/recording); null: not recorded.
    recording_seconds: float | None


class CallList(BaseModel):
    items: list[CallOut]
    total: int
    limit: int
    offset: int


class CallListQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    direction: Direction | None = None
    disposition: Disposition | None = None
    user_id: Id | None = None
    # Matches the caller, the dialled number or extension, or who answered.
    party: str | None = Field(None, max_length=128)
    started_after: UtcInstant | None = None
    started_before: UtcInstant | None = None
    # Only calls with a recording (true) or without one (false).
    recorded: bool | None = None
    limit: int = Field(100, ge=1, le=500)
    offset: Count = 0


@routes.add(
    "GET",
    "/calls",
    summary="List call records",
    tag="calls",
    roles=STAFF,
    query=CallListQuery,
    response=CallList,
    errors=(401, 403, 422),
)
async def calls(req: ApiRequest) -> CallList:
    query: CallListQuery = req.query
    where = CallFilter(
        direction=query.direction, disposition=query.disposition, user_id=query.user_id,
        party=query.party, started_after=query.started_after,
        started_before=query.started_before, recorded=query.recorded,
    )  # fmt: skip
    rows, total = await list_calls(req.ctx, where, limit=query.limit, offset=query.offset)
    return CallList(
        items=[CallOut.model_validate(row, from_attributes=True) for row in rows],
        total=total, limit=query.limit, offset=query.offset,
    )  # fmt: skip


@routes.add(
    "GET",
    "/calls/{call_id}",
    summary="Read a call record",
    tag="calls",
    roles=STAFF,
    response=CallOut,
    errors=(401, 403, 404),
)
async def call(req: ApiRequest) -> CallOut:
    row = await get_call(req.ctx, req.path["call_id"])
    return CallOut.model_validate(row, from_attributes=True)


class SuperviseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # listen: hear both; whisper: the agent hears you too; barge: both do (keys 4/5/6 on
    # your phone switch later).
    mode: SupervisionMode = SupervisionMode.LISTEN


class SupervisionOut(BaseModel):
    call_id: int
    mode: SupervisionMode
    extension: str  # the phone the service rings now


class NoExtension(Conflict):
    code = "no_extension"


@routes.add(
    "POST",
    "/calls/{call_id}/supervise",
    summary="Listen to, whisper to or barge into a live call from your desk phone",
    tag="calls",
    roles=STAFF,
    body=SuperviseIn,
    response=SupervisionOut,
    status=202,
    errors=(401, 403, 404, 409, 422),
)
async def supervise(req: ApiRequest) -> SupervisionOut:
    """The service rings your desk phone; answered, it hears the call. 404 no_live_talk: the
    call is not connected to anyone now; 409 no_extension: you have no phone;
    409 no_call_control: this API runs without the controller."""
    principal = req.principal
    assert principal is not None
    extension = None
    if principal.user_id is not None:  # the service's own admin token is nobody's
        async with req.ctx.sessions() as session:
            extension = await user_extension(session, principal.user_id)
    if extension is None or principal.user_id is None:
        raise NoExtension("you have no extension whose phone could listen")
    controller = running_controller(req.raw.app)
    if controller is None:
        raise NoCallControl("this service takes no calls here")
    body: SuperviseIn = req.body
    call_id = req.path["call_id"]
    await controller.supervise(call_id, principal.user_id, extension, body.mode)
    return SupervisionOut(call_id=call_id, mode=body.mode, extension=extension)


class NoRecording(NotFound):
    code = "no_recording"


async def call_recording(request: web.Request) -> web.StreamResponse:
    """GET /calls/{call_id}/recording: the call's WAV, both voices."""
    ctx = request.app[CONTEXT_KEY]
    principal = await authenticated_principal(ctx, request)
    if principal.role not in STAFF:
        raise Forbidden("only admins and supervisors may listen to call recordings")
    row = await get_call(ctx, path_ids(request)["call_id"])
    if row.recording_path is None:
        raise NoRecording(f"call {row.id} has no recording")
    path = ctx.settings.data_dir / row.recording_path
    if not path.is_file():
        raise NoRecording(f"call {row.id}'s recording is gone (retention)")
    return web.FileResponse(
        path,
        headers={
            "Content-Type": "audio/wav",
            "Content-Disposition": f'attachment; filename="call-{row.id}.wav"',
        },
    )


def install_audio_routes(app: web.Application) -> None:
    app.router.add_get(API_PREFIX + r"/calls/{call_id:\d+}/recording", call_recording)


OPENAPI_PATHS: dict[str, Any] = {
    API_PREFIX + "/calls/{call_id}/recording": wav_download(
        summary="Download a call's recording (both voices)",
        tag="calls",
        operation_id="call_recording",
        roles="admin, supervisor",
        id_name="call_id",
        errors={
            "401": "Missing or unknown token",
            "403": "Not an admin or supervisor",
            "404": "No such call (not_found), or it has no recording (no_recording)",
        },
    ),
}
