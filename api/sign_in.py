"""People in the web console: sign in (/session), who is signed in (/me), their own password."""

from __future__ import annotations

from typing import Annotated, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, StringConstraints

from api.auth import CrossOrigin, same_origin
from api.routing import ANY_ROLE, ApiRequest, RouteTable
from api.users import UserOut
from core.errors import Conflict, Forbidden
from extensions import sign_in, users
from extensions.passwords import MAX_PASSWORD_LENGTH
from extensions.roles import Role
from extensions.sessions import SESSION_COOKIE, SignedIn, csrf_token_for, end_session
from extensions.tokens import Principal

routes = RouteTable()

Password = Annotated[str, StringConstraints(min_length=1, max_length=MAX_PASSWORD_LENGTH)]


class SignInBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=320)]
    password: Password


class SignedInOut(BaseModel):
    """The session itself is the HttpOnly cookie; `csrf_token` goes in the X-CSRF-Token header
    of every request that changes something."""

    user: UserOut
    role: Role
    csrf_token: str


class MeOut(BaseModel):
    """`user` is null for PBX_ADMIN_TOKEN; `csrf_token` is given only to a session."""

    user: UserOut | None
    role: Role
    via: Literal["session", "token"]
    csrf_token: str | None


class OwnPasswordChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    current_password: Password
    new_password: Password


class NotAUser(Forbidden):
    code = "not_a_user"


class NotASession(Conflict):
    code = "not_a_session"


@routes.add(
    "POST",
    "/session",
    summary="Sign in with email and password",
    tag="sign-in",
    roles=None,
    body=SignInBody,
    response=SignedInOut,
    errors=(401, 403, 422, 429),
)
async def create_session(req: ApiRequest) -> SignedInOut:
    _refuse_other_origins(req.raw)
    body: SignInBody = req.body
    person = await sign_in.sign_in(
        req.ctx, body.email, body.password, address=req.raw.remote or "unknown"
    )
    secure = req.ctx.settings.sign_in.secure_cookie

    def set_cookie(response: web.StreamResponse) -> None:
        # No Max-Age: the browser drops it when it closes; the server ends it when idle.
        response.set_cookie(
            SESSION_COOKIE, person.token, path="/", httponly=True, samesite="Strict", secure=secure
        )

    req.response_hooks.append(set_cookie)
    return SignedInOut(
        user=UserOut.of(person.user), role=person.user.role, csrf_token=person.csrf_token
    )


def _refuse_other_origins(request: web.Request) -> None:
    """A page on another site could post a form here and sign the browser in to an account of
    its choosing; browsers name the page's origin on every POST, scripts send none."""
    if not same_origin(request):
        raise CrossOrigin("sign-in is accepted only from the console's own origin")


@routes.add(
    "DELETE",
    "/session",
    summary="Sign out",
    tag="sign-in",
    roles=ANY_ROLE,
    status=204,
    errors=(401, 403, 409),
)
async def delete_session(req: ApiRequest) -> None:
    principal = _person(req.principal)
    if principal.session_id is None:
        raise NotASession("this request carries a bearer token, not a session cookie")
    assert principal.user_id is not None
    await end_session(
        req.ctx,
        SignedIn(session_id=principal.session_id, user_id=principal.user_id, role=principal.role),
    )
    req.response_hooks.append(lambda response: response.del_cookie(SESSION_COOKIE, path="/"))


@routes.add(
    "GET",
    "/me",
    summary="Who is signed in",
    tag="sign-in",
    roles=ANY_ROLE,
    response=MeOut,
    errors=(401,),
)
async def get_me(req: ApiRequest) -> MeOut:
    principal = _person(req.principal)
    user = None
    if principal.user_id is not None:
        user = UserOut.of(await users.get_user(req.ctx, principal.user_id))
    if principal.session_id is None:
        return MeOut(user=user, role=principal.role, via="token", csrf_token=None)
    # The page that reloads learns its CSRF token again from its cookie.
    cookie = req.raw.cookies[SESSION_COOKIE]
    return MeOut(user=user, role=principal.role, via="session", csrf_token=csrf_token_for(cookie))


@routes.add(
    "PUT",
    "/me/password",
    summary="Change your own password",
    tag="sign-in",
    roles=ANY_ROLE,
    body=OwnPasswordChange,
    status=204,
    errors=(401, 403, 409, 422, 429),
)
async def change_own_password(req: ApiRequest) -> None:
    principal = _person(req.principal)
    if principal.user_id is None:
        raise NotAUser("PBX_ADMIN_TOKEN belongs to no user, so it has no password")
    body: OwnPasswordChange = req.body
    await sign_in.change_own_password(
        req.ctx,
        principal.user_id,
        body.current_password,
        body.new_password,
        session_id=principal.session_id,
        address=req.raw.remote or "unknown",
    )


def _person(principal: Principal | None) -> Principal:
    # Routes with roles are authenticated before the handler runs (api.routing).
    assert principal is not None
    return principal
