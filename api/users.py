"""Users resource: /users, /users/{user_id}, each user's extension and SIP password, and the
password they sign in to the web console with."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, EmailStr, Field, StringConstraints
from sqlalchemy.ext.asyncio import AsyncSession

from acd import agents, queues
from api.routing import ADMIN, STAFF, ApiRequest, RouteTable
from chat import channels, dialogs
from core.context import ServiceContext
from core.errors import InvalidInput
from core.events import Event
from core.sql_bounds import Count
from extensions import passwords, phones, users
from extensions.numbering import EXTENSION_PATTERN
from extensions.roles import Role

routes = RouteTable()

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
ExtensionNumber = Annotated[str, Field(pattern=EXTENSION_PATTERN, examples=["1001"])]
WrapUpTime = Annotated[
    int,
    Field(
        ge=0, le=3600,
        description="Seconds of wrap-up after this agent's ACD calls, instead of the queue's "
        "(and of acd.wrap_up_time for wrap-up chosen by hand); null: the queue's.",
    ),
]  # fmt: skip


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name
    email: EmailStr | None = None
    role: Role = Role.OPERATOR
    wrap_up_time: WrapUpTime | None = None
    # Record the external calls this user talks on (both voices; internal calls never).
    record_calls: bool = False


class UserPatch(BaseModel):
    """Only the fields sent change. `"active": false` dismisses the user."""

    model_config = ConfigDict(extra="forbid")
    name: Name | None = None
    email: EmailStr | None = None
    role: Role | None = None
    active: bool | None = None
    wrap_up_time: WrapUpTime | None = None
    record_calls: bool | None = None


class UserOut(BaseModel):
    id: int
    name: str
    email: str | None
    role: Role
    active: bool
    extension: str | None
    wrap_up_time: int | None
    record_calls: bool
    created_at: datetime
    updated_at: datetime
    dismissed_at: datetime | None

    @classmethod
    def of(cls, record: users.UserRecord) -> UserOut:
        return cls.model_validate(record, from_attributes=True)


class UserList(BaseModel):
    items: list[UserOut]
    total: int
    limit: int
    offset: int


class UserListQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    active: bool | None = None
    limit: int = Field(100, ge=1, le=500)
    offset: Count = 0


class PasswordSet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Length rule (sign_in.min_password_length) checked by extensions.passwords: 422
    # weak_password.
    password: Annotated[str, StringConstraints(max_length=passwords.MAX_PASSWORD_LENGTH)]


class ExtensionAssign(BaseModel):
    model_config = ConfigDict(extra="forbid")
    extension: ExtensionNumber


class SipAccountOut(BaseModel):
    """Where and how the user's desk phone registers. `password` is shown only when issued."""

    username: str
    password: str | None
    domain: str
    registrar: str


class ExtensionAssignment(BaseModel):
    extension: str
    sip: SipAccountOut

    @classmethod
    def of(cls, account: phones.SipAccount) -> ExtensionAssignment:
        return cls(
            extension=account.username,
            sip=SipAccountOut.model_validate(account, from_attributes=True),
        )


USER_ERRORS = (401, 403, 404, 422)


async def change_user(
    ctx: ServiceContext, user_id: int, changes: users.UserChanges
) -> users.UserRecord:
    """PATCH /users/{id}, and `pbx users dismiss`: a dismissal takes the user out of the
    contact center in the same transaction, then logs their presence out."""
    bus = ctx.events

    async def out_of_the_contact_center(session: AsyncSession, user_id: int) -> list[Event]:
        # No queue offers them work, no channel gives them chats, their chats wait for others.
        return [
            *await queues.leave_every_queue(session, bus, user_id),
            *await channels.leave_every_channel(session, bus, user_id),
            *await dialogs.requeue_dialogs_of(session, bus, user_id),
        ]

    record = await users.update_user(ctx, user_id, changes, on_dismissal=out_of_the_contact_center)
    if changes.active is False:
        # After the commit (Redis is not in the transaction); logging out twice is harmless.
        await agents.log_out_dismissed(ctx, record.id)
    return record


@routes.add(
    "POST",
    "/users",
    summary="Create a user",
    tag="users",
    roles=ADMIN,
    body=UserCreate,
    response=UserOut,
    status=201,
    errors=(401, 403, 422),
)
async def create_user(req: ApiRequest) -> UserOut:
    body: UserCreate = req.body
    record = await users.create_user(
        req.ctx, name=body.name, email=body.email, role=body.role, wrap_up_time=body.wrap_up_time,
        record_calls=body.record_calls,
    )  # fmt: skip
    return UserOut.of(record)


@routes.add(
    "GET",
    "/users",
    summary="List users",
    tag="users",
    roles=STAFF,
    query=UserListQuery,
    response=UserList,
    errors=(401, 403, 422),
)
async def list_users(req: ApiRequest) -> UserList:
    query: UserListQuery = req.query
    records, total = await users.list_users(
        req.ctx, active=query.active, limit=query.limit, offset=query.offset
    )
    return UserList(
        items=[UserOut.of(r) for r in records], total=total, limit=query.limit, offset=query.offset
    )


@routes.add(
    "GET",
    "/users/{user_id}",
    summary="Read a user",
    tag="users",
    roles=STAFF,
    allow_self=True,
    response=UserOut,
    errors=(401, 403, 404),
)
async def get_user(req: ApiRequest) -> UserOut:
    return UserOut.of(await users.get_user(req.ctx, req.path["user_id"]))


@routes.add(
    "PATCH",
    "/users/{user_id}",
    summary="Update or dismiss a user",
    tag="users",
    roles=ADMIN,
    body=UserPatch,
    response=UserOut,
    errors=USER_ERRORS,
)
async def patch_user(req: ApiRequest) -> UserOut:
    body: UserPatch = req.body
    sent = body.model_fields_set
    for name in ("name", "role", "active", "record_calls"):  # email and wrap_up_time clear
        if name in sent and getattr(body, name) is None:
            raise InvalidInput(f"{name} cannot be null", field=name)
    changes = users.UserChanges(
        name=body.name,
        email=body.email,
        clear_email="email" in sent and body.email is None,
        role=body.role,
        active=body.active,
        wrap_up_time=body.wrap_up_time,
        clear_wrap_up_time="wrap_up_time" in sent and body.wrap_up_time is None,
        record_calls=body.record_calls,
    )
    record = await change_user(req.ctx, req.path["user_id"], changes)
    return UserOut.of(record)


@routes.add(
    "PUT",
    "/users/{user_id}/extension",
    summary="Assign an extension",
    tag="users",
    roles=ADMIN,
    body=ExtensionAssign,
    response=ExtensionAssignment,
    errors=(*USER_ERRORS, 409),
)
async def assign_extension(req: ApiRequest) -> ExtensionAssignment:
    body: ExtensionAssign = req.body
    account = await phones.assign_extension(req.ctx, req.path["user_id"], body.extension)
    return ExtensionAssignment.of(account)


@routes.add(
    "GET",
    "/users/{user_id}/extension",
    summary="Read a user's extension",
    tag="users",
    roles=STAFF,
    allow_self=True,
    response=ExtensionAssignment,
    errors=(401, 403, 404),
)
async def get_extension(req: ApiRequest) -> ExtensionAssignment:
    return ExtensionAssignment.of(await phones.get_sip_account(req.ctx, req.path["user_id"]))


@routes.add(
    "DELETE",
    "/users/{user_id}/extension",
    summary="Release a user's extension",
    tag="users",
    roles=ADMIN,
    status=204,
    errors=(401, 403, 404),
)
async def release_extension(req: ApiRequest) -> None:
    await phones.release_extension(req.ctx, req.path["user_id"])


@routes.add(
    "POST",
    "/users/{user_id}/sip-password",
    summary="Reset a user's SIP password",
    tag="users",
    roles=ADMIN,
    allow_self=True,
    response=ExtensionAssignment,
    errors=(401, 403, 404),
)
async def reset_sip_password(req: ApiRequest) -> ExtensionAssignment:
    return ExtensionAssignment.of(await phones.reset_sip_password(req.ctx, req.path["user_id"]))


@routes.add(
    "PUT",
    "/users/{user_id}/password",
    summary="Set a user's sign-in password",
    tag="users",
    roles=ADMIN,
    body=PasswordSet,
    status=204,
    errors=(*USER_ERRORS, 409),
)
async def set_password(req: ApiRequest) -> None:
    """The user's web-console sessions end; they sign in again with this password."""
    body: PasswordSet = req.body
    await passwords.set_password(req.ctx, req.path["user_id"], body.password)
