"""Prompts resource: the library of greetings and announcements (text or uploaded audio)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, StringConstraints

from api.auth import authenticated_principal
from api.openapi import wav_download
from api.routing import (
    ADMIN,
    API_PREFIX,
    CONTEXT_KEY,
    STAFF,
    ApiRequest,
    RouteTable,
    path_ids,
)
from core.errors import Forbidden, InvalidInput
from ivr import prompt_library
from ivr.prompts import MAX_TEXT_LENGTH

routes = RouteTable()

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Text = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_TEXT_LENGTH)
]


class TextPromptCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name
    text: Text


class PromptOut(BaseModel):
    id: int
    name: str
    kind: Literal["text", "audio"]
    text: str | None
    seconds: float
    created_at: datetime


class PromptList(BaseModel):
    items: list[PromptOut]


def _out(row: prompt_library.PromptRow) -> PromptOut:
    return PromptOut.model_validate(row, from_attributes=True)


@routes.add(
    "POST",
    "/prompts",
    summary="Create a spoken prompt from text",
    tag="prompts",
    roles=ADMIN,
    body=TextPromptCreate,
    response=PromptOut,
    status=201,
    errors=(401, 403, 422),
)
async def create_text_prompt(req: ApiRequest) -> PromptOut:
    body: TextPromptCreate = req.body
    return _out(await prompt_library.create_text_prompt(req.ctx, body.name, body.text))


@routes.add(
    "GET",
    "/prompts",
    summary="List prompts",
    tag="prompts",
    roles=STAFF,
    response=PromptList,
    errors=(401, 403),
)
async def list_prompts(req: ApiRequest) -> PromptList:
    return PromptList(items=[_out(row) for row in await prompt_library.list_prompts(req.ctx)])


@routes.add(
    "GET",
    "/prompts/{prompt_id}",
    summary="Read a prompt",
    tag="prompts",
    roles=STAFF,
    response=PromptOut,
    errors=(401, 403, 404),
)
async def get_prompt(req: ApiRequest) -> PromptOut:
    return _out(await prompt_library.get_prompt(req.ctx, req.path["prompt_id"]))


@routes.add(
    "DELETE",
    "/prompts/{prompt_id}",
    summary="Delete a prompt nothing uses",
    tag="prompts",
    roles=ADMIN,
    status=204,
    errors=(401, 403, 404, 409),
)
async def delete_prompt(req: ApiRequest) -> None:
    await prompt_library.delete_prompt(req.ctx, req.path["prompt_id"])


async def upload_prompt(request: web.Request) -> web.Response:
    """POST /prompts/upload?name=...: the raw audio file as the body (any format sox reads)."""
    ctx = request.app[CONTEXT_KEY]
    principal = await authenticated_principal(ctx, request)
    if principal.role not in ADMIN:
        raise Forbidden("only admins may upload prompts")
    name = request.query.get("name", "").strip()
    if not name or len(name) > 200:
        raise InvalidInput("name (1 to 200 characters) is required", field="name")
    row = await prompt_library.upload_prompt(ctx, name, await _upload_body(request))
    return web.json_response(text=_out(row).model_dump_json(), status=201)


async def _upload_body(request: web.Request) -> bytes:
    """The body, read only up to one byte past the limit so an oversized one is refused
    without being held in memory."""
    # content.read(n) returns what is buffered (one network chunk), not n bytes.
    data = bytearray()
    async for chunk in request.content.iter_chunked(64 * 1024):
        data += chunk
        if len(data) > prompt_library.MAX_UPLOAD_BYTES:
            break
    return bytes(data)


async def prompt_audio(request: web.Request) -> web.StreamResponse:
    """GET /prompts/{prompt_id}/audio: the WAV the media workers play."""
    ctx = request.app[CONTEXT_KEY]
    principal = await authenticated_principal(ctx, request)
    if principal.role not in STAFF:
        raise Forbidden("only admins and supervisors may download prompts")
    row = await prompt_library.get_prompt(ctx, path_ids(request)["prompt_id"])
    return web.FileResponse(
        prompt_library.prompt_file(ctx, row), headers={"Content-Type": "audio/wav"}
    )


def install_audio_routes(app: web.Application) -> None:
    app.router.add_post(API_PREFIX + "/prompts/upload", upload_prompt)
    app.router.add_get(API_PREFIX + r"/prompts/{prompt_id:\d+}/audio", prompt_audio)


_PROMPT_SCHEMA = {"$ref": "#/components/schemas/PromptOut"}
OPENAPI_PATHS: dict[str, Any] = {
    API_PREFIX + "/prompts/upload": {
        "post": {
            "summary": "Upload an audio prompt",
            "tags": ["prompts"],
            "operationId": "upload_prompt",
            "description": "Roles: admin. The body is the audio file (WAV, MP3, FLAC, ... as "
            "sox reads it, up to 20 MB and 10 minutes); it is converted to 8 kHz mono 16-bit.",
            "security": [{"bearer": []}],
            "parameters": [
                {"name": "name", "in": "query", "required": True, "schema": {"type": "string"}}
            ],
            "requestBody": {
                "required": True,
                "content": {
                    kind: {"schema": {"type": "string", "format": "binary"}}
                    for kind in ("audio/wav", "audio/mpeg", "application/octet-stream")
                },
            },
            "responses": {
                "201": {
                    "description": "Stored",
                    "content": {"application/json": {"schema": _PROMPT_SCHEMA}},
                },
                "401": {"description": "Missing or unknown token"},
                "403": {"description": "Not an admin"},
                "422": {"description": "Not audio, empty, too long or too large"},
            },
        }
    },
    API_PREFIX + "/prompts/{prompt_id}/audio": wav_download(
        summary="Download a prompt's WAV",
        tag="prompts",
        operation_id="prompt_audio",
        roles="admin, supervisor",
        id_name="prompt_id",
        errors={"404": "No such prompt"},
    ),
}
