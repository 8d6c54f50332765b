"""The live event stream: GET /api/v1/events upgrades to a WebSocket of event envelopes."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import structlog
from aiohttp import WSMsgType, web
from redis.asyncio import Redis
from redis.exceptions import RedisError

from api.auth import authenticated_principal
from api.routing import API_PREFIX, CONTEXT_KEY, STAFF
from core.errors import Forbidden, InvalidInput
from core.events import EVENTS_CHANNEL, events_after

log = structlog.get_logger(__name__)

# A client this far behind is cut off (close code 1013) rather than slowing the others.
CLIENT_BACKLOG = 1000
REPLAY_BATCH = 500
RESUBSCRIBE_DELAY_S = 1.0


class EventHub:
    """One Redis subscription per process, fanned out to every open stream."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._clients: set[asyncio.Queue[str | None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._pump(), name="event-hub")
        await asyncio.wait_for(self._subscribed.wait(), timeout=10)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for queue in self._clients:
            queue.put_nowait(None)

    def subscribe(self) -> asyncio.Queue[str | None]:
        queue: asyncio.Queue[str | None] = asyncio.Queue(CLIENT_BACKLOG)
        self._clients.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[str | None]) -> None:
        self._clients.discard(queue)

    async def _pump(self) -> None:
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(EVENTS_CHANNEL)
                    self._subscribed.set()
                    async for message in pubsub.listen():
                        if message["type"] == "message":
                            self._fan_out(message["data"])
            except (RedisError, OSError) as exc:
                log.error("event_hub_redis_lost", error=str(exc), retry_in=RESUBSCRIBE_DELAY_S)
                await asyncio.sleep(RESUBSCRIBE_DELAY_S)

    def _fan_out(self, data: bytes | str) -> None:
        text = data.decode() if isinstance(data, bytes) else data
        for queue in list(self._clients):
            try:
                queue.put_nowait(text)
            except asyncio.QueueFull:
                self._clients.discard(queue)
                with contextlib.suppress(asyncio.QueueFull):
                    queue.get_nowait()
                queue.put_nowait(None)


HUB_KEY = web.AppKey("event_hub", EventHub)


async def event_stream(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CONTEXT_KEY]
    principal = await authenticated_principal(ctx, request)
    if principal.role not in STAFF:
        raise Forbidden("only admins and supervisors may watch the event stream")
    since = _since(request)
    types = {t for t in request.query.get("types", "").split(",") if t}
    hub = request.app[HUB_KEY]
    queue = hub.subscribe()  # before the replay, so nothing falls between replay and live
    ws = web.WebSocketResponse(heartbeat=30)
    await ws.prepare(request)
    ctx.metrics.websocket_clients.inc()
    sender = asyncio.create_task(_send_events(ctx, ws, queue, since, types))
    try:
        async for message in ws:
            if message.type == WSMsgType.ERROR:
                break
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
        hub.unsubscribe(queue)
        ctx.metrics.websocket_clients.dec()
    return ws


async def _send_events(
    ctx: Any,
    ws: web.WebSocketResponse,
    queue: asyncio.Queue[str | None],
    since: int | None,
    types: set[str],
) -> None:
    last_sent = 0
    if since is not None:
        last_sent = since
        while True:
            async with ctx.sessions() as session:
                batch = await events_after(session, last_sent, REPLAY_BATCH)
            for event in batch:
                if not types or event.type in types:
                    await ws.send_str(json.dumps(event.envelope()))
                last_sent = event.id
            if len(batch) < REPLAY_BATCH:
                break
    while True:
        text = await queue.get()
        if text is None:
            await ws.close(code=1013, message=b"too far behind; reconnect with ?since=<last id>")
            return
        envelope = json.loads(text)
        if envelope["id"] <= last_sent or (types and envelope["type"] not in types):
            continue
        await ws.send_str(text)


def _since(request: web.Request) -> int | None:
    raw = request.query.get("since")
    if raw is None:
        return None
    if not raw.isdecimal():
        raise InvalidInput("since must be an event id (a whole number)", field="since")
    return int(raw)


OPENAPI_PATHS: dict[str, Any] = {
    API_PREFIX + "/events": {
        "get": {
            "summary": "Live event stream (WebSocket)",
            "tags": ["events"],
            "operationId": "event_stream",
            "description": (
                "Upgrades to a WebSocket. Each text message is one event envelope "
                '`{"v": 1, "id", "type", "time", "data"}`. Roles: admin, supervisor. '
                "Pass the token as `Authorization: Bearer` or `?token=`. `since=<id>` first "
                "replays persisted events after that id; `types=a,b` filters by type. Event "
                "types: user_created, user_updated, user_dismissed, extension_assigned, "
                "extension_released, sip_password_reset, token_issued."
            ),
            "security": [{"bearer": []}],
            "parameters": [
                {
                    "name": "since",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 0},
                },
                {"name": "types", "in": "query", "required": False, "schema": {"type": "string"}},
                {"name": "token", "in": "query", "required": False, "schema": {"type": "string"}},
            ],
            "responses": {
                "101": {"description": "Switching to the WebSocket protocol"},
                "401": {"description": "Missing or unknown token"},
                "403": {"description": "Role may not watch events"},
            },
        }
    }
}
