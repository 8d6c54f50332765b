"""Health: is the service up, can it reach its database and Redis, is the trunk registered."""

from __future__ import annotations

from importlib.metadata import version
from typing import Literal

from aiohttp import web
from pydantic import BaseModel
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from api.routing import ApiRequest, RouteTable
from pbx.kamailio import KamailioRpc
from pbx.provider_registration import RegistrationState, registration_state

routes = RouteTable()
# The edge's JSON-RPC client, which knows the registration at the provider.
EDGE_KEY = web.AppKey("edge", KamailioRpc)

Check = Literal["ok", "failing"]


class HealthChecks(BaseModel):
    database: Check
    redis: Check


class Health(BaseModel):
    # degraded: a check fails, or the trunk should be registered and is not.
    status: Literal["ok", "degraded"]
    version: str
    checks: HealthChecks
    trunk_registration: RegistrationState


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
    trunk = await registration_state(req.ctx.settings.trunk, req.raw.app[EDGE_KEY])
    healthy = database == "ok" and redis == "ok" and trunk is not RegistrationState.FAILED
    return Health(
        status="ok" if healthy else "degraded",
        version=version("pbx"),
        checks=HealthChecks(database=database, redis=redis),
        trunk_registration=trunk,
    )
