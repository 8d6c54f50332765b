"""The media timeout's rule: how long a leg has gone without RTP."""

from __future__ import annotations

import pytest

from pbx.media_timeout import RxWatch, sweep_interval


@pytest.mark.parametrize(
    ("samples", "silent"),
    [
        ([(0, 1.0)], 1.0),  # nothing arrived since the answer
        ([(0, 1.0), (50, 2.0)], 0.0),  # packets arrived: alive now
        ([(50, 2.0), (50, 9.0)], 7.0),  # the count stopped moving
        ([(50, 2.0), (None, 8.0), (50, 9.0)], 0.0),  # on hold, then the stream is back
        ([(None, 5.0), (None, 60.0)], 0.0),  # held as long as it likes
        ([(50, 2.0), (51, 3.0), (51, 4.5)], 1.5),
    ],
)
def test_silence_counts_from_the_last_packet_and_hold_resets_it(
    samples: list[tuple[int | None, float]], silent: float
) -> None:
    watch = RxWatch(alive_at=0.0, packets=0)
    result = 0.0
    for packets, now in samples:
        result = watch.silent_for(packets, now)
    assert result == silent


@pytest.mark.parametrize(("timeout", "interval"), [(60, 5.0), (2, 1.0), (10, 5.0), (4, 2.0)])
def test_sweeps_are_often_enough_for_short_timeouts(timeout: float, interval: float) -> None:
    assert sweep_interval(timeout) == interval
