"""The single mapping from errors to HTTP answers: {"error": {"code", "message", "field"}}."""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import web
from pydantic import BaseModel, ValidationError
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError, OperationalError

from core.errors import (
    Conflict,
    DomainError,
    Forbidden,
    InvalidInput,
    NotFound,
    TooManyRequests,
    Unauthorized,
    Unavailable,
)
from core.sql_bounds import OUT_OF_RANGE, PYDANTIC_INT_TOO_LONG

log = structlog.get_logger(__name__)

STATUS_BY_ERROR: dict[type[DomainError], int] = {
    InvalidInput: 422,
    NotFound: 404,
    Conflict: 409,
    Forbidden: 403,
    Unauthorized: 401,
    TooManyRequests: 429,
    Unavailable: 503,
}
CODE_BY_HTTP_STATUS = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    """Every 4xx/5xx body. `errors` lists each invalid field when there are several."""

    code: str
    message: str
    field: str | None = None
    errors: list[ErrorDetail] | None = None
    holder: dict[str, Any] | None = None
    # With 429: the seconds until a retry may succeed (also the Retry-After header).
    retry_after: int | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class RequestInvalid(InvalidInput):
    code = "validation_error"


class NumberOutOfRange(RequestInvalid):
    """An integer a SQL column cannot hold (core.sql_bounds), in the path, query or body."""

    code = OUT_OF_RANGE


class BodyInvalid(InvalidInput):
    """The body as a whole: not UTF-8, not JSON, or not a JSON object."""

    code = "invalid_body"


class BodyTooDeep(InvalidInput):
    code = "body_too_deep"


class TextInvalid(InvalidInput):
    """A string with NUL (PostgreSQL's text cannot hold it) or a lone UTF-16 surrogate (no
    UTF-8 encoding exists, so no database can)."""

    code = "invalid_text"


class HeaderInvalid(InvalidInput):
    code = "invalid_header"


def validation_failed(exc: ValidationError) -> RequestInvalid:
    details = [
        ErrorDetail(
            code=OUT_OF_RANGE if err["type"] == PYDANTIC_INT_TOO_LONG else err["type"],
            message=err["msg"],
            field=".".join(str(part) for part in err["loc"]) or None,
        )
        for err in exc.errors()
    ]
    first = details[0]
    # The code follows the first error, as `field` and `message` do; `errors` lists them all.
    kind = NumberOutOfRange if first.code == OUT_OF_RANGE else RequestInvalid
    error = kind(f"{first.field}: {first.message}" if first.field else first.message)
    error.field = first.field
    error.details = {"errors": [d.model_dump() for d in details]}
    return error


def error_response(status: int, code: str, message: str, **extra: Any) -> web.Response:
    body = {"error": {"code": code, "message": message, **extra}}
    return web.json_response(body, status=status)


# PostgreSQL's lock_not_available: lock_timeout passed waiting for the writer lock.
_LOCK_NOT_AVAILABLE = "55P03"


def _database_busy(exc: Exception) -> bool:
    if isinstance(exc, OperationalError) and "database is locked" in str(exc.orig):
        return True
    sqlstate = getattr(exc.orig, "sqlstate", None) if isinstance(exc, DBAPIError) else None
    return sqlstate == _LOCK_NOT_AVAILABLE


def _status_of(error: DomainError) -> int:
    for kind, status in STATUS_BY_ERROR.items():
        if isinstance(error, kind):
            return status
    return 400


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except DomainError as error:
        extra: dict[str, Any] = {"field": error.field, **error.details}
        response = error_response(_status_of(error), error.code, error.message, **extra)
        if isinstance(error, Unauthorized):
            response.headers["WWW-Authenticate"] = 'Bearer realm="pbx"'
        if isinstance(error, TooManyRequests):
            response.headers["Retry-After"] = str(error.retry_after)
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = CODE_BY_HTTP_STATUS.get(exc.status, "http_error")
        return error_response(exc.status, code, exc.reason)
    except web.RequestPayloadError as exc:
        # The body is not what its headers say (gzip that is not gzip, broken chunks); aiohttp
        # finds out only when a handler reads it.
        detail = getattr(exc.__cause__, "message", None) or str(exc)
        return error_response(400, "unreadable_body", f"the body could not be read: {detail}")
    except Exception as exc:
        if _database_busy(exc):
            # The one writer stayed taken for the whole lock timeout (a burst of writes):
            # nothing was applied, and the client may simply try again.
            log.warning("database_busy", method=request.method, path=request.path)
            busy = error_response(503, "busy", "the service is busy; retry in a moment")
            busy.headers["Retry-After"] = "1"
            return busy
        if isinstance(exc, RedisError):
            # Live state is out of reach (Redis restarting, its connections used up): nothing
            # the client sent is wrong, and the same request may succeed in a moment.
            log.error("redis_unavailable", method=request.method, path=request.path,
                      error=str(exc))  # fmt: skip
            unavailable = error_response(
                503, "unavailable", "live state (Redis) is out of reach; retry in a moment"
            )
            unavailable.headers["Retry-After"] = "1"
            return unavailable
        # Last resort: a bug must answer 500 in our error shape and leave a traceback in the log.
        log.exception("unhandled_api_error", method=request.method, path=request.path)
        return error_response(500, "internal_error", "internal error; see the service log")
