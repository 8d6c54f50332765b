"""Which connected calls are recorded (flows.recording.should_record)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from flows.recording import recording_path, should_record
from ivr.cdr import Direction


@pytest.mark.parametrize(
    ("direction", "by_number", "by_queue", "by_user", "recorded"),
    [
        (Direction.INBOUND, False, False, False, False),
        (Direction.INBOUND, True, False, False, True),
        (Direction.INBOUND, False, True, False, True),
        (Direction.INBOUND, False, False, True, True),
        (Direction.OUTBOUND, False, False, True, True),  # the user dialled out
        (Direction.OUTBOUND, False, False, False, False),
        # Colleagues among themselves: never, whoever asks.
        (Direction.INTERNAL, True, True, True, False),
        (Direction.INTERNAL, False, False, True, False),
    ],
)
def test_external_calls_are_recorded_when_their_number_queue_or_user_asks(
    direction: Direction, by_number: bool, by_queue: bool, by_user: bool, recorded: bool
) -> None:
    assert (
        should_record(direction, by_number=by_number, by_queue=by_queue, by_user=by_user)
        is recorded
    )


def test_recordings_are_filed_by_day() -> None:
    at = datetime(2026, 12, 4, 23, 59, tzinfo=UTC)
    assert recording_path(Path("/data"), 42, at) == Path("/data/recordings/2026-12-04/call-42.wav")
