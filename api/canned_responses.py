"""Canned responses resource: shared reply texts by category; {customer_name} and
{agent_name} are filled in when an agent sends one."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints

from api.routing import ANY_ROLE, STAFF, ApiRequest, RouteTable
from chat import canned_responses
from core.errors import InvalidInput

routes = RouteTable()

Category = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=10000)]


class CannedResponseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    category: Category
    title: Title
    text: Text


class CannedResponsePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    category: Category | None = None
    title: Title | None = None
    text: Text | None = None


class CannedResponseOut(CannedResponseIn):
    id: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, response: canned_responses.CannedResponse) -> CannedResponseOut:
        return cls(id=response.id, category=response.category, title=response.title,
                   text=response.text, created_at=response.created_at,
                   updated_at=response.updated_at)  # fmt: skip


class CannedResponseList(BaseModel):
    items: list[CannedResponseOut]


class CannedResponseQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    category: str | None = None


@routes.add(
    "POST", "/canned-responses", summary="Create a canned response", tag="chat", roles=STAFF,
    body=CannedResponseIn, response=CannedResponseOut, status=201, errors=(401, 403, 422),
)  # fmt: skip
async def create_canned_response(req: ApiRequest) -> CannedResponseOut:
    body: CannedResponseIn = req.body
    made = await canned_responses.create(req.ctx, body.category, body.title, body.text)
    return CannedResponseOut.of(made)


@routes.add(
    "GET", "/canned-responses", summary="List canned responses", tag="chat", roles=ANY_ROLE,
    query=CannedResponseQuery, response=CannedResponseList, errors=(401, 422),
)  # fmt: skip
async def list_canned_responses(req: ApiRequest) -> CannedResponseList:
    query: CannedResponseQuery = req.query
    found = await canned_responses.list_all(req.ctx, query.category)
    return CannedResponseList(items=[CannedResponseOut.of(r) for r in found])


@routes.add(
    "GET", "/canned-responses/{response_id}", summary="Read a canned response", tag="chat",
    roles=ANY_ROLE, response=CannedResponseOut, errors=(401, 404),
)  # fmt: skip
async def get_canned_response(req: ApiRequest) -> CannedResponseOut:
    return CannedResponseOut.of(await canned_responses.get(req.ctx, req.path["response_id"]))


@routes.add(
    "PATCH", "/canned-responses/{response_id}", summary="Change a canned response", tag="chat",
    roles=STAFF, body=CannedResponsePatch, response=CannedResponseOut,
    errors=(401, 403, 404, 422),
)  # fmt: skip
async def patch_canned_response(req: ApiRequest) -> CannedResponseOut:
    body: CannedResponsePatch = req.body
    changes: dict[str, str] = {}
    for name in body.model_fields_set:
        value = getattr(body, name)
        if value is None:
            raise InvalidInput(f"{name} cannot be null", field=name)
        changes[name] = value
    changed = await canned_responses.update(req.ctx, req.path["response_id"], changes)
    return CannedResponseOut.of(changed)


@routes.add(
    "DELETE", "/canned-responses/{response_id}", summary="Delete a canned response",
    tag="chat", roles=STAFF, status=204, errors=(401, 403, 404),
)  # fmt: skip
async def delete_canned_response(req: ApiRequest) -> None:
    await canned_responses.remove(req.ctx, req.path["response_id"])
