"""The live event stream: GET /api/v1/events upgrades to a WebSocket of event envelopes.

The EventHub is a pure consumer of the Redis event channel for WebSocket clients; nothing
inside the service depends on it (background work is woken in-process, see core.wakeups), so
it may drop a client that falls behind without anything else noticing."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import WSCloseCode, WSMsgType, web
from prometheus_client import Counter
from redis.asyncio import Redis
from redis.exceptions import RedisError

from api.auth import authenticated_principal
from api.event_visibility import Viewer, ends_stream, follow, may_see
from api.routing import API_PREFIX, CONTEXT_KEY, sql_integer
from chat.dialogs import agent_dialogs
from core.context import ServiceContext
from core.errors import InvalidInput
from core.events import EVENTS_CHANNEL, events_after
from extensions.phones import held_extension
from extensions.roles import Role
from extensions.tokens import Principal

log = structlog.get_logger(__name__)

# A client this far behind is cut off rather than slowing the others or growing without bound.
CLIENT_BACKLOG = 1000
REPLAY_BATCH = 500
RESUBSCRIBE_DELAY_S = 1.0


@dataclass(frozen=True)
class StreamEnd:
    """The last item of a client's queue: how its WebSocket is closed."""

    code: WSCloseCode
    reason: str


TOO_SLOW = StreamEnd(WSCloseCode.TRY_AGAIN_LATER, "too far behind; reconnect with ?since=<last id>")
SHUTTING_DOWN = StreamEnd(WSCloseCode.GOING_AWAY, "service shutting down")

ClientQueue = asyncio.Queue[str | StreamEnd]


class EventHub:
    """One Redis subscription per process, fanned out to every open stream; each client has
    its own queue of at most CLIENT_BACKLOG events."""

    def __init__(self, redis: Redis, dropped_clients: Counter) -> None:
        self._redis = redis
        self._dropped_clients = dropped_clients
        # Each client's queue, with who it is for the log.
        self._clients: dict[ClientQueue, str] = {}
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
            _end(queue, SHUTTING_DOWN)
        self._clients.clear()

    @property
    def clients(self) -> int:
        """Streams subscribed now."""
        return len(self._clients)

    def subscribe(self, client: str) -> ClientQueue:
        """`client` names the stream's owner in the log if it is dropped."""
        queue: ClientQueue = asyncio.Queue(CLIENT_BACKLOG)
        self._clients[queue] = client
        return queue

    def unsubscribe(self, queue: ClientQueue) -> None:
        self._clients.pop(queue, None)

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
        for queue, client in list(self._clients.items()):
            try:
                queue.put_nowait(text)
            except asyncio.QueueFull:
                del self._clients[queue]
                _end(queue, TOO_SLOW)
                self._dropped_clients.inc()
                log.warning("event_stream_client_dropped", client=client, backlog=CLIENT_BACKLOG)


def _end(queue: ClientQueue, end: StreamEnd) -> None:
    """Replaces what the client has not been sent yet by `end`, so it is closed at once;
    it catches up on the rest with ?since=<the last id it received>."""
    while not queue.empty():
        queue.get_nowait()
    queue.put_nowait(end)


HUB_KEY = web.AppKey("event_hub", EventHub)


async def event_stream(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CONTEXT_KEY]
    principal = await authenticated_principal(ctx, request)
    since = _since(request)
    types = {t for t in request.query.get("types", "").split(",") if t}
    hub = request.app[HUB_KEY]
    # Before the replay, so nothing falls between replay and live.
    queue = hub.subscribe(f"user {principal.user_id or '(admin token)'} at {request.remote}")
    ws = web.WebSocketResponse(heartbeat=30)
    try:
        await ws.prepare(request)
    except BaseException:
        # A plain GET (no Upgrade) fails here with 400; its queue, left subscribed, filled
        # with every event until it was dropped as a slow client (the fuzzer found 28).
        hub.unsubscribe(queue)
        raise
    ctx.metrics.websocket_clients.inc()
    sender = asyncio.create_task(_send_events(ctx, ws, queue, principal, since, types))
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
    ctx: ServiceContext,
    ws: web.WebSocketResponse,
    queue: ClientQueue,
    principal: Principal,
    since: int | None,
    types: set[str],
) -> None:
    # After subscribing, so a change in between is both in the viewer and in the queue (the
    # viewer follows an event it already reflects without harm).
    viewer = await _viewer(ctx, principal)
    last_sent = 0
    if since is not None:
        last_sent = since
        while True:
            async with ctx.sessions() as session:
                batch = await events_after(session, last_sent, REPLAY_BATCH)
            for event in batch:
                envelope = event.envelope()
                if (not types or event.type in types) and may_see(viewer, event.type, event.data):
                    await ws.send_str(json.dumps(envelope))
                viewer = follow(viewer, event.type, event.data, envelope["time"])
                last_sent = event.id
            if len(batch) < REPLAY_BATCH:
                break
    while True:
        text = await queue.get()
        if isinstance(text, StreamEnd):
            await ws.close(code=text.code, message=text.reason.encode())
            return
        envelope = json.loads(text)
        type_, data = envelope["type"], envelope["data"]
        if envelope["id"] <= last_sent:
            continue
        ended = ends_stream(viewer, principal.session_id, type_, data)
        if ended is not None:
            # Its credentials are void: what happens next is no longer theirs to see.
            await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=ended.encode())
            return
        if (not types or type_ in types) and may_see(viewer, type_, data):
            await ws.send_str(text)
        viewer = follow(viewer, type_, data, envelope["time"])


async def _viewer(ctx: ServiceContext, principal: Principal) -> Viewer:
    """An operator's share of the stream depends on their extension and dialogs now."""
    viewer = Viewer(role=principal.role, user_id=principal.user_id)
    if principal.role is not Role.OPERATOR or principal.user_id is None:
        return viewer
    extension = await held_extension(ctx, principal.user_id)
    held, offered = await agent_dialogs(ctx, principal.user_id)
    return Viewer(
        role=principal.role,
        user_id=principal.user_id,
        extension=extension[0] if extension else None,
        extension_since=extension[1] if extension else None,
        held=frozenset(held),
        offered=frozenset(offered),
    )


def _since(request: web.Request) -> int | None:
    raw = request.query.get("since")
    if raw is None:
        return None
    if not raw.isdecimal():
        raise InvalidInput("since must be an event id (a whole number)", field="since")
    return sql_integer(raw, "since")


OPENAPI_PATHS: dict[str, Any] = {
    API_PREFIX + "/events": {
        "get": {
            "summary": "Live event stream (WebSocket)",
            "tags": ["events"],
            "operationId": "event_stream",
            "description": (
                "Upgrades to a WebSocket. Each text message is one event envelope "
                '`{"v": 1, "id", "type", "time", "data"}`. Roles: any; admins and supervisors get '
                "every event, an operator only those about themselves (their user, extension, "
                "presence, forwarding, calls, ACD offers, dialogs held or offered and their "
                "messages). Pass the token as `Authorization: Bearer` or `?token=`. "
                "`since=<id>` first replays persisted events after that id; `types=a,b` "
                "filters by type (the README lists the event types). A client more than "
                f"{CLIENT_BACKLOG} events behind is closed with code 1013; it reconnects with "
                "`since=<last id received>`. The stream is closed with code 1008 when the "
                "session it was opened with ends or its user is dismissed."
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
            },
        }
    }
}
