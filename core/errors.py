"""Domain errors with a stable machine-readable code; the API maps each kind to one HTTP status."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    code = "error"

    def __init__(
        self, message: str, *, field: str | None = None, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details or {}


class InvalidInput(DomainError):
    code = "invalid"


class NotFound(DomainError):
    code = "not_found"


class Conflict(DomainError):
    code = "conflict"


class Forbidden(DomainError):
    code = "forbidden"


class Unauthorized(DomainError):
    code = "unauthorized"


class Unavailable(DomainError):
    """Not here, not now: another node does it, or a part it needs is down (503)."""

    code = "unavailable"


class TooManyRequests(DomainError):
    """Refused for a while; `retry_after` seconds tell how long (the Retry-After header)."""

    code = "too_many_requests"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, details={"retry_after": retry_after})
        self.retry_after = retry_after
