"""The chat assigner's memory, event by event: dialogs queued and held, loads with each
channel's exclusions, events arriving out of order, deadlines, SQL's word over memory's."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from acd.presence import Activity, Presence, Status
from chat.assignment import Countable, Distribution
from chat.board import Board, OpenDialog
from chat.channels import Channel, ChannelSpec, channel_data
from chat.dialogs import DialogView, dialog_data
from chat.working_hours import WorkingHours

T0 = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)  # a Monday
NOW = T0.timestamp()
CHANNEL = 3
OTHER = 4
A, B = 11, 12


def spec(**fields: Any) -> ChannelSpec:
    return ChannelSpec(**{"name": "Web", "members": (A, B), **fields})


def board(*dialogs: OpenDialog, high_water: int = 100, **specs: ChannelSpec) -> Board:
    channels = {CHANNEL: spec(), OTHER: spec(name="Mail")} | {
        int(k.removeprefix("c")): v for k, v in specs.items()
    }
    return Board(channels, {}, {}, dialogs, high_water=high_water)


def dialog(id_: int, state: str = "new", assignee: int | None = None, **more: Any) -> OpenDialog:
    fields = {"id": id_, "channel_id": CHANNEL, "customer_id": f"c{id_}", "state": state,
              "assignee_id": assignee, "queued_at": NOW, **more}  # fmt: skip
    return OpenDialog(**fields)


def data(id_: int, state: str = "new", assignee: int | None = None, **more: Any) -> dict[str, Any]:
    """A dialog event's data, as chat.dialogs.dialog_data makes it."""
    view = DialogView(**{
        "id": id_, "channel_id": CHANNEL, "customer_id": f"c{id_}", "customer_name": None,
        "state": state, "spam": False, "assignee_id": assignee, "created_at": T0,
        "queued_at": T0, "assigned_at": None, "first_assigned_at": None, "idle_deadline": None,
        "tried": [], "first_response_at": None, "first_response_by": None,
        "last_message_at": T0, "closed_at": None, "closed_by": None, "rating": None, **more,
    })  # fmt: skip
    return dialog_data(view)


def test_dialog_events_build_the_queue_and_what_agents_hold() -> None:
    memory = board()
    assert memory.apply(101, "dialog_created", data(1))
    memory.apply(102, "dialog_created", data(2))
    memory.apply(103, "dialog_assigned", data(2, "assigned", A))
    assert [d.id for d in memory.queued()] == [1]
    assert memory.held_by(A) == {2}
    assert memory.loads([A, B]).per_channel == {(A, CHANNEL): 1}
    assert memory.open_dialog_of(CHANNEL, "c2") == 2
    memory.apply(104, "dialog_closed", data(2, "closed", A))
    assert memory.held_by(A) == frozenset() and memory.dialog(2) is None
    assert memory.open_dialog_of(CHANNEL, "c2") is None
    assert not memory.apply(105, "user_created", {"id": 9})  # not chat's business


def test_an_older_snapshot_published_late_changes_nothing() -> None:
    memory = board()
    memory.apply(110, "dialog_closed", data(5, "closed", A))
    memory.apply(109, "dialog_assigned", data(5, "assigned", A))  # committed before the close
    assert memory.dialog(5) is None
    memory.apply(112, "dialog_assigned", data(6, "assigned", A))
    memory.apply(111, "dialog_created", data(6))
    assert memory.dialog(6) == dialog(6, "assigned", A)


def test_events_the_start_up_snapshot_already_holds_are_skipped() -> None:
    memory = board(dialog(1, "assigned", A), high_water=100)
    memory.apply(99, "dialog_created", data(1))  # older than the snapshot
    memory.apply(98, "dialog_created", data(2))  # a dialog closed before the snapshot
    assert memory.dialog(1) == dialog(1, "assigned", A) and memory.dialog(2) is None


@pytest.mark.parametrize(
    ("kind", "dialog_state", "state", "deadline"),
    [
        ("message_sent", "answered", "answered", None),  # a reply answers it, no idle time
        ("message_sent", "waiting", "waiting", None),
        ("message_received", "assigned", "assigned", NOW + 60),  # still unanswered
    ],
)
def test_messages_change_their_dialogs_state(
    kind: str, dialog_state: str, state: str, deadline: float | None
) -> None:
    memory = board(dialog(1, "assigned", A, idle_deadline=NOW + 60))
    memory.apply(101, kind, {"id": 7, "dialog_id": 1, "dialog_state": dialog_state})
    known = memory.dialog(1)
    assert known is not None and (known.state, known.idle_deadline) == (state, deadline)


def test_loads_count_per_channel_with_its_exclusions_and_all_for_the_hard_cap() -> None:
    held = [dialog(1, "assigned", A), dialog(2, "answered", A), dialog(3, "waiting", A),
            OpenDialog(4, OTHER, "c4", "answered", A, NOW)]  # fmt: skip
    memory = board(*held, c3=spec(limit_excludes=frozenset({Countable.ANSWERED})))
    loads = memory.loads([A])
    assert loads.per_channel == {(A, CHANNEL): 2, (A, OTHER): 1} and loads.total == {A: 4}
    assert memory.counted(A) == 3
    excluded = spec(limit_excludes=frozenset(Countable))
    memory.apply(101, "channel_updated", channel_data(Channel(CHANNEL, excluded, "s", T0, T0)))
    assert memory.loads([A]).per_channel[(A, CHANNEL)] == 1


def test_channel_events_change_specs_and_a_deleted_channel_takes_its_dialogs() -> None:
    memory = board(dialog(1), dialog(2, "assigned", A))
    changed = spec(distribution=Distribution.TO_ALL, members=(B,))
    memory.apply(101, "channel_updated", channel_data(Channel(CHANNEL, changed, "s", T0, T0)))
    assert memory.specs[CHANNEL] == changed
    assert memory.rules([CHANNEL])[CHANNEL].members == (B,)
    memory.apply(102, "channel_deleted", {**channel_data(Channel(CHANNEL, changed, "s", T0, T0)),
                                         "dialogs": 2})  # fmt: skip
    assert not memory.has_queued and memory.held_by(A) == frozenset()
    assert CHANNEL not in memory.specs


def test_presence_comes_in_process_and_its_event_only_wakes() -> None:
    memory = board()
    memory.set_presence(A, Presence(Status.READY, activity=Activity.IN_CALL))
    # The event of an earlier change, arriving after its commit, changes nothing.
    assert memory.apply(101, "presence_changed", {"user_id": A, "status": "ready",
                                                  "activity": "idle"})  # fmt: skip
    assert memory.presences[A] == Presence(Status.READY, activity=Activity.IN_CALL)


def test_idle_deadlines_fall_due_and_are_the_next_deadline() -> None:
    memory = board(dialog(1, "assigned", A, idle_deadline=NOW + 60),
                   dialog(2, "assigned", B, idle_deadline=NOW + 90))  # fmt: skip
    assert memory.next_deadline(NOW) == NOW + 60
    assert memory.due_idle(NOW + 59) == []
    assert [d.id for d in memory.due_idle(NOW + 61)] == [1]
    # Answered meanwhile: no longer due.
    memory.apply(101, "message_sent", {"id": 5, "dialog_id": 1, "dialog_state": "answered"})
    assert memory.due_idle(NOW + 61) == []
    assert memory.next_deadline(NOW + 61) == NOW + 90


def test_nothing_waits_no_deadline() -> None:
    assert board(dialog(1, "answered", A)).next_deadline(NOW) is None


def test_a_closed_channel_with_a_dialog_waiting_has_its_opening_as_deadline() -> None:
    hours = WorkingHours(timezone="UTC", days={"mon": ["12:00-13:00"]})
    memory = board(dialog(1), c3=spec(working_hours=hours))
    assert memory.open_channels(NOW, [CHANNEL]) == frozenset()
    assert memory.next_deadline(NOW) == NOW + 2 * 3600


def test_sql_word_replaces_memory_and_outranks_older_events() -> None:
    memory = board(dialog(1))
    memory.apply(150, "dialog_created", data(2))
    memory.refresh(dialog(1, "assigned", B), 1)  # claimed: its event is still on its way
    assert memory.held_by(B) == {1} and not [d for d in memory.queued() if d.id == 1]
    memory.apply(140, "dialog_offered", data(1))  # older than what SQL said
    assert memory.held_by(B) == {1}
    memory.apply(151, "dialog_closed", data(1, "closed", B))  # newer
    assert memory.dialog(1) is None
