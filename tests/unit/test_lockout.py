"""The sign-in lockout rule: delay and locks from the failure counts."""

from __future__ import annotations

import pytest

from extensions.lockout import FailureVerdict, LockoutPolicy, after_failure, retry_after

POLICY = LockoutPolicy(
    max_failures=5,
    max_failures_per_address=50,
    lock_seconds=900,
    failure_delay_seconds=0.5,
    max_failure_delay_seconds=2.0,
)


@pytest.mark.parametrize(
    ("email_failures", "address_failures", "expected"),
    [
        (1, 1, FailureVerdict(0.5, lock_email=False, lock_address=False)),
        (2, 2, FailureVerdict(1.0, lock_email=False, lock_address=False)),
        (3, 10, FailureVerdict(1.5, lock_email=False, lock_address=False)),
        # The delay stops growing at its maximum.
        (4, 11, FailureVerdict(2.0, lock_email=False, lock_address=False)),
        # The fifth failure with one email locks it.
        (5, 12, FailureVerdict(2.0, lock_email=True, lock_address=False)),
        (9, 12, FailureVerdict(2.0, lock_email=True, lock_address=False)),
        # Many emails tried from one address lock the address, whatever each email's count.
        (1, 49, FailureVerdict(0.5, lock_email=False, lock_address=False)),
        (1, 50, FailureVerdict(0.5, lock_email=False, lock_address=True)),
        (5, 50, FailureVerdict(2.0, lock_email=True, lock_address=True)),
    ],
)
def test_failures_delay_then_lock(
    email_failures: int, address_failures: int, expected: FailureVerdict
) -> None:
    assert (
        after_failure(POLICY, email_failures=email_failures, address_failures=address_failures)
        == expected
    )


def test_no_delay_when_the_setting_is_zero() -> None:
    policy = LockoutPolicy(3, 10, 60, failure_delay_seconds=0.0, max_failure_delay_seconds=3.0)
    verdict = after_failure(policy, email_failures=3, address_failures=3)
    assert verdict == FailureVerdict(0.0, lock_email=True, lock_address=False)


@pytest.mark.parametrize(
    ("remaining", "header"), [(899.2, 900), (900.0, 900), (0.3, 1), (0.0, 1), (-1.0, 1)]
)
def test_retry_after_rounds_up_to_whole_seconds(remaining: float, header: int) -> None:
    assert retry_after(remaining) == header
