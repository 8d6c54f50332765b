"""Agent presence: the status an agent chooses and what the system sees them doing, as one
transition table over plain values (no I/O, no clock: `now` is a parameter).

Statuses an agent (or a supervisor) chooses: available, away, ready, not_ready (with a
reason), wrap_up, dnd, logged_out. Activity the system sets: idle, ringing, in_call.
ACD work reaches an agent only when the status is ready and the activity is idle.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from core.errors import Conflict, InvalidInput


class Status(StrEnum):
    AVAILABLE = "available"
    AWAY = "away"
    READY = "ready"
    NOT_READY = "not_ready"
    WRAP_UP = "wrap_up"
    DND = "dnd"
    LOGGED_OUT = "logged_out"


class Activity(StrEnum):
    IDLE = "idle"
    RINGING = "ringing"
    IN_CALL = "in_call"


SYSTEM_ONLY = frozenset({"idle", "ringing", "in_call"})
MISSED_CALLS_REASON = "missed calls"


class IllegalStatus(InvalidInput):
    code = "illegal_status"


class NotOfferable(Conflict):
    code = "not_offerable"


@dataclass(frozen=True)
class Presence:
    status: Status = Status.LOGGED_OUT
    reason: str | None = None
    message: str | None = None
    activity: Activity = Activity.IDLE
    # While status is wrap_up: when it ends by itself (None: until the agent ends it).
    wrap_up_until: float | None = None
    # A change asked for during a call waits here until the call ends.
    pending: Presence | None = None
    missed_offers: int = 0
    # Calls outside the ACD (direct, internal, outbound) the agent's phone is in right now.
    direct_calls: int = 0
    # When the agent last became free for ACD work (evenly: longest idle first).
    idle_since: float = 0.0
    # When status or activity last changed (wallboards show "for 3 min").
    changed_at: float = 0.0

    @property
    def takes_acd_work(self) -> bool:
        return self.status is Status.READY and not self.busy

    @property
    def busy(self) -> bool:
        return self.activity is not Activity.IDLE or self.direct_calls > 0

    @property
    def shown_activity(self) -> Activity:
        """What colleagues see: a direct call shows as in_call like an ACD call."""
        if self.activity is Activity.IDLE and self.direct_calls > 0:
            return Activity.IN_CALL
        return self.activity


def choose_status(
    current: Presence,
    status: str,
    *,
    reason: str | None,
    message: str | None,
    reasons: frozenset[str],
    now: float,
    wrap_up_seconds: float | None = None,
) -> Presence:
    """An agent's (or supervisor's) choice; during a call it waits until the call ends."""
    if status in SYSTEM_ONLY:
        raise IllegalStatus(f"{status} is set by the system, not chosen", field="status")
    try:
        chosen = Status(status)
    except ValueError:
        raise IllegalStatus(f"unknown status {status!r}", field="status") from None
    if chosen is Status.NOT_READY:
        if reason is None:
            raise IllegalStatus("not_ready needs a reason", field="reason")
        if reason not in reasons:
            allowed = ", ".join(sorted(reasons))
            raise IllegalStatus(f"reason must be one of: {allowed}", field="reason")
    elif reason is not None:
        raise IllegalStatus(f"only not_ready takes a reason, not {chosen}", field="reason")
    target = Presence(
        status=chosen,
        reason=reason,
        message=message,
        wrap_up_until=(
            now + wrap_up_seconds
            if chosen is Status.WRAP_UP and wrap_up_seconds is not None
            else None
        ),
    )
    if current.busy:
        return replace(current, pending=target)
    return _carry_over(target, current)


def offer(current: Presence) -> Presence:
    """The dispatcher rings the agent with ACD work."""
    if not current.takes_acd_work:
        raise NotOfferable(f"agent is {current.status}/{current.activity}")
    return replace(current, activity=Activity.RINGING)


def direct_call_started(current: Presence) -> Presence:
    """A direct, internal or outbound call occupies the phone whatever the status."""
    return replace(current, direct_calls=current.direct_calls + 1)


def direct_call_ended(current: Presence) -> Presence:
    """No wrap-up after a non-ACD call; a change asked for during it applies once free."""
    after = replace(current, direct_calls=max(0, current.direct_calls - 1))
    return after if after.busy else _apply_pending(after)


def answered(current: Presence) -> Presence:
    return replace(current, activity=Activity.IN_CALL, missed_offers=0)


def offer_missed(current: Presence, *, max_missed: int) -> Presence:
    """The agent let an ACD offer ring out; too many in a row and they stop getting offers."""
    missed = current.missed_offers + 1
    idle = replace(current, activity=Activity.IDLE, missed_offers=missed)
    if missed >= max_missed and idle.pending is None and idle.status is Status.READY:
        return replace(idle, status=Status.NOT_READY, reason=MISSED_CALLS_REASON, missed_offers=0)
    return idle if idle.busy else _apply_pending(idle)


def offer_withdrawn(current: Presence) -> Presence:
    """The offer ended through no fault of the agent (the caller left, another agent won)."""
    idle = replace(current, activity=Activity.IDLE)
    return idle if idle.busy else _apply_pending(idle)


def wrap_up_length(agent_own: int | None, default: int) -> int:
    """An agent's own wrap-up time wins over the queue's (as Asterisk's member wrapuptime
    does), and over acd.wrap_up_time when wrap-up is chosen by hand."""
    return default if agent_own is None else agent_own


def call_ended(current: Presence, *, acd: bool, wrap_up_seconds: float, now: float) -> Presence:
    """After an ACD call the agent wraps up; a change asked for during the call wins."""
    idle = replace(current, activity=Activity.IDLE)
    if idle.busy:
        return idle  # still on a direct call: wrap-up starts with nothing, pending waits
    if idle.pending is not None:
        return _apply_pending(idle)
    if acd and wrap_up_seconds > 0 and idle.status is Status.READY:
        return replace(idle, status=Status.WRAP_UP, wrap_up_until=now + wrap_up_seconds)
    return idle


def tick(current: Presence, now: float) -> Presence:
    """Wrap-up that has run its time returns the agent to ready."""
    if (
        current.status is Status.WRAP_UP
        and current.wrap_up_until is not None
        and now >= current.wrap_up_until
    ):
        return replace(current, status=Status.READY, wrap_up_until=None)
    return current


def end_wrap_up(current: Presence) -> Presence:
    if current.status is not Status.WRAP_UP:
        raise IllegalStatus("the agent is not wrapping up", field="status")
    return replace(current, status=Status.READY, wrap_up_until=None)


def stamped(before: Presence, after: Presence, now: float) -> Presence:
    """Record when the change happened: changed_at, and idle_since when work may come again."""
    if (before.status, before.shown_activity) != (after.status, after.shown_activity):
        after = replace(after, changed_at=now)
    if after.takes_acd_work and not before.takes_acd_work:
        after = replace(after, idle_since=now)
    return after


def after_restart(current: Presence) -> Presence:
    """Calls do not survive a restart of the service; the agent's own choices do."""
    idle = replace(current, activity=Activity.IDLE, direct_calls=0)
    return _apply_pending(idle)


def _apply_pending(current: Presence) -> Presence:
    if current.pending is None:
        return current
    return _carry_over(current.pending, current)


def _carry_over(target: Presence, current: Presence) -> Presence:
    """A newly chosen status keeps what the system tracks about the agent."""
    return replace(
        target,
        activity=current.activity,
        missed_offers=current.missed_offers,
        direct_calls=current.direct_calls,
        idle_since=current.idle_since,
        changed_at=current.changed_at,
    )
