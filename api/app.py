"""The aiohttp application: routes, middlewares, OpenAPI, metrics, and the collaborators it owns."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.asyncio import Redis

from api import (
    business_hours,
    calls,
    extensions,
    health,
    menus,
    numbers,
    prompts,
    tokens,
    users,
    voicemail,
)
from api.errors import error_middleware
from api.events import HUB_KEY, OPENAPI_PATHS, EventHub, event_stream
from api.openapi import openapi_document
from api.routing import API_PREFIX, CONTEXT_KEY, RouteTable
from core.context import PhoneRegistrations, ServiceContext
from core.db import create_engine, create_session_factory, utcnow
from core.events import EventBus
from core.metrics import Metrics
from core.settings import Settings
from extensions.numbering import OwnerType
from extensions.phones import count_extensions_by_holder
from ivr.flows import CallFlows
from ivr.voicemail import count_unheard
from pbx.kamailio import KamailioRpc
from pbx.pool import WorkerPool
from pbx.tones import make_beep_tone, make_ringback_tone

ROUTE_TABLES: list[RouteTable] = [
    health.routes, users.routes, extensions.routes, tokens.routes, numbers.routes,
    prompts.routes, calls.routes, menus.routes, business_hours.routes, voicemail.routes,
]  # fmt: skip
MAX_BODY_BYTES = 1024 * 1024


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
        return web.Response(
            body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def collaborators(app: web.Application) -> AsyncIterator[None]:
        engine = create_engine(settings.database_url)
        redis = Redis.from_url(settings.redis_url)
        edge = KamailioRpc("127.0.0.1", settings.sip.rpc_port)
        app[CONTEXT_KEY] = ServiceContext(
            settings=settings,
            sessions=create_session_factory(engine),
            redis=redis,
            events=EventBus(redis, metrics.events_published),
            metrics=metrics,
            registrations=registrations or edge,
        )
        hub = EventHub(redis)
        await hub.start()
        app[HUB_KEY] = hub
        pool = await _start_media_workers(app[CONTEXT_KEY], edge, clock) if media_workers else None
        if pool is not None:
            app[POOL_KEY] = pool
        yield
        if pool is not None:
            await pool.stop()
        await hub.stop()
        await edge.close()
        await redis.aclose()
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
    ctx: ServiceContext, edge: KamailioRpc, clock: Callable[[], datetime]
) -> WorkerPool:
    settings = ctx.settings
    ringback = await asyncio.to_thread(make_ringback_tone, settings.data_dir / "tones")
    beep = await asyncio.to_thread(make_beep_tone, settings.data_dir / "tones")
    flows = CallFlows(ctx, edge, ringback, beep=beep, clock=clock)
    pool = WorkerPool(
        settings.workers,
        # Kamailio sends every INVITE from its SIP socket; nothing else may reach a worker.
        trusted=[f"{settings.sip.host}:{settings.sip.port}"],
        on_inbound=flows.handle,
        trunk_username=settings.trunk.username,
        trunk_password=settings.trunk.password,
    )
    await pool.start()
    return pool


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
