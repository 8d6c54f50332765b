"""Which events an event-stream client may receive: staff everything, an operator only the
events about themselves. Pure: the stream keeps a Viewer per client and asks `may_see` for
each event, then `follow`s the event (an operator's extension and dialogs change over time).

An event type without a rule here is never sent to an operator, so a new type cannot leak.
`ends_stream` says which events close a client's stream: the end of the session it was
opened with, or the dismissal of its user (whose tokens die with them)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from extensions.roles import Role


@dataclass(frozen=True)
class Viewer:
    """Who watches the stream, with what decides an operator's share of it."""

    role: Role
    user_id: int | None
    # Their extension and since when they hold it: a call on that extension from before was
    # someone else's (numbers are reused).
    extension: str | None = None
    extension_since: datetime | None = None
    # Dialogs they hold (assigned, answered, waiting) and dialogs offered to them now.
    held: frozenset[int] = frozenset()
    offered: frozenset[int] = frozenset()


Data = Mapping[str, Any]
_Rule = Callable[[Viewer, Data], bool]


def may_see(viewer: Viewer, type_: str, data: Data) -> bool:
    if viewer.role is not Role.OPERATOR:
        return True
    rule = _OPERATOR_RULES.get(type_)
    return rule is not None and viewer.user_id is not None and rule(viewer, data)


def ends_stream(viewer: Viewer, session_id: int | None, type_: str, data: Data) -> str | None:
    """Why the event ends the stream of `viewer` (opened with `session_id`, None for a
    token), or None when it does not."""
    if type_ == "session_ended" and session_id is not None and data.get("session_id") == session_id:
        return "session ended"
    if type_ == "user_dismissed" and viewer.user_id is not None and _is_me(viewer, data.get("id")):
        return "user dismissed"
    return None


def follow(viewer: Viewer, type_: str, data: Data, time: str) -> Viewer:
    """The viewer once this event has happened (events are followed in id order); `time` is
    the envelope's."""
    if viewer.role is not Role.OPERATOR:
        return viewer
    if type_ in ("extension_assigned", "extension_released") and _holder_is(viewer, data):
        if type_ == "extension_assigned":
            since = datetime.fromisoformat(time)
            return replace(viewer, extension=data.get("extension"), extension_since=since)
        if data.get("extension") == viewer.extension:
            return replace(viewer, extension=None, extension_since=None)
    elif type_.startswith("dialog_") and isinstance(dialog_id := data.get("id"), int):
        mine = data.get("assignee_id") == viewer.user_id and data.get("state") != "closed"
        held = viewer.held | {dialog_id} if mine else viewer.held - {dialog_id}
        offered = viewer.offered - {dialog_id}
        if type_ == "dialog_offered" and viewer.user_id in _ids(data.get("offered_to")):
            offered = offered | {dialog_id}
        return replace(viewer, held=held, offered=offered)
    return viewer


def _is_me(viewer: Viewer, user_id: object) -> bool:
    return user_id is not None and user_id == viewer.user_id


def _holder_is(viewer: Viewer, data: Data) -> bool:
    holder = data.get("holder")
    return isinstance(holder, Mapping) and holder.get("type") == "user" and (
        _is_me(viewer, holder.get("id"))
    )  # fmt: skip


def _about_me(key: str) -> _Rule:
    return lambda viewer, data: _is_me(viewer, data.get(key))


def _call_rule(viewer: Viewer, data: Data) -> bool:
    if _is_me(viewer, data.get("user_id")):
        return True
    # The record names one user (the caller's, then whoever answered): the other party of an
    # internal call, or a caller whose call was answered, is found by extension.
    if viewer.extension is None or viewer.extension_since is None:
        return False
    try:
        started = datetime.fromisoformat(str(data.get("started_at")))
    except ValueError:
        return False
    if started.tzinfo is None or started < viewer.extension_since:
        return False
    direction = data.get("direction")
    ours = []
    if direction in ("internal", "outbound"):
        ours.append(data.get("caller"))
    if direction == "internal":
        ours.append(data.get("called"))
    if direction in ("internal", "inbound"):
        ours.append(data.get("connected_to"))
    return viewer.extension in ours


def _dialog_rule(viewer: Viewer, data: Data) -> bool:
    dialog_id = data.get("id")
    previous = data.get("previous")
    return (
        _is_me(viewer, data.get("assignee_id"))
        # Taken from them: forwarded away, or moved on after sitting idle with them.
        or (isinstance(previous, Mapping) and _is_me(viewer, previous.get("assignee_id")))
        or _is_me(viewer, data.get("previous_assignee_id"))
        # Offered to them now, or the end of an offer to them (taken, withdrawn, re-offered).
        or viewer.user_id in _ids(data.get("offered_to"))
        or (isinstance(dialog_id, int) and dialog_id in viewer.held | viewer.offered)
    )


def _ids(value: object) -> list[object]:
    return list(value) if isinstance(value, list) else []


def _message_rule(viewer: Viewer, data: Data) -> bool:
    dialog_id = data.get("dialog_id")
    return isinstance(dialog_id, int) and dialog_id in viewer.held


_OPERATOR_RULES: dict[str, _Rule] = {
    # Their own user record, extension and phone (what GET /users/{id} and
    # GET /users/{id}/extension show them).
    "user_updated": _about_me("id"),
    "user_dismissed": _about_me("id"),
    "extension_assigned": _holder_is,
    "extension_released": _holder_is,
    "sip_password_reset": _about_me("user_id"),
    "presence_changed": _about_me("user_id"),
    # Their own console sign-ins and password (the address is their own machine's).
    "session_started": _about_me("user_id"),
    "session_ended": _about_me("user_id"),
    "user_password_set": _about_me("user_id"),
    # Their own voicemail (a box of theirs: the event names its user).
    "voicemail_message_left": _about_me("owner_user_id"),
    "voicemail_message_heard": _about_me("owner_user_id"),
    "voicemail_message_unheard": _about_me("owner_user_id"),
    "voicemail_message_deleted": _about_me("owner_user_id"),
    "forwarding_changed": _about_me("user_id"),
    # The ACD's steps with them as the agent (offered, rang unanswered, connected, done); a
    # caller's stay without an agent (enter, abandon, timeout, ...) is no operator's business.
    "queue_offer": _about_me("user_id"),
    "queue_no_answer": _about_me("user_id"),
    "queue_connect": _about_me("user_id"),
    "queue_complete": _about_me("user_id"),
    "queue_failed": _about_me("user_id"),
    "queue_transfer": _about_me("user_id"),
    # A callback they made (the request itself, callback_*, is the supervisors' business).
    "queue_callback_attempt": _about_me("user_id"),
    # A transfer they made (where the call went is on its next call_answered).
    "call_transferred": _about_me("by_user_id"),
    "call_started": _call_rule,
    "call_answered": _call_rule,
    "call_ended": _call_rule,
    "dialog_created": _dialog_rule,
    "dialog_assigned": _dialog_rule,
    "dialog_offered": _dialog_rule,
    "dialog_forwarded": _dialog_rule,
    "dialog_requeued": _dialog_rule,
    "dialog_closed": _dialog_rule,
    "dialog_rated": _dialog_rule,
    "message_received": _message_rule,
    "message_sent": _message_rule,
}
