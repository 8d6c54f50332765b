"""Authentication: `Authorization: Bearer <token>` (or ?token= for WebSockets) for scripts, or
the session cookie of a person signed in to the web console (POST /session)."""

from __future__ import annotations

from aiohttp import web

from core.context import ServiceContext
from core.errors import Forbidden, Unauthorized
from extensions.sessions import CSRF_HEADER, SESSION_COOKIE, csrf_token_matches, signed_in
from extensions.tokens import Principal, authenticate

# Methods that change nothing: a cookie alone may carry them.
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class CsrfFailed(Forbidden):
    code = "csrf_failed"


class CrossOrigin(Forbidden):
    code = "cross_origin"


def same_origin(request: web.Request) -> bool:
    """Whether the page that made the browser send this request is ours (browsers name it in
    Origin on every POST and WebSocket handshake; scripts send none)."""
    origin = request.headers.get("Origin")
    return origin is None or origin.partition("://")[2] == request.host


async def authenticated_principal(ctx: ServiceContext, request: web.Request) -> Principal:
    token = _bearer_token(request)
    if token is None:
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie:
            return await _session_principal(ctx, request, cookie)
        raise Unauthorized(
            "a bearer token (Authorization: Bearer <token>) or a session cookie (POST /session)"
            " is required"
        )
    if not _encodable(token):
        raise Unauthorized("the token is not UTF-8 text")
    principal = await authenticate(ctx, token)
    if principal is None:
        raise Unauthorized("the token is unknown, revoked, or its user was dismissed")
    return principal


async def _session_principal(ctx: ServiceContext, request: web.Request, cookie: str) -> Principal:
    if not _encodable(cookie):
        raise Unauthorized("the session cookie is not UTF-8 text")
    signed = await signed_in(ctx, cookie)
    if signed is None:
        raise Unauthorized("the session has ended (signed out, expired, or its user dismissed)")
    if request.headers.get("Upgrade", "").lower() == "websocket" and not same_origin(request):
        # No CSRF header on a handshake: a page of another origin on this host (another port)
        # would otherwise read the person's events with their cookie.
        raise CrossOrigin("the event stream is opened with a session only from the console")
    if request.method not in _SAFE_METHODS:
        # A browser sends the cookie with a request another site makes it send; only our own
        # page knows the CSRF token to add.
        sent = request.headers.get(CSRF_HEADER)
        if sent is None or not _encodable(sent) or not csrf_token_matches(cookie, sent):
            raise CsrfFailed(f"a request with the session cookie needs the {CSRF_HEADER} header"
                             " given at sign-in")  # fmt: skip
    return Principal(
        role=signed.role, user_id=signed.user_id, token_id=None, session_id=signed.session_id
    )


def _encodable(token: str) -> bool:
    # Header bytes that are not UTF-8 reach us as lone surrogates (aiohttp decodes headers
    # with surrogateescape): no token holds them, and they cannot be encoded to be hashed.
    try:
        token.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    # Browsers cannot set headers on a WebSocket handshake.
    if request.headers.get("Upgrade", "").lower() == "websocket":
        return request.query.get("token") or None
    return None
