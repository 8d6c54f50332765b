"""Tokens resource: admins mint API tokens for a user and a role."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints

from api.routing import ADMIN, ApiRequest, RouteTable
from core.sql_bounds import Id
from extensions import tokens
from extensions.roles import Role

routes = RouteTable()


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: Id
    # Defaults to the user's own role.
    role: Role | None = None
    label: Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)] = ""


class TokenOut(BaseModel):
    """`token` is shown once; only its hash is stored."""

    id: int
    token: str
    user_id: int
    role: Role
    label: str


@routes.add(
    "POST",
    "/tokens",
    summary="Issue an API token",
    tag="tokens",
    roles=ADMIN,
    body=TokenCreate,
    response=TokenOut,
    status=201,
    errors=(401, 403, 404, 409, 422),
)
async def create_token(req: ApiRequest) -> TokenOut:
    body: TokenCreate = req.body
    issued = await tokens.issue_token(
        req.ctx, user_id=body.user_id, role=body.role, label=body.label
    )
    return TokenOut.model_validate(issued, from_attributes=True)
