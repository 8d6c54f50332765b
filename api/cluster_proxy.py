"""A cluster's standby nodes pass API requests on to the active node (controller.seat), so
that any node answers for the cluster while one process decides: the active node's
controller hears every change in-process, as on a single node. A standby serves only what
is its own: its health, its metrics, the console's files and the event stream (events reach
every node through Redis).

Each node advertises its API in Redis. A request passed on carries the cluster's secret
and the client's address, which the active node trusts only with that secret (the sign-in
guard counts failures per client address, not per forwarding node)."""

from __future__ import annotations

import hmac
from collections.abc import Mapping

import aiohttp
import structlog
from aiohttp import web
from multidict import CIMultiDict
from redis.asyncio import Redis
from redis.exceptions import RedisError

from api.routing import API_PREFIX
from controller.seat import ControllerSeat, Role
from core.errors import Unavailable

log = structlog.get_logger(__name__)

APIS_KEY = "pbx:cluster:apis"
SECRET_HEADER = "X-PBX-Cluster-Secret"
CLIENT_HEADER = "X-PBX-Client-Address"
# Served by every node itself (paths below API_PREFIX).
LOCAL_PATHS = frozenset({API_PREFIX + "/health", API_PREFIX + "/events"})
# Hop-by-hop headers (RFC 9110 7.6.1) and those aiohttp sets for the new message.
_NOT_PASSED_ON = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "host", "content-length",
    SECRET_HEADER.lower(), CLIENT_HEADER.lower(),
})  # fmt: skip
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 30.0
CHUNK_BYTES = 64 * 1024


async def advertise(redis: Redis, node: str, api_url: str) -> None:
    await redis.hset(APIS_KEY, node, api_url)


def passed_on(request: web.Request, secret: str) -> web.Request:
    """The request as its client sent it, if another node of this cluster passed it on."""
    given = request.headers.get(SECRET_HEADER)
    client = request.headers.get(CLIENT_HEADER)
    if not secret or given is None or client is None:
        return request
    if not hmac.compare_digest(given.encode(), secret.encode()):
        return request
    return request.clone(remote=client)


def must_pass_on(request: web.Request, role: Role) -> bool:
    return (
        role is Role.STANDBY
        and request.path.startswith(API_PREFIX + "/")
        and request.path not in LOCAL_PATHS
    )


async def forward(
    request: web.Request, seat: ControllerSeat, redis: Redis, http: aiohttp.ClientSession,
    secret: str,
) -> web.StreamResponse:  # fmt: skip
    """Send the request to the active node and relay its answer (503 `unavailable` when no
    node is active, or it cannot be reached)."""
    if request.headers.get(SECRET_HEADER) is not None:
        # Passed on once already, to a node that no longer runs the controller.
        raise Unavailable("the node this was passed on to stands by now: retry", field=None)
    active = await seat.active_node()
    try:
        api_url = await redis.hget(APIS_KEY, active) if active is not None else None
    except RedisError:
        api_url = None
    if api_url is None:
        raise Unavailable("no node runs the controller right now: retry in a few seconds")
    base = api_url.decode() if isinstance(api_url, bytes) else str(api_url)
    headers = _passable(request.headers)
    headers[SECRET_HEADER] = secret
    headers[CLIENT_HEADER] = request.remote or "unknown"
    target = base.rstrip("/") + request.rel_url.path_qs
    try:
        # Streamed both ways: an upload (prompts take 20 MiB) or a recording passes through
        # without being held here, and the active node applies its own size limits.
        async with http.request(
            request.method, target, headers=headers,
            data=request.content if request.body_exists else None, allow_redirects=False,
            timeout=aiohttp.ClientTimeout(sock_connect=CONNECT_TIMEOUT_S, sock_read=READ_TIMEOUT_S),
        ) as reply:  # fmt: skip
            relayed = _passable(reply.headers)  # every Set-Cookie, each on its own
            relayed.popall("Content-Encoding", None)  # aiohttp decoded the body
            response = web.StreamResponse(status=reply.status, headers=relayed)
            await response.prepare(request)
            async for chunk in reply.content.iter_chunked(CHUNK_BYTES):
                await response.write(chunk)
            await response.write_eof()
            return response
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("cluster_forward_failed", active=active, path=request.path, error=str(exc))
        raise Unavailable(f"the active node ({active}) did not answer: retry") from exc


def _passable(headers: Mapping[str, str]) -> CIMultiDict[str]:
    return CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in _NOT_PASSED_ON)
