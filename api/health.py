"""Health: is the service up, can it reach its database, Redis and the edge, do media workers
run, is the trunk registered."""

from __future__ import annotations

from importlib.metadata import version
from typing import Literal

from aiohttp import web
from pydantic import BaseModel
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from api.routing import SEAT_KEY, ApiRequest, RouteTable, running_controller
from controller.seat import Role
from core.context import EdgeUnavailable
from pbx.capacity import WorkerState
from pbx.kamailio import KamailioRpc
from pbx.provider_registration import RegistrationState, registration_state

routes = RouteTable()
# The edge's JSON-RPC client, which knows the registration at the provider.
EDGE_KEY = web.AppKey("edge", KamailioRpc)

Check = Literal["ok", "failing"]


class HealthChecks(BaseModel):
    database: Check
    redis: Check
    # Kamailio answers its control interface.
    edge: Check
    # At least one media worker is ready (absent: the API runs without a controller or
    # without media workers).
    media_workers: Check | Literal["absent"]
    # Each media host the controller here runs its workers on ([cluster] media_hosts), by
    # address: "ok" while linked (empty: none, or the controller runs on another node).
    media_hosts: dict[str, Check]


class ControllerState(BaseModel):
    # single: no cluster, the controller runs here; active or standby: this node's part in
    # a cluster ([cluster] node), by the lease in Redis.
    role: Role
    node: str | None
    # The node that holds the lease now (null on a single node, or while none holds it).
    active_node: str | None


class Health(BaseModel):
    # degraded: a check fails, or the trunk should be registered and is not.
    status: Literal["ok", "degraded"]
    version: str
    checks: HealthChecks
    trunk_registration: RegistrationState
    controller: ControllerState


@routes.add("GET", "/health", summary="Service health", tag="service", roles=None, response=Health)
async def health(req: ApiRequest) -> Health:
    database: Check = "ok"
    redis: Check = "ok"
    try:
        async with req.ctx.sessions() as session:
            await session.execute(text("SELECT 1"))
    except SQLAlchemyError:
        database = "failing"
    try:
        await req.ctx.redis.ping()
    except (RedisError, OSError):
        redis = "failing"
    edge_rpc = req.raw.app[EDGE_KEY]
    edge: Check = "ok"
    try:
        await edge_rpc.call("core.uptime")
    except EdgeUnavailable:
        edge = "failing"
    running = running_controller(req.raw.app)
    figures = running.pool_figures() if running is not None else None
    workers: Check | Literal["absent"] = "absent"
    if figures is not None:
        workers = "ok" if figures.workers_by_state.get(WorkerState.READY, 0) else "failing"
    trunk = await registration_state(req.ctx.settings.trunk, edge_rpc)
    hosts: dict[str, Check] = {}
    if running is not None:
        hosts = {address: "ok" if linked else "failing"
                 for address, linked in running.media_host_links().items()}  # fmt: skip
    checks = HealthChecks(
        database=database, redis=redis, edge=edge, media_workers=workers, media_hosts=hosts
    )
    healthy = (
        "failing" not in (database, redis, edge, workers, *hosts.values())
        and trunk is not RegistrationState.FAILED
    )
    return Health(
        status="ok" if healthy else "degraded",
        version=version("pbx"),
        checks=checks,
        trunk_registration=trunk,
        controller=await _controller_state(req.raw.app),
    )


async def _controller_state(app: web.Application) -> ControllerState:
    seat = app.get(SEAT_KEY)
    if seat is None:
        return ControllerState(role=Role.SINGLE, node=None, active_node=None)
    return ControllerState(role=seat.role, node=seat.node, active_node=await seat.active_node())
