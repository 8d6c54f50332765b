"""Bearer-token authentication: `Authorization: Bearer <token>` (or ?token= for WebSockets)."""

from __future__ import annotations

from aiohttp import web

from core.context import ServiceContext
from core.errors import Unauthorized
from extensions.tokens import Principal, authenticate


async def authenticated_principal(ctx: ServiceContext, request: web.Request) -> Principal:
    token = _bearer_token(request)
    if token is None:
        raise Unauthorized("a bearer token is required (Authorization: Bearer <token>)")
    if not _encodable(token):
        raise Unauthorized("the token is not UTF-8 text")
    principal = await authenticate(ctx, token)
    if principal is None:
        raise Unauthorized("the token is unknown, revoked, or its user was dismissed")
    return principal


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
