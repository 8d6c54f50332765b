"""Who receives which event on the stream (api.event_visibility), over every event type the
code emits: staff everything, an operator only what is about themselves, a type without a
rule nothing."""

from __future__ import annotations

import ast
import re
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from acd.queue_log import QueueEvent
from api.event_visibility import Viewer, ends_stream, follow, may_see
from extensions.roles import Role

ME, OTHER = 7, 8
HELD, OFFERED, ELSEWHERE = 100, 101, 102
SINCE = datetime(2026, 12, 1, tzinfo=UTC)
OPERATOR = Viewer(
    role=Role.OPERATOR, user_id=ME, extension="1007", extension_since=SINCE,
    held=frozenset({HELD}), offered=frozenset({OFFERED}),
)  # fmt: skip
ROOT = Path(__file__).resolve().parents[2]
SOURCE_PACKAGES = (
    "acd", "api", "chat", "controller", "core", "destinations", "extensions", "flows", "ivr", "pbx",
)  # fmt: skip


def user(user_id: int) -> dict[str, Any]:
    return {"id": user_id, "name": "N", "email": None, "role": "operator", "active": True,
            "extension": None, "wrap_up_time": None}  # fmt: skip


def holder(user_id: int) -> dict[str, Any]:
    return {"extension": "1007", "holder": {"type": "user", "id": user_id}}


def call(user_id: int | None, **fields: Any) -> dict[str, Any]:
    return {"call_id": 1, "direction": "inbound", "caller": "+4930", "called": "+4940",
            "connected_to": None, "user_id": user_id, "disposition": None, "hangup_by": None,
            "started_at": "2026-12-02T10:00:00+00:00", "answered_at": None, "ended_at": None,
            **fields}  # fmt: skip


def dialog(dialog_id: int, assignee: int | None, **fields: Any) -> dict[str, Any]:
    state = "assigned" if assignee else "new"
    return {"id": dialog_id, "channel_id": 1, "customer": {"id": "c", "name": None},
            "state": state, "spam": False, "assignee_id": assignee, "closed_by": None,
            "rating": None, "idle_deadline": None, "tried": [], **fields}  # fmt: skip


def message(dialog_id: int) -> dict[str, Any]:
    return {"id": 5, "dialog_id": dialog_id, "direction": "in", "author_id": None, "text": "hi",
            "created_at": "2026-12-02T10:00:00+00:00", "dialog_state": "assigned"}  # fmt: skip


def queue_step(user_id: int | None) -> dict[str, Any]:
    return {"queue_id": 1, "call_id": 1, "user_id": user_id, "wait_seconds": 1.0}


# Per event type: a payload about the operator (None: the type has no such payload) and one
# about someone else. The "about me" payload of a type that has no operator rule is still
# refused: only listed types reach operators.
DELIVERED: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "user_updated": (user(ME), user(OTHER)),
    "user_dismissed": (user(ME), user(OTHER)),
    "extension_assigned": (holder(ME), holder(OTHER)),
    "extension_released": (holder(ME), holder(OTHER)),
    "sip_password_reset": ({"extension": "1007", "user_id": ME}, {"extension": "1", "user_id": 8}),
    "presence_changed": ({"user_id": ME, "status": "ready"}, {"user_id": OTHER, "status": "ready"}),
    "forwarding_changed": ({"user_id": ME, "rules": {}}, {"user_id": OTHER, "rules": {}}),
    **{
        f"queue_{step.value}": (queue_step(ME), queue_step(OTHER))
        for step in (
            QueueEvent.OFFER,
            QueueEvent.NO_ANSWER,
            QueueEvent.CONNECT,
            QueueEvent.COMPLETE,
            QueueEvent.FAILED,
            QueueEvent.TRANSFER,
            QueueEvent.CALLBACK_ATTEMPT,
        )
    },
    "call_transferred": (
        {"call_id": 1, "by": "1007", "by_user_id": ME, "to": "1008", "kind": "blind"},
        {"call_id": 1, "by": "1008", "by_user_id": OTHER, "to": "1007", "kind": "blind"},
    ),
    "call_started": (call(ME), call(OTHER)),
    "call_answered": (call(None, connected_to="1007"), call(OTHER, connected_to="1008")),
    "call_ended": (
        call(OTHER, direction="internal", caller="1007", called="1008", connected_to="1008"),
        call(OTHER, direction="internal", caller="1009", called="1008", connected_to="1008"),
    ),
    "dialog_created": (dialog(HELD, None), dialog(ELSEWHERE, None)),
    "dialog_assigned": (dialog(ELSEWHERE, ME), dialog(ELSEWHERE, OTHER)),
    "dialog_offered": (
        dialog(ELSEWHERE, None, offered_to=[OTHER, ME]),
        dialog(ELSEWHERE, None, offered_to=[OTHER]),
    ),
    "dialog_forwarded": (
        dialog(ELSEWHERE, OTHER, previous={"assignee_id": ME, "channel_id": 1}),
        dialog(ELSEWHERE, OTHER, previous={"assignee_id": 9, "channel_id": 1}),
    ),
    "dialog_requeued": (dialog(HELD, None), dialog(ELSEWHERE, None)),
    "dialog_closed": (dialog(ELSEWHERE, ME, state="closed"), dialog(ELSEWHERE, OTHER)),
    "dialog_rated": (dialog(ELSEWHERE, ME, state="closed", rating=5), dialog(ELSEWHERE, OTHER)),
    "session_started": (
        {"session_id": 1, "user_id": ME, "address": "a"},
        {"session_id": 2, "user_id": OTHER, "address": "b"},
    ),
    "session_ended": (
        {"session_id": 1, "user_id": ME, "reason": "signed_out"},
        {"session_id": 2, "user_id": OTHER, "reason": "signed_out"},
    ),
    "user_password_set": (
        {"user_id": ME, "by_self": True, "sessions_ended": 0},
        {"user_id": OTHER, "by_self": False, "sessions_ended": 1},
    ),
    **{
        f"voicemail_message_{verb}": (
            {"id": 1, "box_id": 1, "caller": "1", "owner_user_id": ME},
            {"id": 2, "box_id": 2, "caller": "1", "owner_user_id": OTHER},
        )
        for verb in ("left", "heard", "unheard", "deleted")
    },
    "message_received": (message(HELD), message(ELSEWHERE)),
    "message_sent": (message(HELD), message(ELSEWHERE)),
}
NOT_FOR_OPERATORS: dict[str, dict[str, Any]] = {
    "user_created": user(ME),
    "token_issued": {"token_id": 1, "user_id": ME, "role": "operator", "label": ""},
    # Recordings are for admins and supervisors, even of the operator's own calls.
    "call_recorded": {"call_id": 1, "user_id": ME, "seconds": 12.5},
    # Agents are not told who listens to them (as with ChanSpy).
    "call_supervised": {"call_id": 1, "supervisor_user_id": 9, "user_id": ME, "mode": "listen"},
    # Which node carried a call on after a takeover: operations, not the agent's business.
    "call_taken_over": {"call_id": 1, "at": "2026-12-02T10:00:00+00:00", "node": "b"},
    **{
        f"queue_{step.value}": queue_step(None)
        for step in (
            QueueEvent.ENTER,
            QueueEvent.ABANDON,
            QueueEvent.TIMEOUT,
            QueueEvent.EXIT_KEY,
            QueueEvent.FULL,
            QueueEvent.NO_AGENTS,
            QueueEvent.CALLBACK,
            QueueEvent.CALLBACK_FAILED,
            QueueEvent.CALLBACK_CANCEL,
        )
    },
    # Callback requests, with the customer's number: for supervisors and admins.
    "callback_requested": {"id": 1, "queue_id": 1, "number": "4930123", "user_id": None},
    "callback_updated": {"id": 1, "queue_id": 1, "number": "4930123", "user_id": ME},
    **{f"queue_{verb}": {"id": 1, "members": [ME]} for verb in ("created", "updated", "deleted")},
    **{
        f"{kind}_{verb}": {"id": 1}
        for kind in ("number", "menu", "channel", "canned_response")
        for verb in ("created", "updated", "deleted")
    },
    "prompt_created": {"id": 1},
    "prompt_deleted": {"id": 1},
    "business_hours_set": {"number_id": 1},
    "business_hours_removed": {"number_id": 1},
    "channel_secret_changed": {"id": 1},
    **{
        f"voicemail_box_{verb}": {"id": 1, "owner": {"type": "user", "id": ME}}
        for verb in ("created", "updated", "deleted")
    },
    # Failed sign-ins and locks are the guard's business, whoever they name.
    "sign_in_failed": {"address": "10.0.0.1", "user_ids": [ME]},
    "user_locked": {"email": "me@example.com", "user_ids": [ME], "seconds": 60},
    "address_locked": {"address": "10.0.0.1", "seconds": 60},
    "message_delivered": {"message_id": 5, "attempts": 1},
    "blocklist_added": {"id": 1},
    "blocklist_removed": {"id": 1},
    "retention_applied": {"deleted": {"events": 1}},
    "controller_activated": {"node": "b"},
}
EVERY_TYPE = {**{t: mine for t, (mine, _) in DELIVERED.items()}, **NOT_FOR_OPERATORS}


@pytest.mark.parametrize(("type_", "mine", "theirs"), [(t, *p) for t, p in DELIVERED.items()])
def test_an_operator_gets_the_event_about_themselves_not_about_others(
    type_: str, mine: dict[str, Any], theirs: dict[str, Any]
) -> None:
    assert may_see(OPERATOR, type_, mine)
    assert not may_see(OPERATOR, type_, theirs)


@pytest.mark.parametrize(("type_", "data"), list(NOT_FOR_OPERATORS.items()))
def test_an_operator_never_gets_these_types(type_: str, data: dict[str, Any]) -> None:
    assert not may_see(OPERATOR, type_, data)


@pytest.mark.parametrize(("type_", "data"), list(EVERY_TYPE.items()))
@pytest.mark.parametrize("role", [Role.ADMIN, Role.SUPERVISOR])
def test_staff_get_every_event(role: Role, type_: str, data: dict[str, Any]) -> None:
    assert may_see(Viewer(role=role, user_id=None), type_, data)


def test_a_new_event_type_reaches_no_operator() -> None:
    about_me = {"id": ME, "user_id": ME, "assignee_id": ME, "holder": {"type": "user", "id": ME}}
    assert not may_see(OPERATOR, "something_new", about_me)
    assert may_see(Viewer(role=Role.ADMIN, user_id=1), "something_new", about_me)


def test_the_table_covers_every_event_type_the_code_emits() -> None:
    missing = emitted_event_types() - EVERY_TYPE.keys()
    assert not missing, f"decide whether operators may see: {sorted(missing)}"
    assert {f"queue_{step.value}" for step in QueueEvent} <= EVERY_TYPE.keys()


def test_a_call_on_the_extension_before_it_was_theirs_is_someone_elses() -> None:
    earlier = call(None, direction="internal", caller="1007", called="1008",
                   started_at="2026-11-30T10:00:00+00:00")  # fmt: skip
    assert not may_see(OPERATOR, "call_ended", earlier)
    outbound_to_same_digits = call(None, direction="outbound", caller="1009", called="1007")
    assert not may_see(OPERATOR, "call_started", outbound_to_same_digits)
    assert not may_see(replace(OPERATOR, extension=None), "call_answered", call(None))
    assert not may_see(OPERATOR, "call_ended", call(None, started_at="not a time"))


def test_the_viewer_follows_their_dialogs() -> None:
    viewer = follow(OPERATOR, "dialog_assigned", dialog(ELSEWHERE, ME), "")
    assert may_see(viewer, "message_received", message(ELSEWHERE))
    viewer = follow(viewer, "dialog_closed", dialog(ELSEWHERE, ME, state="closed"), "")
    assert not may_see(viewer, "message_received", message(ELSEWHERE))
    # Forwarded away: the forward is theirs to see, the dialog's next messages are not.
    forwarded = dialog(HELD, OTHER, previous={"assignee_id": ME, "channel_id": 1})
    viewer = follow(viewer, "dialog_forwarded", forwarded, "")
    assert not may_see(viewer, "message_sent", message(HELD))
    assert not may_see(viewer, "dialog_closed", dialog(HELD, OTHER, state="closed"))


def test_the_end_of_an_offer_is_seen_once() -> None:
    viewer = follow(OPERATOR, "dialog_offered", dialog(ELSEWHERE, None, offered_to=[ME]), "")
    taken = dialog(ELSEWHERE, OTHER, cause="claim")
    assert may_see(viewer, "dialog_assigned", taken)
    viewer = follow(viewer, "dialog_assigned", taken, "")
    assert not may_see(viewer, "dialog_closed", dialog(ELSEWHERE, OTHER, state="closed"))


def test_the_viewer_follows_their_extension() -> None:
    moved_at = "2026-12-03T09:00:00+00:00"
    moved = {"extension": "1010", "holder": {"type": "user", "id": ME}}
    viewer = follow(OPERATOR, "extension_assigned", moved, moved_at)
    assert viewer.extension == "1010"
    on_new = call(None, direction="internal", caller="1010", called="1008",
                  started_at="2026-12-03T09:00:01+00:00")  # fmt: skip
    assert may_see(viewer, "call_started", on_new)
    viewer = follow(viewer, "extension_released", moved, moved_at)
    assert viewer.extension is None and not may_see(viewer, "call_started", on_new)
    # Someone else's extension changes nothing.
    assert follow(OPERATOR, "extension_assigned", holder(OTHER), moved_at) == OPERATOR


def emitted_event_types() -> set[str]:
    """Event types named in the source where they are staged: `.stage(session, "type", ...)`
    and the `("type", data)` pairs written behind or in a chat pass (a name bound to a literal
    in the same module counts). queue_* types are built from QueueEvent (checked apart)."""
    found: set[str] = set()
    for package in SOURCE_PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text())
            bound: dict[str, set[str]] = {}
            # ctypes structures' ("field", type) pairs are no events.
            struct_fields: set[int] = set()
            for node in ast.walk(tree):
                if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
                    bound.setdefault(node.targets[0].id, set()).update(_literals(node.value))
                    if node.targets[0].id == "_fields_":
                        struct_fields.update(id(inner) for inner in ast.walk(node.value))
            for node in ast.walk(tree):
                if id(node) in struct_fields:
                    continue
                named = None
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                    if node.func.attr == "stage" and len(node.args) >= 2:
                        named = node.args[1]
                elif (
                    isinstance(node, ast.Tuple) and len(node.elts) == 2
                    and isinstance(node.elts[1], ast.Dict | ast.Call | ast.BinOp | ast.Name)
                ):  # fmt: skip
                    named = node.elts[0]
                if named is not None:
                    names = _literals(named)
                    if isinstance(named, ast.Name):
                        names = bound.get(named.id, set())
                    found.update(n for n in names if re.fullmatch(r"[a-z]+(_[a-z]+)+", n))
    return found


def _literals(node: ast.expr) -> set[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.IfExp):
        return _literals(node.body) | _literals(node.orelse)
    return set()


@pytest.mark.parametrize(
    ("viewer", "session_id", "type_", "data", "reason"),
    [
        # (the stream's viewer, the session it was opened with) and the event.
        (Viewer(Role.OPERATOR, ME), 7, "session_ended", {"session_id": 7, "user_id": ME},
         "session ended"),
        (Viewer(Role.ADMIN, ME), 7, "session_ended", {"session_id": 8, "user_id": ME}, None),
        (Viewer(Role.OPERATOR, ME), None, "session_ended", {"session_id": 7, "user_id": ME},
         None),  # a token's stream: another of their sessions ended
        (Viewer(Role.OPERATOR, ME), None, "user_dismissed", {"id": ME}, "user dismissed"),
        (Viewer(Role.SUPERVISOR, ME), 7, "user_dismissed", {"id": ME}, "user dismissed"),
        (Viewer(Role.ADMIN, ME), None, "user_dismissed", {"id": OTHER}, None),
        (Viewer(Role.ADMIN, None), None, "user_dismissed", {"id": ME}, None),  # PBX_ADMIN_TOKEN
        (Viewer(Role.OPERATOR, ME), 7, "user_updated", {"id": ME}, None),
    ],
)  # fmt: skip
def test_the_stream_ends_with_its_session_or_its_users_dismissal(
    viewer: Viewer, session_id: int | None, type_: str, data: dict[str, Any], reason: str | None
) -> None:
    assert ends_stream(viewer, session_id, type_, data) == reason
