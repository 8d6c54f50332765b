"""When a call leg's media has died: the rule behind the workers' media timeout.

A phone that loses power or network, or a provider that drops a call without a BYE, leaves a
leg that nobody will ever hang up: a caller waiting in a queue for good, an agent "in call"
for good. Like Asterisk's rtptimeout and FreeSWITCH's media timeout, a leg from which no RTP
has arrived for a while is hung up. A leg on hold is silent on purpose and does not count.
"""

from __future__ import annotations

from dataclasses import dataclass

# The longest a sweep waits: a dead leg is found at most this long after its timeout.
SWEEP_INTERVAL_S = 5.0


def sweep_interval(timeout_s: float) -> float:
    """How often to look, so that a timeout of a few seconds is still kept to."""
    return min(SWEEP_INTERVAL_S, timeout_s / 2)


@dataclass
class RxWatch:
    """Follows one answered leg's count of received RTP packets from sweep to sweep."""

    alive_at: float
    packets: int | None = None

    def silent_for(self, packets: int | None, now: float) -> float:
        """Seconds without a new packet. `packets` None means there is no stream to expect
        packets from (on hold, media not up yet): the leg counts as alive."""
        if packets is None or packets != self.packets:
            self.packets = packets
            self.alive_at = now
        return now - self.alive_at
