"""What the chat assigner knows, in memory: every open dialog (its channel, state, holder,
place in the queue, idle deadline, who it is offered to), each channel's spec, agents'
presence and when each was last given a dialog. Pure: no I/O, time is a parameter.

It is kept current by the events of the changes that touch it (`apply`, called in-process as
each event is published, see core.wakeups) and built at start from SQL and Redis. Events
carry whole snapshots of what they changed (`dialog_data`, `channel_data`, `presence_data`),
so applying one is replacing a record, and events that arrive out of order (two requests
publishing after their commits in the other order) are told apart by their ids: a dialog
takes no snapshot older than the one it has.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from acd.presence import Presence
from chat.assignment import ChannelRule, Loads, WaitingDialog, counted_open
from chat.channels import ChannelSpec, spec_from_data
from chat.working_hours import is_open, next_opening

# Dialog states an agent holds; "new" waits in its channel's queue.
HELD = frozenset({"assigned", "answered", "waiting"})
# Dialog events: their data is the dialog's snapshot (chat.dialogs.dialog_data).
DIALOG_EVENTS = frozenset({
    "dialog_created", "dialog_assigned", "dialog_offered", "dialog_forwarded",
    "dialog_requeued", "dialog_closed", "dialog_rated",
})  # fmt: skip
# Message events: they carry their dialog's id and state (chat.dialogs.message_data).
MESSAGE_EVENTS = frozenset({"message_received", "message_sent"})
CHANNEL_EVENTS = frozenset({"channel_created", "channel_updated", "channel_deleted"})
PRESENCE_EVENT = "presence_changed"
# Closed dialogs remembered, so that an older snapshot published late cannot reopen one.
CLOSED_REMEMBERED = 10_000


@dataclass(frozen=True)
class OpenDialog:
    id: int
    channel_id: int
    customer_id: str
    # new | assigned | answered | waiting
    state: str
    assignee_id: int | None
    # Epoch seconds; the queue's order.
    queued_at: float
    # Unanswered past this (epoch seconds), an assigned dialog moves on; None: never.
    idle_deadline: float | None = None
    # Agents it already sat idle with.
    tried: frozenset[int] = frozenset()
    # to_all: the agents a waiting dialog is shown to, in id order.
    offered_to: tuple[int, ...] = ()

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> OpenDialog:
        return cls(
            id=data["id"],
            channel_id=data["channel_id"],
            customer_id=data["customer"]["id"],
            state=data["state"],
            assignee_id=data["assignee_id"],
            queued_at=_epoch(data["queued_at"]) or 0.0,
            idle_deadline=_epoch(data.get("idle_deadline")),
            tried=frozenset(data.get("tried") or ()),
            offered_to=tuple(data.get("offered_to") or ()),
        )

    def waiting(self) -> WaitingDialog:
        idle_with = self.assignee_id if self.state == "assigned" else None
        return WaitingDialog(self.id, self.channel_id, self.queued_at, idle_with, self.tried)


class Board:
    def __init__(
        self,
        specs: Mapping[int, ChannelSpec],
        presences: Mapping[int, Presence],
        last_assigned: Mapping[int, float],
        dialogs: Iterable[OpenDialog],
        *,
        high_water: int,
    ) -> None:
        """`high_water`: the id of the last event the snapshot already holds."""
        self.specs: dict[int, ChannelSpec] = dict(specs)
        self.presences: dict[int, Presence] = dict(presences)
        self.last_assigned: dict[int, float] = dict(last_assigned)
        # The last event id applied to each dialog (or the snapshot's, for those it read).
        self.high_water = high_water
        self._floor = high_water
        self._seen: dict[int, int] = {}
        self._closed: OrderedDict[int, int] = OrderedDict()
        self._dialogs: dict[int, OpenDialog] = {}
        self._queued: dict[int, OpenDialog] = {}
        # (channel, customer) -> the customer's open dialog there
        self._by_customer: dict[tuple[int, str], int] = {}
        # agent -> channel -> held dialogs per state; agent -> the dialogs
        self._held: dict[int, dict[int, Counter[str]]] = {}
        self._held_ids: dict[int, set[int]] = {}
        # No idle deadline falls before this (it may be earlier than the real first one).
        self._next_idle: float | None = None
        self._rules: dict[int, ChannelRule] = {}
        for dialog in dialogs:
            self._put(dialog)
            self._seen[dialog.id] = high_water

    # -- what it holds ----------------------------------------------------------------------

    def dialog(self, dialog_id: int) -> OpenDialog | None:
        return self._dialogs.get(dialog_id)

    @property
    def has_queued(self) -> bool:
        return bool(self._queued)

    def queued(self) -> list[OpenDialog]:
        return list(self._queued.values())

    def held_by(self, agent: int) -> frozenset[int]:
        """The dialogs the agent holds (ids)."""
        return frozenset(self._held_ids.get(agent, ()))

    def open_dialog_of(self, channel_id: int, customer_id: str) -> int | None:
        return self._by_customer.get((channel_id, customer_id))

    def open_channels(self, now: float, among: Iterable[int]) -> frozenset[int]:
        """Those of the channels `among` that exist and are within their working hours."""
        moment = datetime.fromtimestamp(now, UTC)
        return frozenset(
            c for c in among if (s := self.specs.get(c)) and is_open(s.working_hours, moment)
        )

    def rules(self, channels: Iterable[int]) -> dict[int, ChannelRule]:
        rules = {}
        for channel_id in channels:
            rule = self._rules.get(channel_id)
            if rule is None and channel_id in self.specs:
                rule = self._rules[channel_id] = self.specs[channel_id].rule()
            if rule is not None:
                rules[channel_id] = rule
        return rules

    def due_idle(self, now: float) -> list[OpenDialog]:
        """Assigned dialogs whose idle deadline has passed."""
        if self._next_idle is None or now < self._next_idle:
            return []
        due, upcoming = [], None
        for dialog in self._dialogs.values():
            deadline = dialog.idle_deadline
            if deadline is None or dialog.state != "assigned":
                continue
            if deadline <= now:
                due.append(dialog)
            elif upcoming is None or deadline < upcoming:
                upcoming = deadline
        self._next_idle = upcoming if not due else now
        return due

    def loads(self, agents: Iterable[int]) -> Loads:
        """The agents' open dialogs, counted per channel (its exclusions applied) and in all."""
        loads = Loads({}, {})
        for agent in agents:
            channels = self._held.get(agent)
            if not channels:
                continue
            total = 0
            for channel_id, states in channels.items():
                spec = self.specs.get(channel_id)
                excludes = spec.limit_excludes if spec is not None else frozenset()
                loads.per_channel[(agent, channel_id)] = counted_open(states, excludes)
                total += sum(states.values())
            loads.total[agent] = total
        return loads

    def counted(self, agent: int) -> int:
        """The agent's open dialogs that count, each channel's exclusions applied."""
        counted = 0
        for channel_id, states in self._held.get(agent, {}).items():
            spec = self.specs.get(channel_id)
            counted += counted_open(states, spec.limit_excludes if spec else frozenset())
        return counted

    def next_deadline(self, now: float) -> float | None:
        """The next instant a pass has work without any event: an idle deadline, or a closed
        channel with waiting dialogs opening."""
        deadlines = [] if self._next_idle is None else [self._next_idle]
        moment = datetime.fromtimestamp(now, UTC)
        for channel_id in {d.channel_id for d in self._queued.values()}:
            spec = self.specs.get(channel_id)
            if spec is None or is_open(spec.working_hours, moment):
                continue
            opening = next_opening(spec.working_hours, moment)
            if opening is not None:
                deadlines.append(opening.timestamp())
        return min(deadlines, default=None)

    # -- keeping it current -----------------------------------------------------------------

    def apply(self, event_id: int, kind: str, data: Mapping[str, Any]) -> bool:
        """One published event. Returns whether it concerns chat assignment (and so may let a
        waiting dialog find an agent)."""
        self.high_water = max(self.high_water, event_id)
        if kind in DIALOG_EVENTS:
            self.put(OpenDialog.from_data(data) if data["state"] != "closed" else None,
                     data["id"], event_id)  # fmt: skip
        elif kind in MESSAGE_EVENTS:
            dialog = self._dialogs.get(data["dialog_id"])
            if dialog is not None and "dialog_state" in data:
                state = data["dialog_state"]
                # Only an assigned dialog has an idle deadline (a reply ends it).
                deadline = dialog.idle_deadline if state == "assigned" else None
                self.put(replace(dialog, state=state, idle_deadline=deadline), dialog.id,
                         event_id)  # fmt: skip
        elif kind in CHANNEL_EVENTS:
            channel_id = data["id"]
            self._rules.pop(channel_id, None)
            if kind == "channel_deleted":
                self.specs.pop(channel_id, None)
                for dialog in [d for d in self._dialogs.values() if d.channel_id == channel_id]:
                    self.put(None, dialog.id, event_id)
            else:
                self.specs[channel_id] = spec_from_data(data)
        elif kind == PRESENCE_EVENT:
            # The presence itself arrived earlier, in-process (set_presence): the event, which
            # follows its history row's commit, only says a waiting dialog may now find an agent.
            pass
        else:
            return False
        return True

    def put(self, dialog: OpenDialog | None, dialog_id: int, event_id: int | None) -> bool:
        """The dialog as of event `event_id` (None: closed or gone); nothing when the board
        has a later snapshot. `event_id` None: a change the assigner made itself without an
        event (an idle deadline pushed back), applied whatever was seen. Returns whether it
        was applied."""
        if event_id is not None:
            seen = self._seen.get(dialog_id, self._closed.get(dialog_id, self._floor))
            if event_id <= seen:
                return False
        self._remove(dialog_id)
        if dialog is None:
            if event_id is not None:
                self._seen.pop(dialog_id, None)
                self._closed[dialog_id] = event_id
                if len(self._closed) > CLOSED_REMEMBERED:
                    self._closed.popitem(last=False)
            return True
        self._put(dialog)
        if event_id is not None:
            self._seen[dialog_id] = event_id
        return True

    def refresh(self, dialog: OpenDialog | None, dialog_id: int) -> None:
        """The dialog as SQL holds it now (read inside a write transaction, so every change
        whose event has not arrived yet is in it): replaces whatever the board had."""
        self._remove(dialog_id)
        if dialog is not None:
            self._put(dialog)
        self._seen[dialog_id] = max(self.high_water, self._seen.get(dialog_id, 0))

    def set_presence(self, user_id: int, presence: Presence) -> None:
        """An agent's presence right after its change is stored (acd.agents.watch_presence):
        before the event, so no dialog goes to an agent who has just taken a call."""
        self.presences[user_id] = presence

    def note_assigned(self, agent: int, now: float) -> None:
        self.last_assigned[agent] = now

    def _put(self, dialog: OpenDialog) -> None:
        self._dialogs[dialog.id] = dialog
        self._by_customer[(dialog.channel_id, dialog.customer_id)] = dialog.id
        if dialog.state == "new":
            self._queued[dialog.id] = dialog
        elif dialog.state in HELD and dialog.assignee_id is not None:
            states = self._held.setdefault(dialog.assignee_id, {}).setdefault(
                dialog.channel_id, Counter()
            )
            states[dialog.state] += 1
            self._held_ids.setdefault(dialog.assignee_id, set()).add(dialog.id)
        if dialog.idle_deadline is not None and dialog.state == "assigned" and (
            self._next_idle is None or dialog.idle_deadline < self._next_idle
        ):  # fmt: skip
            self._next_idle = dialog.idle_deadline

    def _remove(self, dialog_id: int) -> None:
        dialog = self._dialogs.pop(dialog_id, None)
        if dialog is None:
            return
        self._queued.pop(dialog_id, None)
        key = (dialog.channel_id, dialog.customer_id)
        if self._by_customer.get(key) == dialog_id:
            del self._by_customer[key]
        if dialog.state in HELD and dialog.assignee_id is not None:
            ids = self._held_ids[dialog.assignee_id]
            ids.discard(dialog_id)
            if not ids:
                del self._held_ids[dialog.assignee_id]
            channels = self._held[dialog.assignee_id]
            states = channels[dialog.channel_id]
            states[dialog.state] -= 1
            if states[dialog.state] == 0:
                del states[dialog.state]
            if not states:
                del channels[dialog.channel_id]
            if not channels:
                del self._held[dialog.assignee_id]


def _epoch(iso: str | None) -> float | None:
    return datetime.fromisoformat(iso).timestamp() if iso else None
