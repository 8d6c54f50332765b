"""What a phone dialled, row by row."""

from __future__ import annotations

import pytest

from ivr.dialplan import Dialled, DialPlan, plan_phone_call

EXTENSIONS = frozenset({"1001", "1002", "7"})


@pytest.mark.parametrize(
    ("dialled", "plan"),
    [
        ("1002", DialPlan(Dialled.EXTENSION, "1002")),
        ("7", DialPlan(Dialled.EXTENSION, "7")),
        ("1001", DialPlan(Dialled.OWN_EXTENSION, "1001")),
        ("1003", DialPlan(Dialled.UNKNOWN_EXTENSION, "1003")),
        ("49301234567", DialPlan(Dialled.EXTERNAL, "49301234567")),
        ("+49301234567", DialPlan(Dialled.EXTERNAL, "+49301234567")),
        ("+49301234567;1027", DialPlan(Dialled.EXTERNAL, "+49301234567", "1027")),
        ("030123456#1027", DialPlan(Dialled.EXTERNAL, "030123456", "1027")),
        ("030123456#", DialPlan(Dialled.INVALID, "030123456#")),
        ("12345", DialPlan(Dialled.EXTERNAL, "12345")),
        ("1234", DialPlan(Dialled.UNKNOWN_EXTENSION, "1234")),
        ("alice", DialPlan(Dialled.INVALID, "alice")),
        ("", DialPlan(Dialled.INVALID, "")),
        ("+1", DialPlan(Dialled.INVALID, "+1")),
        ("1001;1", DialPlan(Dialled.INVALID, "1001;1")),
    ],
)
def test_dialled_string_becomes_a_plan(dialled: str, plan: DialPlan) -> None:
    assert plan_phone_call(dialled, own_extension="1001", extensions=EXTENSIONS) == plan
