"""Calls resource: the call detail records, filtered and paginated."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from api.routing import STAFF, ApiRequest, RouteTable
from core.sql_bounds import Count, Id, UtcInstant
from ivr.cdr import CallFilter, Direction, Disposition, get_call, list_calls

routes = RouteTable()


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
        started_before=query.started_before,
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
