"""The aiohttp application: routes, middlewares, OpenAPI, metrics, and the collaborators it owns."""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from acd.agents import wallboard as agents_presence
from acd.queues import list_queues
from api import (
    blocklist,
    business_hours,
    call_stats,
    callbacks,
    calls,
    canned_responses,
    channels,
    customers,
    dialogs,
    extensions,
    health,
    menus,
    numbers,
    presence,
    prompts,
    queues,
    sign_in,
    stats,
    tokens,
    users,
    voicemail,
    wallboard,
)
from api.cluster_proxy import advertise, forward, must_pass_on, passed_on
from api.console import install_console
from api.errors import error_middleware
from api.events import HUB_KEY, OPENAPI_PATHS, EventHub, event_stream
from api.openapi import openapi_document
from api.routing import (
    API_PREFIX,
    CONTEXT_KEY,
    CONTROLLER_KEY,
    SEAT_KEY,
    RouteTable,
    running_controller,
)
from controller.component import Controller, MediaWorkers
from controller.lease import Membership, RedisLease
from controller.plumbing import open_plumbing
from controller.seat import ControllerSeat
from controller.shared_edge import EdgeFollower
from core.context import EdgeUnavailable, PhoneRegistrations, ServiceContext
from core.db import utcnow
from core.metrics import Metrics
from core.settings import Settings
from extensions.numbering import OwnerType
from extensions.phones import count_extensions_by_holder
from ivr.voicemail import count_unheard
from pbx.kamailio import EdgeWorkerSet, dispatcher_list_path
from pbx.provider_registration import RegistrationState, registration_state

ROUTE_TABLES: list[RouteTable] = [
    health.routes, users.routes, extensions.routes, tokens.routes, numbers.routes,
    prompts.routes, calls.routes, presence.routes, queues.routes, menus.routes,
    business_hours.routes, voicemail.routes, channels.routes, dialogs.routes,
    canned_responses.routes, blocklist.routes, stats.routes, call_stats.routes,
    customers.routes, wallboard.routes, sign_in.routes, callbacks.routes,
]  # fmt: skip
MAX_BODY_BYTES = 1024 * 1024


def create_app(
    settings: Settings,
    registrations: PhoneRegistrations | None = None,
    *,
    controller: bool = True,
    media_workers: bool | MediaWorkers = True,
    clock: Callable[[], datetime] = utcnow,
) -> web.Application:
    """The app opens the shared plumbing (database, Redis, edge client) and starts the
    controller (controller.component) beside itself on start-up, and closes them on cleanup.
    `controller=False` serves the API alone; `media_workers=False` runs the controller without
    calls (chat only), `MediaWorkers` runs the call flows on workers other than forked ones
    (the in-memory twin). `clock` is what call flows decide business hours with (tests fix
    it)."""
    app = web.Application(
        middlewares=[_metrics_middleware, error_middleware, _cluster_middleware],
        client_max_size=MAX_BODY_BYTES,
    )
    metrics = Metrics()
    app[_METRICS] = metrics
    routes = [route for table in ROUTE_TABLES for route in table.routes]
    document = openapi_document(
        routes,
        extra_paths={
            **OPENAPI_PATHS,
            **prompts.OPENAPI_PATHS,
            **voicemail.OPENAPI_PATHS,
            **calls.OPENAPI_PATHS,
        },
    )

    async def openapi(_request: web.Request) -> web.Response:
        return web.json_response(document)

    async def metrics_endpoint(request: web.Request) -> web.Response:
        counts = await count_extensions_by_holder(request.app[CONTEXT_KEY])
        for holder in OwnerType:
            metrics.extensions_assigned.labels(holder=holder.value).set(counts.get(holder, 0))
        metrics.voicemail_unheard.set(await count_unheard(request.app[CONTEXT_KEY]))
        running = running_controller(request.app)
        pool = running.pool_figures() if running is not None else None
        if pool is not None:
            metrics.workers_alive.set(pool.workers_alive)
            metrics.worker_legs_capacity.set(pool.legs_capacity)
            metrics.worker_legs_in_use.set(pool.legs_in_use)
            metrics.spare_legs.set(pool.spare_legs)
            metrics.pool_max_workers.set(pool.max_workers)
            for worker_state, count in pool.workers_by_state.items():
                metrics.pool_workers.labels(state=worker_state.value).set(count)
        queue_figures = running.queue_figures() if running is not None else {}
        await _acd_figures(request.app[CONTEXT_KEY], queue_figures, metrics)
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
        # Whatever started is stopped in reverse order, also when a later start fails.
        async with open_plumbing(settings, metrics, registrations) as plumbing, \
                contextlib.AsyncExitStack() as started:  # fmt: skip
            app[CONTEXT_KEY] = plumbing.ctx
            app[health.EDGE_KEY] = plumbing.edge
            hub = EventHub(plumbing.ctx.redis, metrics.event_stream_clients_dropped)
            await hub.start()
            started.push_async_callback(hub.stop)
            app[HUB_KEY] = hub
            ctx = plumbing.ctx

            def make_controller(term: int = 0) -> Controller:
                return Controller(
                    ctx, plumbing.edge, media_workers=media_workers, clock=clock, term=term
                )

            running: Controller | ControllerSeat | None = None
            cluster = settings.cluster
            if controller and cluster.node:
                # One of several nodes: the controller runs while this one holds the lease.
                http = app[_CLUSTER_HTTP] = aiohttp.ClientSession()
                started.push_async_callback(http.close)
                term = cluster.lease_seconds
                follower = None
                if cluster.media_hosts and cluster.edges:  # each edge takes their calls
                    own_edge = EdgeWorkerSet(dispatcher_list_path(settings), plumbing.edge)
                    follower = EdgeFollower(own_edge, ctx.redis, metrics)
                running = app[SEAT_KEY] = ControllerSeat(
                    ctx, RedisLease(settings.redis_url, cluster.node, term),
                    Membership(settings.redis_url, cluster.node, cluster.node_index, term),
                    make_controller, term, follower,
                )  # fmt: skip
                api = settings.api
                await advertise(ctx.redis, cluster.node,
                                cluster.api_url or f"http://{api.host}:{api.port}")  # fmt: skip
            elif controller:
                running = app[CONTROLLER_KEY] = make_controller()
                metrics.controller_active.set(1)
            if running is not None:
                await running.start()
                started.push_async_callback(running.stop)
            yield

    app.cleanup_ctx.append(collaborators)
    for table in ROUTE_TABLES:
        table.install(app)
    app.router.add_get(API_PREFIX + "/openapi.json", openapi)
    app.router.add_get(API_PREFIX + "/events", event_stream)
    prompts.install_audio_routes(app)
    voicemail.install_audio_routes(app)
    calls.install_audio_routes(app)
    install_console(app)
    app.router.add_get("/metrics", metrics_endpoint)
    return app


_METRICS = web.AppKey("metrics", Metrics)
# A cluster's node: the client that passes requests on to the active node.
_CLUSTER_HTTP = web.AppKey("cluster_http", aiohttp.ClientSession)


@web.middleware
async def _cluster_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """On a cluster's node: a request passed on by another node is the client's; a standby
    passes API requests on to the active node (api.cluster_proxy)."""
    seat = request.app.get(SEAT_KEY)
    if seat is None:
        return await handler(request)
    ctx = request.app[CONTEXT_KEY]
    secret = ctx.settings.cluster.secret
    request = passed_on(request, secret)
    if must_pass_on(request, seat.role):
        return await forward(request, seat, ctx.redis, request.app[_CLUSTER_HTTP], secret)
    return await handler(request)


async def _acd_figures(
    ctx: ServiceContext, queue_figures: dict[int, tuple[int, float]], metrics: Metrics
) -> None:
    """Gauges read at scrape time: agents per status, callers waiting per queue."""
    counts: Counter[tuple[str, str]] = Counter(
        (entry.presence.status.value, entry.presence.shown_activity.value)
        for entry in await agents_presence(ctx)
    )
    metrics.agents_by_status.clear()
    for (status, activity), count in counts.items():
        metrics.agents_by_status.labels(status=status, activity=activity).set(count)
    metrics.queue_waiting.clear()
    metrics.queue_longest_wait.clear()
    for queue in await list_queues(ctx):
        waiting, longest = queue_figures.get(queue.id, (0, 0.0))
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
