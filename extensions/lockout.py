"""The sign-in lockout rule, pure: from the failure counts, how long a failed answer waits and
what gets locked. The counts themselves live in Redis (extensions.sign_in_guard)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class LockoutPolicy:
    max_failures: int  # per email
    max_failures_per_address: int
    lock_seconds: int
    failure_delay_seconds: float
    max_failure_delay_seconds: float


@dataclass(frozen=True)
class FailureVerdict:
    delay_seconds: float
    lock_email: bool
    lock_address: bool


def after_failure(
    policy: LockoutPolicy, *, email_failures: int, address_failures: int
) -> FailureVerdict:
    """What the failure that brought the counts to these numbers (itself included) leads to.

    The delay grows with the email's failures, so a guesser slows down and a person who
    mistyped once hardly notices; reaching a limit locks (the count is then started anew)."""
    delay = min(policy.failure_delay_seconds * email_failures, policy.max_failure_delay_seconds)
    return FailureVerdict(
        delay_seconds=max(delay, 0.0),
        lock_email=email_failures >= policy.max_failures,
        lock_address=address_failures >= policy.max_failures_per_address,
    )


def retry_after(remaining_seconds: float) -> int:
    """Retry-After for a lock with this much left: whole seconds, never 0 while it holds."""
    return max(1, math.ceil(remaining_seconds))
