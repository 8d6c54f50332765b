"""What one chat assigner pass writes: the customers' messages handed to it and the placements
it planned, for the dialogs they open and for those already waiting, in one transaction.

It is plain (blocking) SQLAlchemy Core, run whole by `SessionFactory.run_whole`: with SQLite
one hop to a worker thread for the transaction instead of one per statement, and no ORM unit
of work (each cost more than the SQL itself: together, most of a message's CPU). It takes
plain data from the assigner's memory (a PassPlan) and gives plain data back (a PassOutcome);
it never touches that memory.

Memory may be behind SQL by the events still on their way, so the plan is checked against SQL
before it is applied, and every write to a dialog that exists is conditional:
- the customer's open dialog is looked up in SQL (a forward may just have moved one here);
- the agents given dialogs are counted in SQL (a claim may just have taken a last slot):
  placements that would pass a limit are dropped and SQL's view of those agents is handed
  back. SQLite has one writer, so nothing commits between the count and the write; with
  PostgreSQL the agents' rows are locked first, as claims do;
- a waiting dialog moves only if it is still as the plan saw it (claimed, closed, answered
  meanwhile: it stays, and SQL's view of it is handed back).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, cast

from sqlalchemy import ColumnElement, Table, bindparam, delete, func, insert, select, tuple_
from sqlalchemy import update as update_statement
from sqlalchemy.orm import Session

from chat.assignment import ChannelRule, Loads, Placement, WaitingDialog, counted_open, over_limit
from chat.board import HELD, OpenDialog
from chat.channels import ChannelSpec
from chat.dialogs import (
    DialogView,
    MessageView,
    agent_rows_locked,
    dialog_data,
    held_counts,
    loads_from_rows,
    message_data,
)
from chat.models import ChatMessageRow, DialogOfferRow, DialogRow, OutboxRow
from chat.working_hours import is_open
from core.events import Event, stage_in

DIALOGS = cast(Table, DialogRow.__table__)
MESSAGES = cast(Table, ChatMessageRow.__table__)
OUTBOX = cast(Table, OutboxRow.__table__)
OFFERS = cast(Table, DialogOfferRow.__table__)

Staged = list[tuple[str, dict[str, Any]]]


@dataclass(frozen=True)
class CustomerMessage:
    """A message the connector posted, its channel secret and the blocklist checked."""

    channel_id: int
    customer_id: str
    customer_name: str | None
    text: str
    # The customer matches a `spam` blocklist entry: stored in a closed dialog, never assigned.
    spam: bool = False


class Inbound(NamedTuple):
    """The answer to the connector: where its message went."""

    dialog_id: int
    message_id: int
    state: str
    spam: bool


@dataclass(frozen=True)
class PassPlan:
    now: float
    messages: Sequence[CustomerMessage] = ()
    # Messages that open a dialog, as memory sees it: message index -> the dialog's stand-in
    # id in the plan (negative: it has no row yet).
    opening: Mapping[int, int] = field(default_factory=dict)
    placements: Sequence[Placement] = ()
    # Every dialog the plan placed or looked at, by its id in the plan.
    waiting: Mapping[int, WaitingDialog] = field(default_factory=dict)
    rules: Mapping[int, ChannelRule] = field(default_factory=dict)
    specs: Mapping[int, ChannelSpec] = field(default_factory=dict)
    # Agents given dialogs -> the dialogs memory says they hold (read again if SQL disagrees).
    held: Mapping[int, frozenset[int]] = field(default_factory=dict)
    # to_all dialogs whose offers go: nobody can take them now.
    withdraw: Sequence[int] = ()
    # Dialogs unanswered too long that nobody else can take: they stay, looked at again later.
    stay: Sequence[OpenDialog] = ()


@dataclass
class PassOutcome:
    # One per message, in order.
    answers: list[Inbound] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    # agent -> when given a dialog
    assigned: dict[int, float] = field(default_factory=dict)
    # How long each dialog given to an agent for the first time waited.
    first_waits: list[float] = field(default_factory=list)
    reassigned: int = 0
    dialogs_created: int = 0
    spam_dialogs: int = 0
    # Dialogs as SQL has them where memory was behind (None: closed or gone).
    corrected: dict[int, OpenDialog | None] = field(default_factory=dict)
    # Unanswered dialogs left with their agent -> their next deadline (epoch seconds).
    pushed: dict[int, float | None] = field(default_factory=dict)
    # Dialogs left waiting that the plan meant to place (or did not know): another pass.
    again: bool = False


def write_pass(session: Session, plan: PassPlan) -> PassOutcome:
    """The pass's transaction: messages and the dialogs they open, the plan's placements as
    far as SQL allows them, offers withdrawn, idle deadlines pushed back, their events."""
    out = PassOutcome()
    moment = datetime.fromtimestamp(plan.now, UTC)
    staged: Staged = []
    inbound = _Inbound(session, plan, moment)
    placements = inbound.placements_left(out)
    placements = _within_limits(session, placements, plan, out)
    by_stand_in = {p.dialog_id: p for p in placements if p.dialog_id < 0}
    created = inbound.write(session, by_stand_in, staged, out)
    for placement in placements:
        waiting = plan.waiting[placement.dialog_id]
        if placement.dialog_id < 0:
            opened = created[placement.dialog_id]
            if placement.offer:
                staged += _offer(session, placement, waiting, opened, out)
            else:
                staged.append(_assigned_event(opened, placement, plan, out))
        elif placement.offer:
            staged += _offer(session, placement, waiting, None, out)
        else:
            staged += _assign(session, placement, waiting, plan, out)
    for dialog_id in plan.withdraw:
        staged += _withdraw(session, dialog_id, out)
    for unanswered in plan.stay:
        _stay(session, unanswered, plan, out)
    if staged:
        out.events = stage_in(session, staged)
    out.answers = inbound.answers
    return out


# -- customers' messages -------------------------------------------------------------------


class _Inbound:
    """The pass's customer messages: which dialog each joins or opens (SQL's word, which
    memory's plan may have got wrong), then written with one INSERT per kind of row."""

    def __init__(self, session: Session, plan: PassPlan, now: datetime) -> None:
        self.plan = plan
        self.now = now
        self.answers: list[Inbound] = []
        # (channel, customer) -> (id, state) of the customer's open dialog there
        self.open: dict[tuple[int, str], tuple[int, str]] = {}
        if plan.messages:
            pairs = {(m.channel_id, m.customer_id) for m in plan.messages}
            for dialog_id, channel_id, customer_id, state in session.execute(
                select(DIALOGS.c.id, DIALOGS.c.channel_id, DIALOGS.c.customer_id,
                       DIALOGS.c.state)
                .where(DIALOGS.c.state != "closed",
                       tuple_(DIALOGS.c.channel_id, DIALOGS.c.customer_id).in_(pairs))
            ):  # fmt: skip
                self.open[(channel_id, customer_id)] = (dialog_id, state)
        # Message index -> stand-in id of the dialog it opens: the first message of a
        # customer with no open dialog, and every spam message (stored closed, one each).
        self.opens: dict[int, int] = {}
        # (channel, customer) -> index of the message opening their dialog in this pass
        self.opener: dict[tuple[int, str], int] = {}
        # Memory thought otherwise of a customer's open dialog: another pass places it.
        self.unexpected = False
        fresh = itertools.count(min([0, *plan.opening.values()]) - 1, -1)
        for index, m in enumerate(plan.messages):
            key = (m.channel_id, m.customer_id)
            planned = plan.opening.get(index)
            if m.spam or (key not in self.open and key not in self.opener):
                self.opens[index] = planned if planned is not None else next(fresh)
                if not m.spam:
                    self.opener[key] = index
                    self.unexpected |= planned is None
            elif planned is not None:
                self.unexpected = True

    def placements_left(self, out: PassOutcome) -> list[Placement]:
        """The plan's placements but those of dialogs SQL says are not opened."""
        out.again |= self.unexpected
        kept = frozenset(self.opens.values())
        return [p for p in self.plan.placements if p.dialog_id >= 0 or p.dialog_id in kept]

    def write(
        self, session: Session, placed: Mapping[int, Placement], staged: Staged,
        out: PassOutcome,
    ) -> dict[int, DialogView]:  # fmt: skip
        """Writes the messages and the dialogs they open (assigned at once when the plan
        gives one agent); returns the opened dialogs by stand-in id."""
        plan, now = self.plan, self.now
        if not plan.messages:
            return {}
        rows = {stand_in: self._new_dialog(plan.messages[index], placed.get(stand_in))
                for index, stand_in in self.opens.items()}  # fmt: skip
        ids = _insert(session, DIALOGS, list(rows.values()))
        opened = {s: DialogView.of({**row, "id": i})
                  for (s, row), i in zip(rows.items(), ids, strict=True)}  # fmt: skip
        out.dialogs_created = sum(1 for d in opened.values() if not d.spam)
        out.spam_dialogs = len(opened) - out.dialogs_created
        # Each message's dialog and that dialog's state once the message is in.
        dialog_of: list[tuple[int, str]] = []
        joined: dict[int, dict[str, Any]] = {}
        for index, m in enumerate(plan.messages):
            key = (m.channel_id, m.customer_id)
            if index in self.opens:
                dialog_of.append((opened[self.opens[index]].id, "closed" if m.spam else "new"))
            elif key in self.opener:  # a later message of a customer whose dialog opens now
                dialog_of.append((opened[self.opens[self.opener[key]]].id, "new"))
            else:
                dialog_id, state = self.open[key]
                if state in ("answered", "waiting"):
                    state = "assigned"  # the agent's turn again
                self.open[key] = (dialog_id, state)
                change = joined.setdefault(dialog_id, {"b_id": dialog_id})
                change.update(b_state=state, b_at=now)
                if m.customer_name:
                    change["b_name"] = m.customer_name
                dialog_of.append((dialog_id, state))
        _update_joined(session, list(joined.values()))
        message_rows: list[dict[str, Any]] = [
            {"dialog_id": dialog_id, "direction": "in", "author_id": None, "text": m.text,
             "created_at": now}
            for m, (dialog_id, _) in zip(plan.messages, dialog_of, strict=True)
        ]  # fmt: skip
        message_ids = _insert(session, MESSAGES, message_rows)
        replies: list[tuple[int, str, ChannelSpec]] = []
        for index, (m, (dialog_id, state), row, message_id) in enumerate(
            zip(plan.messages, dialog_of, message_rows, message_ids, strict=True)
        ):
            if index in self.opens:
                # As it was opened, before this pass placed it (dialog_assigned follows).
                view = opened[self.opens[index]]
                staged.append(("dialog_created", dialog_data(view) | {
                    "state": state, "assignee_id": None, "assigned_at": None,
                    "idle_deadline": None,
                }))  # fmt: skip
            message = MessageView(message_id, **row)
            staged.append(("message_received", message_data(message, state)))
            spec = plan.specs.get(m.channel_id)
            if index in self.opens and not m.spam and spec is not None and (
                spec.off_hours_reply and not is_open(spec.working_hours, now)
            ):  # fmt: skip
                replies.append((dialog_id, state, spec))
        self._off_hours_replies(session, replies, staged)
        final = {view.id: view.state for view in opened.values()}
        self.answers = [
            Inbound(dialog_id, message_id, final.get(dialog_id, state), m.spam)
            for m, (dialog_id, state), message_id in zip(
                plan.messages, dialog_of, message_ids, strict=True)
        ]  # fmt: skip
        return opened

    def _new_dialog(self, m: CustomerMessage, placement: Placement | None) -> dict[str, Any]:
        now = self.now
        row: dict[str, Any] = {
            "channel_id": m.channel_id, "customer_id": m.customer_id,
            "customer_name": m.customer_name, "state": "new", "spam": m.spam,
            "assignee_id": None, "created_at": now, "queued_at": now, "assigned_at": None,
            "first_assigned_at": None, "idle_deadline": None, "tried": [],
            "first_response_at": None, "first_response_by": None, "last_message_at": now,
            "closed_at": None, "closed_by": None, "rating": None,
        }  # fmt: skip
        if m.spam:
            row.update(state="closed", closed_at=now, closed_by="spam")
        elif placement is not None and not placement.offer:
            row.update(state="assigned", assignee_id=placement.agents[0], assigned_at=now,
                       first_assigned_at=now,
                       idle_deadline=_deadline(now, self.plan.specs.get(m.channel_id)))  # fmt: skip
        return row

    def _off_hours_replies(
        self, session: Session, replies: list[tuple[int, str, ChannelSpec]], staged: Staged
    ) -> None:
        """A dialog opened outside its channel's working hours is told so, once."""
        if not replies:
            return
        rows: list[dict[str, Any]] = [
            {"dialog_id": dialog_id, "direction": "out", "author_id": None,
             "text": spec.off_hours_reply, "created_at": self.now}
            for dialog_id, _, spec in replies
        ]  # fmt: skip
        ids = _insert(session, MESSAGES, rows)
        outbox = [{"message_id": i, "dialog_id": row["dialog_id"], "attempts": 0,
                   "next_attempt_at": self.now, "last_error": None, "delivered_at": None}
                  for i, row, (_, _, spec) in zip(ids, rows, replies, strict=True)
                  if spec.reply_url]  # fmt: skip
        if outbox:
            session.execute(insert(OUTBOX), outbox)
        for message_id, row, (_, state, _) in zip(ids, rows, replies, strict=True):
            message = MessageView(message_id, **row)
            staged.append(("message_sent", message_data(message, state)))


def _insert(session: Session, table: Table, rows: list[dict[str, Any]]) -> list[int]:
    if not rows:
        return []
    statement = insert(table).returning(table.c.id, sort_by_parameter_order=True)
    return list(session.scalars(statement, rows).all())


def _update_joined(session: Session, changes: list[dict[str, Any]]) -> None:
    with_name = [c for c in changes if "b_name" in c]
    without = [c for c in changes if "b_name" not in c]
    base = update_statement(DIALOGS).where(DIALOGS.c.id == bindparam("b_id"))
    values: dict[str, Any] = {"state": bindparam("b_state"), "last_message_at": bindparam("b_at")}
    if without:
        session.execute(base.values(**values), without)
    if with_name:
        session.execute(base.values(**values, customer_name=bindparam("b_name")), with_name)


# -- placements ----------------------------------------------------------------------------


def _within_limits(
    session: Session, placements: list[Placement], plan: PassPlan, out: PassOutcome
) -> list[Placement]:
    """The placements SQL's counts allow; those of agents memory was wrong about wait."""
    agents = sorted({p.agents[0] for p in placements if not p.offer})
    if not agents:
        return placements
    if session.get_bind().dialect.name != "sqlite":
        session.execute(agent_rows_locked(agents))
    held = _held_loads(session, agents, plan.specs)
    over = over_limit(placements, plan.waiting, plan.rules, held)
    if not over:
        return placements
    # A claim or forward committed before this transaction and its event has not reached
    # memory (or another process wrote): SQL's view of these agents goes back to memory.
    known = frozenset().union(*(plan.held.get(a, frozenset()) for a in over))
    rows = session.execute(select(DIALOGS).where(
        (DIALOGS.c.assignee_id.in_(over) & DIALOGS.c.state.in_(HELD)) | DIALOGS.c.id.in_(known)
    )).mappings().all()  # fmt: skip
    for row in rows:
        out.corrected[row["id"]] = open_dialog(DialogView.of(row))
    for gone in known - {row["id"] for row in rows}:
        out.corrected[gone] = None
    out.again = True
    while over:
        placements = [p for p in placements if p.offer or p.agents[0] not in over]
        over = over_limit(placements, plan.waiting, plan.rules, held)
    return placements


def _held_loads(session: Session, agents: Sequence[int], specs: Mapping[int, ChannelSpec]) -> Loads:
    """What SQL says the agents hold now: counted per channel (its exclusions applied) and in
    all (for the hard cap)."""
    loads = Loads({}, {})
    counts = loads_from_rows(session.execute(held_counts(agents)))
    for (agent, channel_id), states in counts.items():
        spec = specs.get(channel_id)
        loads.per_channel[(agent, channel_id)] = counted_open(
            states, spec.limit_excludes if spec is not None else frozenset()
        )
        loads.total[agent] = loads.total.get(agent, 0) + sum(states.values())
    return loads


def _assigned_event(
    dialog: DialogView, placement: Placement, plan: PassPlan, out: PassOutcome
) -> tuple[str, dict[str, Any]]:
    """A dialog this pass opened and wrote as assigned at once."""
    out.assigned[placement.agents[0]] = plan.now
    out.first_waits.append(0.0)
    return "dialog_assigned", {**dialog_data(dialog), "cause": "queue",
                               "previous_assignee_id": None}  # fmt: skip


def _assign(
    session: Session, placement: Placement, dialog: WaitingDialog, plan: PassPlan,
    out: PassOutcome,
) -> Staged:  # fmt: skip
    moment = datetime.fromtimestamp(plan.now, UTC)
    agent = placement.agents[0]
    previous = dialog.idle_with
    tried = [] if placement.new_round else sorted(dialog.tried)
    if previous is not None:
        tried.append(previous)
    row = _update(session, dialog.id, _as_seen(previous), out, {
        "state": "assigned", "assignee_id": agent, "assigned_at": moment, "tried": tried,
        "first_assigned_at": func.coalesce(DIALOGS.c.first_assigned_at, moment),
        "idle_deadline": _deadline(moment, plan.specs.get(dialog.channel_id)),
    })  # fmt: skip
    if row is None:
        return []
    if previous is None:
        out.first_waits.append(max(0.0, plan.now - dialog.queued_at))
    else:
        out.reassigned += 1
    out.assigned[agent] = plan.now
    cause = "queue" if previous is None else "idle"
    return [("dialog_assigned",
             {**dialog_data(row), "cause": cause, "previous_assignee_id": previous})]  # fmt: skip


def _offer(
    session: Session, placement: Placement, dialog: WaitingDialog, opened: DialogView | None,
    out: PassOutcome,
) -> Staged:  # fmt: skip
    row = opened
    if dialog.idle_with is not None:
        # It idled with its taker: back to the queue, shown to the others.
        previous = dialog.idle_with
        tried = [*([] if placement.new_round else sorted(dialog.tried)), previous]
        row = _update(session, dialog.id, _as_seen(previous), out, {
            "state": "new", "assignee_id": None, "idle_deadline": None, "tried": tried,
        })  # fmt: skip
        if row is None:
            return []
        out.reassigned += 1
    elif row is None:
        row = _read(session, dialog.id)
        if row is None or row.state != "new" or row.assignee_id is not None:
            out.corrected[dialog.id] = open_dialog(row) if row is not None else None
            return []
    session.execute(delete(OFFERS).where(OFFERS.c.dialog_id == row.id))
    session.execute(insert(OFFERS), [{"dialog_id": row.id, "user_id": a}
                                     for a in placement.agents])  # fmt: skip
    return [("dialog_offered", {**dialog_data(row), "offered_to": sorted(placement.agents)})]


def _withdraw(session: Session, dialog_id: int, out: PassOutcome) -> Staged:
    session.execute(delete(OFFERS).where(OFFERS.c.dialog_id == dialog_id))
    row = _read(session, dialog_id)
    if row is None or row.state != "new":
        out.corrected[dialog_id] = open_dialog(row) if row is not None else None
        return []
    return [("dialog_offered", {**dialog_data(row), "offered_to": []})]


def _stay(session: Session, dialog: OpenDialog, plan: PassPlan, out: PassOutcome) -> None:
    moment = datetime.fromtimestamp(plan.now, UTC)
    deadline = _deadline(moment, plan.specs.get(dialog.channel_id))
    row = _update(session, dialog.id, _as_seen(dialog.assignee_id), out,
                  {"idle_deadline": deadline})  # fmt: skip
    if row is not None:
        out.pushed[dialog.id] = deadline.timestamp() if deadline is not None else None


def _as_seen(holder: int | None) -> ColumnElement[bool]:
    """The dialog is still as the plan saw it: waiting, or assigned to `holder`."""
    if holder is None:
        return (DIALOGS.c.state == "new") & DIALOGS.c.assignee_id.is_(None)
    return (DIALOGS.c.state == "assigned") & (DIALOGS.c.assignee_id == holder)


def _update(
    session: Session, dialog_id: int, where: ColumnElement[bool], out: PassOutcome,
    values: dict[str, Any],
) -> DialogView | None:  # fmt: skip
    """A conditional UPDATE; None (and SQL's view handed back) when the dialog changed."""
    row = session.execute(
        update_statement(DIALOGS).where(DIALOGS.c.id == dialog_id, where).values(**values)
        .returning(*DIALOGS.c)
    ).mappings().first()  # fmt: skip
    if row is None:
        found = _read(session, dialog_id)
        out.corrected[dialog_id] = open_dialog(found) if found is not None else None
        return None
    return DialogView.of(row)


def _read(session: Session, dialog_id: int) -> DialogView | None:
    row = session.execute(select(DIALOGS).where(DIALOGS.c.id == dialog_id)).mappings().first()
    return DialogView.of(row) if row is not None else None


def open_dialog(row: DialogRow | DialogView, offered_to: tuple[int, ...] = ()) -> OpenDialog | None:
    """Memory's record of a dialog; None for a closed one."""
    if row.state == "closed":
        return None
    return OpenDialog(
        id=row.id, channel_id=row.channel_id, customer_id=row.customer_id, state=row.state,
        assignee_id=row.assignee_id, queued_at=row.queued_at.timestamp(),
        idle_deadline=row.idle_deadline.timestamp() if row.idle_deadline else None,
        tried=frozenset(row.tried or ()), offered_to=offered_to,
    )  # fmt: skip


def _deadline(moment: datetime, spec: ChannelSpec | None) -> datetime | None:
    if spec is None or spec.idle_seconds <= 0:
        return None
    return moment + timedelta(seconds=spec.idle_seconds)
