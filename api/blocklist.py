"""Blocklist resource: numbers, addresses and @domains whose messages and calls are refused or
marked spam."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from api.routing import ADMIN, STAFF, ApiRequest, RouteTable
from chat import blocklist
from chat.blocklist import Action

routes = RouteTable()

Entry = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=320)]


class BlocklistIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # A number (+49 30 1234, punctuation dropped), an address (a@example.com) or a domain
    # (@example.com: every address in it).
    entry: Entry = Field(examples=["@spam.example"])
    # refuse: messages get 403 `blocked`, calls 603 Decline; spam: messages land in a closed
    # dialog marked spam (calls go through).
    action: Action = Action.REFUSE
    note: Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)] | None = None


class BlocklistOut(BaseModel):
    id: int
    entry: str
    action: Action
    note: str | None
    created_at: datetime

    @classmethod
    def of(cls, entry: blocklist.BlocklistEntry) -> BlocklistOut:
        return cls(id=entry.id, entry=entry.entry, action=entry.action, note=entry.note,
                   created_at=entry.created_at)  # fmt: skip


class BlocklistList(BaseModel):
    items: list[BlocklistOut]


@routes.add(
    "POST", "/blocklist", summary="Block a number, address or domain", tag="chat", roles=ADMIN,
    body=BlocklistIn, response=BlocklistOut, status=201, errors=(401, 403, 409, 422),
)  # fmt: skip
async def add_blocklist_entry(req: ApiRequest) -> BlocklistOut:
    body: BlocklistIn = req.body
    return BlocklistOut.of(await blocklist.add_entry(req.ctx, body.entry, body.action, body.note))


@routes.add(
    "GET", "/blocklist", summary="The blocklist", tag="chat", roles=STAFF,
    response=BlocklistList, errors=(401, 403),
)  # fmt: skip
async def list_blocklist(req: ApiRequest) -> BlocklistList:
    return BlocklistList(items=[BlocklistOut.of(e) for e in await blocklist.list_entries(req.ctx)])


@routes.add(
    "DELETE", "/blocklist/{entry_id}", summary="Unblock", tag="chat", roles=ADMIN, status=204,
    errors=(401, 403, 404),
)  # fmt: skip
async def remove_blocklist_entry(req: ApiRequest) -> None:
    await blocklist.remove_entry(req.ctx, req.path["entry_id"])
