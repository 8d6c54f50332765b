"""A clock the tests can stop at a fixed instant: the service decides business hours with it."""

from __future__ import annotations

from datetime import datetime

from core.db import utcnow


class TestClock:
    __test__ = False

    def __init__(self) -> None:
        self.fixed: datetime | None = None

    def __call__(self) -> datetime:
        return self.fixed if self.fixed is not None else utcnow()
