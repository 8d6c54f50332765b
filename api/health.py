"""Health: is the service up, and can it reach its database and Redis."""

from __future__ import annotations

from importlib.metadata import version
from typing import Literal

from pydantic import BaseModel
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from api.routing import ApiRequest, RouteTable

routes = RouteTable()

Check = Literal["ok", "failing"]


class HealthChecks(BaseModel):
    database: Check
    redis: Check


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    version: str
    checks: HealthChecks


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
    healthy = database == "ok" and redis == "ok"
    return Health(
        status="ok" if healthy else "degraded",
        version=version("pbx"),
        checks=HealthChecks(database=database, redis=redis),
    )
