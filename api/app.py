"""The aiohttp application: routes, middlewares, OpenAPI, metrics, and the collaborators it owns."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.asyncio import Redis

from acd.agents import recover_after_restart, wallboard
from acd.dispatcher import Dispatcher
from acd.queue_log import register_writes as register_queue_log_writes
from acd.queues import list_queues
from api import (
    blocklist,
    business_hours,
    calls,
    canned_responses,
    channels,
    dialogs,
    extensions,
    health,
    menus,
    numbers,
    presence,
    prompts,
    queues,
    stats,
    tokens,
    users,
    voicemail,
)
from api.errors import error_middleware
from api.events import HUB_KEY, OPENAPI_PATHS, EventHub, event_stream
from api.openapi import openapi_document
from api.routing import API_PREFIX, CHAT_ASSIGNER_KEY, CONTEXT_KEY, DISPATCHER_KEY, RouteTable
from chat.assigner import ChatAssigner
from chat.outbox import OutboxDelivery
from core.context import EdgeUnavailable, PhoneRegistrations, ServiceContext
from core.db import create_engine, create_session_factory, utcnow
from core.events import EventBus
from core.metrics import Metrics
from core.settings import Settings
from core.wakeups import Wakeups
from core.write_behind import WriteBehind
from extensions.numbering import OwnerType
from extensions.phones import count_extensions_by_holder
from ivr.call_recovery import close_interrupted_calls
from ivr.cdr import register_writes as register_call_writes
from ivr.flows import CallFlows, Tones
from ivr.voicemail import count_unheard
from pbx.kamailio import EdgeWorkerSet, KamailioRpc, dispatcher_list_path
from pbx.pool import WorkerPool
from pbx.provider_registration import RegistrationState, registration_state
from pbx.tones import make_beep_tone, make_hold_music, make_ringback_tone

ROUTE_TABLES: list[RouteTable] = [
    health.routes, users.routes, extensions.routes, tokens.routes, numbers.routes,
    prompts.routes, calls.routes, presence.routes, queues.routes, menus.routes,
    business_hours.routes, voicemail.routes, channels.routes, dialogs.routes,
    canned_responses.routes, blocklist.routes, stats.routes,
]  # fmt: skip
MAX_BODY_BYTES = 1024 * 1024
# Under the data folder: the journal of call records and queue-log rows not yet in SQL.
WRITE_BEHIND_FOLDER = "write-behind"


def create_app(
    settings: Settings,
    registrations: PhoneRegistrations | None = None,
    *,
    media_workers: bool = True,
    clock: Callable[[], datetime] = utcnow,
) -> web.Application:
    """The app opens its database, Redis, edge clients and media workers on start-up and
    closes them on cleanup; `media_workers=False` serves the API alone. `clock` is what call
    flows decide business hours with (tests fix it)."""
    app = web.Application(
        middlewares=[_metrics_middleware, error_middleware], client_max_size=MAX_BODY_BYTES
    )
    metrics = Metrics()
    app[_METRICS] = metrics
    routes = [route for table in ROUTE_TABLES for route in table.routes]
    document = openapi_document(
        routes,
        extra_paths={**OPENAPI_PATHS, **prompts.OPENAPI_PATHS, **voicemail.OPENAPI_PATHS},
    )

    async def openapi(_request: web.Request) -> web.Response:
        return web.json_response(document)

    async def metrics_endpoint(request: web.Request) -> web.Response:
        counts = await count_extensions_by_holder(request.app[CONTEXT_KEY])
        for holder in OwnerType:
            metrics.extensions_assigned.labels(holder=holder.value).set(counts.get(holder, 0))
        metrics.voicemail_unheard.set(await count_unheard(request.app[CONTEXT_KEY]))
        pool = request.app.get(POOL_KEY)
        if pool is not None:
            metrics.workers_alive.set(pool.workers_alive)
            metrics.worker_legs_capacity.set(pool.legs_capacity)
            metrics.worker_legs_in_use.set(pool.legs_in_use)
            metrics.worker_restarts.set(pool.restarts)
            metrics.spare_legs.set(pool.spare_legs)
            metrics.pool_max_workers.set(pool.max_workers)
            for worker_state, count in pool.workers_by_state().items():
                metrics.pool_workers.labels(state=worker_state.value).set(count)
            metrics.media_timeouts.set(pool.media_timeouts)
        await _acd_figures(request.app[CONTEXT_KEY], request.app[DISPATCHER_KEY], metrics)
        edge = request.app[health.EDGE_KEY]
        try:
            metrics.edge_drops.counts = await edge.dropped_requests()
        except EdgeUnavailable:
            metrics.edge_drops.counts = None
        trunk = await registration_state(settings.trunk, edge)
        for state in RegistrationState:
            metrics.trunk_registration.labels(state=state.value).set(int(state is trunk))
        return web.Response(
            body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def collaborators(app: web.Application) -> AsyncIterator[None]:
        engine = create_engine(settings.database_url)
        sessions = create_session_factory(engine)
        redis = Redis.from_url(settings.redis_url)
        edge = KamailioRpc("127.0.0.1", settings.sip.rpc_port)
        app[health.EDGE_KEY] = edge
        wakeups = Wakeups()
        events = EventBus(redis, metrics.events_published, wakeups)
        writes = WriteBehind(settings.data_dir / WRITE_BEHIND_FOLDER, sessions, events, metrics)
        register_call_writes(writes)
        register_queue_log_writes(writes)
        app[CONTEXT_KEY] = ServiceContext(
            settings=settings,
            sessions=sessions,
            redis=redis,
            events=events,
            wakeups=wakeups,
            metrics=metrics,
            registrations=registrations or edge,
            writes=writes,
        )
        # Before any call: what the last run journaled goes to SQL, and the calls it left
        # open are closed as failed.
        await writes.start()
        await close_interrupted_calls(app[CONTEXT_KEY])
        hub = EventHub(redis, metrics.event_stream_clients_dropped)
        await hub.start()
        app[HUB_KEY] = hub
        # Chat needs no media: its assigner and reply delivery run with or without workers.
        chat_assigner = ChatAssigner(app[CONTEXT_KEY])
        app[CHAT_ASSIGNER_KEY] = chat_assigner
        await chat_assigner.start()
        # One capacity model: enough open chat dialogs keep calls away (chat.block_calls_at),
        # asked of the assigner's memory on every dispatch round.
        dispatcher = Dispatcher(app[CONTEXT_KEY], chat_assigner.blocked_for_calls)
        app[DISPATCHER_KEY] = dispatcher
        outbox = OutboxDelivery(app[CONTEXT_KEY])
        outbox.start()
        pool = None
        if media_workers:
            # Calls do not outlive the service: whatever "ringing" or "in call" Redis
            # remembers from the last run is stale.
            await recover_after_restart(app[CONTEXT_KEY])
            dispatcher.start()
            pool = await _start_media_workers(app[CONTEXT_KEY], edge, dispatcher, clock)
            app[POOL_KEY] = pool
        yield
        if pool is not None:
            await pool.stop()
        await dispatcher.stop()
        await outbox.stop()
        await chat_assigner.stop()
        await hub.stop()
        # After every producer of rows has stopped, before Redis (its events) and the engine.
        await writes.stop()
        await edge.close()
        await redis.aclose()
        await sessions.dispose()
        await engine.dispose()

    app.cleanup_ctx.append(collaborators)
    for table in ROUTE_TABLES:
        table.install(app)
    app.router.add_get(API_PREFIX + "/openapi.json", openapi)
    app.router.add_get(API_PREFIX + "/events", event_stream)
    prompts.install_audio_routes(app)
    voicemail.install_audio_routes(app)
    app.router.add_get("/metrics", metrics_endpoint)
    return app


_METRICS = web.AppKey("metrics", Metrics)
POOL_KEY = web.AppKey("worker_pool", WorkerPool)


async def _start_media_workers(
    ctx: ServiceContext, edge: KamailioRpc, dispatcher: Dispatcher, clock: Callable[[], datetime]
) -> WorkerPool:
    settings = ctx.settings
    folder = settings.data_dir / "tones"
    tones = Tones(
        ringback=await asyncio.to_thread(make_ringback_tone, folder),
        hold_music=await asyncio.to_thread(make_hold_music, folder),
        beep=await asyncio.to_thread(make_beep_tone, folder),
    )
    flows = CallFlows(ctx, edge, dispatcher, tones, clock=clock)
    pool = WorkerPool(
        settings.workers,
        # Kamailio sends every INVITE from its SIP socket; nothing else may reach a worker.
        trusted=[f"{settings.sip.host}:{settings.sip.port}"],
        on_inbound=flows.handle,
        edge=EdgeWorkerSet(dispatcher_list_path(settings), edge),
        metrics=ctx.metrics,
        trunk_username=settings.trunk.username,
        trunk_password=settings.trunk.password,
    )
    await pool.start()
    return pool


async def _acd_figures(ctx: ServiceContext, dispatcher: Dispatcher, metrics: Metrics) -> None:
    """Gauges read at scrape time: agents per status, callers waiting per queue."""
    counts: Counter[tuple[str, str]] = Counter(
        (entry.presence.status.value, entry.presence.shown_activity.value)
        for entry in await wallboard(ctx)
    )
    metrics.agents_by_status.clear()
    for (status, activity), count in counts.items():
        metrics.agents_by_status.labels(status=status, activity=activity).set(count)
    metrics.queue_waiting.clear()
    metrics.queue_longest_wait.clear()
    for queue in await list_queues(ctx):
        waiting, longest = dispatcher.queue_figures().get(queue.id, (0, 0.0))
        metrics.queue_waiting.labels(queue=str(queue.id)).set(waiting)
        metrics.queue_longest_wait.labels(queue=str(queue.id)).set(longest)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    response = await handler(request)
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    metrics = request.app[_METRICS]
    metrics.http_requests.labels(request.method, route, str(response.status)).inc()
    metrics.http_duration.labels(request.method, route).observe(time.perf_counter() - started)
    return response
