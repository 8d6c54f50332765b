"""Which history is old enough to go (controller.retention, pure part)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from controller.retention import Expiry, expiries
from core.settings import RetentionSettings

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def test_each_table_expires_after_its_own_period() -> None:
    settings = RetentionSettings(events_days=7, queue_log_days=30, presence_history_days=1,
                                 calls_days=365)  # fmt: skip
    assert expiries(settings, NOW) == [
        Expiry("events", NOW - timedelta(days=7)),
        Expiry("queue_log", NOW - timedelta(days=30)),
        Expiry("presence_history", NOW - timedelta(days=1)),
        Expiry("calls", NOW - timedelta(days=365)),
    ]


def test_a_period_of_zero_keeps_a_table_for_ever() -> None:
    settings = RetentionSettings(events_days=0, queue_log_days=0, presence_history_days=0,
                                 calls_days=30)  # fmt: skip
    assert [e.table for e in expiries(settings, NOW)] == ["calls"]
