"""The route table: each route names its schemas and roles; they validate and feed OpenAPI."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ValidationError

from api.auth import authenticated_principal
from api.errors import (
    BodyInvalid,
    BodyTooDeep,
    HeaderInvalid,
    NumberOutOfRange,
    TextInvalid,
    validation_failed,
)
from controller.component import Controller
from controller.seat import ControllerSeat
from core.context import ServiceContext
from core.errors import Forbidden
from core.sql_bounds import SQL_INT_MAX
from extensions.roles import Role
from extensions.tokens import Principal

API_PREFIX = "/api/v1"
CONTEXT_KEY = web.AppKey("context", ServiceContext)
# Absent when the app serves the API alone, or is a cluster's node (SEAT_KEY instead).
CONTROLLER_KEY = web.AppKey("controller", Controller)
# A cluster's node: the controller runs here while this node holds the lease.
SEAT_KEY = web.AppKey("seat", ControllerSeat)
_PATH_PARAM = re.compile(r"\{(\w+)\}")
# JSON nests at most this deep. Our deepest body (business hours: weekly -> day -> span) has
# four levels; json.loads and pydantic recurse once per level, and 1,000 levels raised
# RecursionError, a 500.
MAX_BODY_DEPTH = 32

ANY_ROLE = frozenset(Role)
STAFF = frozenset({Role.ADMIN, Role.SUPERVISOR})
ADMIN = frozenset({Role.ADMIN})


@dataclass
class ApiRequest:
    """What a handler needs: validated input, the caller, and the service context."""

    ctx: ServiceContext
    principal: Principal | None
    path: dict[str, int]
    body: Any
    query: Any
    raw: web.Request
    # Applied to the response before it leaves (a handler setting or clearing a cookie).
    response_hooks: list[Callable[[web.StreamResponse], None]] = field(default_factory=list)


Handler = Callable[[ApiRequest], Awaitable[BaseModel | None]]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    roles: frozenset[Role] | None  # None: no token needed
    # An operator may act on their own user id ({user_id} in the path) despite `roles`.
    allow_self: bool = False
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    # Request headers the handler requires (documented as OpenAPI header parameters).
    headers: tuple[str, ...] = ()
    status: int = 200
    errors: tuple[int, ...] = ()


@dataclass
class RouteTable:
    routes: list[Route] = field(default_factory=list)

    def add(self, method: str, path: str, **options: Any) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.routes.append(Route(method=method, path=path, handler=handler, **options))
            return handler

        return register

    def install(self, app: web.Application) -> None:
        for route in self.routes:
            # Ids are digits only, so /users/abc is a 404, never a parse error downstream;
            # an id too large for SQL is a 422 (path_ids).
            pattern = _PATH_PARAM.sub(r"{\1:\\d+}", API_PREFIX + route.path)
            app.router.add_route(route.method, pattern, _endpoint(route))


def _endpoint(route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def endpoint(request: web.Request) -> web.StreamResponse:
        ctx = request.app[CONTEXT_KEY]
        principal = None
        if route.roles is not None:
            principal = await authenticated_principal(ctx, request)
        path = path_ids(request)
        if principal is not None:
            _authorize(route, principal, path)
        _check_headers(route, request)
        api_request = ApiRequest(
            ctx=ctx,
            principal=principal,
            path=path,
            body=await _parse_body(route, request),
            query=_parse_query(route, request),
            raw=request,
        )
        result = await route.handler(api_request)
        response = (
            web.Response(status=204 if route.status == 200 else route.status)
            if result is None
            else web.json_response(
                text=result.model_dump_json(), status=route.status, content_type="application/json"
            )
        )
        for hook in api_request.response_hooks:
            hook(response)
        return response

    return endpoint


def _authorize(route: Route, principal: Principal, path: dict[str, int]) -> None:
    assert route.roles is not None
    if principal.role in route.roles:
        return
    if (
        route.allow_self
        and principal.user_id is not None
        and path.get("user_id") == principal.user_id
    ):
        return
    raise Forbidden(f"role {principal.role.value} may not {route.summary.lower()}")


def path_ids(request: web.Request) -> dict[str, int]:
    """The ids in the path (digits, by the route's pattern); 422 beyond a SQL integer."""
    return {name: sql_integer(text, name) for name, text in request.match_info.items()}


def sql_integer(digits: str, field: str) -> int:
    """A decimal digit string as an int a SQL column holds, else NumberOutOfRange."""
    # Checked on the length first: int() refuses strings over 4,300 digits with ValueError.
    significant = digits.lstrip("0") or "0"
    value = int(significant) if len(significant) <= len(str(SQL_INT_MAX)) else None
    if value is None or value > SQL_INT_MAX:
        raise NumberOutOfRange(
            f"{field}: {digits[:24]}{'...' if len(digits) > 24 else ''} is beyond a signed"
            f" SQL integer (at most {SQL_INT_MAX})",
            field=field,
        )
    return value


def _check_headers(route: Route, request: web.Request) -> None:
    # aiohttp hands header bytes that are not UTF-8 over as lone surrogates (surrogateescape):
    # no secret or token is made of them, and they cannot be encoded to compare.
    for name in route.headers:
        value = request.headers.get(name)
        if value is not None and not _is_text(value):
            raise HeaderInvalid(f"the {name} header is not UTF-8 text", field=name)


async def _parse_body(route: Route, request: web.Request) -> BaseModel | None:
    if route.body is None:
        return None
    data = json_object(await request.read())
    try:
        return route.body.model_validate(data)
    except ValidationError as exc:
        raise validation_failed(exc) from None


def json_object(raw: bytes) -> dict[str, Any]:
    """A request body as a JSON object whose every string SQL can store, else a 422."""
    # RFC 8259 section 8.1: JSON exchanged between systems is UTF-8, whatever charset the
    # Content-Type claims (aiohttp's text() would trust it, and fail on an unknown one).
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyInvalid(f"the body is not UTF-8 (byte {exc.start} is not)") from None
    if not text.strip():
        raise BodyInvalid("the body must be a JSON object; it is empty")
    try:
        data = json.loads(text, parse_constant=_not_json)
    except json.JSONDecodeError as exc:
        raise BodyInvalid(f"the body is not valid JSON: {exc.msg} at {exc.pos}") from None
    except ValueError:
        # The one other ValueError json raises: an integer over 4,300 digits, which int()
        # refuses to convert (CPython's guard against quadratic parsing).
        raise NumberOutOfRange("the body holds an integer of over 4,300 digits") from None
    except RecursionError:
        raise BodyTooDeep(f"the body nests deeper than {MAX_BODY_DEPTH} levels") from None
    if not isinstance(data, dict):
        raise BodyInvalid("the body must be a JSON object")
    _check_values(data)
    return data


def _not_json(constant: str) -> Any:
    # Python's json accepts NaN and Infinity; RFC 8259 has no such numbers.
    raise BodyInvalid(f"the body is not valid JSON: {constant} is not a JSON value")


def _check_values(data: dict[str, Any]) -> None:
    """Nesting, numbers and strings of a parsed body, iteratively (no recursion to exhaust)."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(data, ())]
    while stack:
        value, where = stack.pop()
        if isinstance(value, str):
            _check_text(value, where)
        elif isinstance(value, float) and not math.isfinite(value):
            # A literal beyond a double (1e400) parses as infinity.
            field = _field(where)
            raise NumberOutOfRange(f"{field}: the number is beyond a 64-bit float", field=field)
        elif isinstance(value, dict | list):
            if len(where) >= MAX_BODY_DEPTH:
                raise BodyTooDeep(
                    f"the body nests deeper than {MAX_BODY_DEPTH} levels", field=_field(where)
                )
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, child in items:
                if isinstance(key, str):
                    _check_text(key, where)
                stack.append((child, (*where, key)))


def _check_text(text: str, where: tuple[str | int, ...]) -> None:
    if not _is_text(text):
        raise TextInvalid(_TEXT_PROBLEM.format(field=_field(where) or "a key"), field=_field(where))


_TEXT_PROBLEM = (
    "{field}: the text holds NUL or a lone UTF-16 surrogate (an escape such as \\ud800"
    " without its pair), which the database cannot store"
)


def _is_text(text: str) -> bool:
    # NUL: PostgreSQL's text type cannot hold it. Lone surrogates: no UTF-8 encoding exists.
    if "\x00" in text:
        return False
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _field(where: tuple[str | int, ...]) -> str | None:
    return ".".join(str(part) for part in where) or None


def _parse_query(route: Route, request: web.Request) -> BaseModel | None:
    if route.query is None:
        return None
    query = dict(request.query)
    for name, value in query.items():
        if not _is_text(value):
            raise TextInvalid(_TEXT_PROBLEM.format(field=name), field=name)
    try:
        return route.query.model_validate(query)
    except ValidationError as exc:
        raise validation_failed(exc) from None


def running_controller(app: web.Application) -> Controller | None:
    """The controller running in this process now: always on a single node, while it holds
    the lease on a cluster's node, never when the app serves the API alone."""
    seat = app.get(SEAT_KEY)
    return seat.controller if seat is not None else app.get(CONTROLLER_KEY)
