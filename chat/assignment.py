"""Which agent takes a waiting chat dialog: availability, per-agent limits and the channel's
distribution, over plain values. Pure; the chat assigner loads the inputs and applies the plan.

Availability: `ready` and `available` take chats; wrap_up, not_ready, away, dnd and logged_out
do not (wrap_up belongs to the call just ended). An agent on a call takes chats only when
chat.chats_while_on_call says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from acd.presence import Presence, Status

# No agent ever holds more open dialogs than this, whatever a channel allows.
HARD_CAP = 1000
CHAT_STATUSES = frozenset({Status.READY, Status.AVAILABLE})


class Distribution(StrEnum):
    EVENLY = "evenly"  # the member with the fewest counted open dialogs, then longest unassigned
    IN_ORDER = "in_order"  # the first member in list order still under the limit
    TO_ALL = "to_all"  # shown to every eligible member; the first to claim it takes it


class Countable(StrEnum):
    """Open states a channel may leave out of its per-agent limit (closed never counts)."""

    ANSWERED = "answered"
    WAITING = "waiting"


@dataclass(frozen=True)
class ChannelRule:
    distribution: Distribution
    members: tuple[int, ...]
    check_availability: bool = True
    # Counted open dialogs per agent in this channel; None: only the hard cap.
    max_open: int | None = None
    excludes: frozenset[Countable] = frozenset()


@dataclass(frozen=True)
class WaitingDialog:
    id: int
    channel_id: int
    queued_at: float
    # Set when the dialog sat unanswered with this agent too long and must move on.
    idle_with: int | None = None
    # Agents it already sat idle with.
    tried: frozenset[int] = frozenset()


@dataclass(frozen=True)
class Placement:
    dialog_id: int
    # One agent, or for to_all every agent it is shown to.
    agents: tuple[int, ...]
    offer: bool = False
    # Every other member had it already: its list of tried agents starts again.
    new_round: bool = False


@dataclass
class Loads:
    """Open dialogs per agent: counted per channel (that channel's exclusions applied) and all
    of them (for the hard cap). The plan updates it as it places dialogs."""

    per_channel: dict[tuple[int, int], int]
    total: dict[int, int]

    def add(self, agent: int, channel_id: int, delta: int) -> None:
        key = (agent, channel_id)
        self.per_channel[key] = self.per_channel.get(key, 0) + delta
        self.total[agent] = self.total.get(agent, 0) + delta


def counted_open(states: Mapping[str, int], excludes: frozenset[Countable]) -> int:
    """Open dialogs that count towards a limit, from counts per state."""
    return sum(
        count
        for state, count in states.items()
        if state in ("assigned", "answered", "waiting") and state not in excludes
    )


def takes_chats(presence: Presence, *, check_availability: bool, while_on_call: bool) -> bool:
    if not while_on_call and presence.busy:
        return False
    return not check_availability or presence.status in CHAT_STATUSES


def eligible_agents(
    rule: ChannelRule,
    channel_id: int,
    presences: Mapping[int, Presence],
    loads: Loads,
    *,
    while_on_call: bool,
    exclude: frozenset[int] = frozenset(),
) -> list[int]:
    """Members (in list order) who may take one more dialog of this channel now."""
    return [
        m
        for m in rule.members
        if m not in exclude
        and takes_chats(presences.get(m, Presence()), check_availability=rule.check_availability,
                        while_on_call=while_on_call)
        and loads.total.get(m, 0) < HARD_CAP
        and (rule.max_open is None or loads.per_channel.get((m, channel_id), 0) < rule.max_open)
    ]  # fmt: skip


def choose_agent(
    rule: ChannelRule,
    channel_id: int,
    candidates: Sequence[int],
    loads: Loads,
    last_assigned: Mapping[int, float],
) -> int:
    """One of `candidates` (not empty) for evenly or in_order."""
    if rule.distribution is Distribution.IN_ORDER:
        return candidates[0]
    return min(
        candidates,
        key=lambda m: (
            loads.per_channel.get((m, channel_id), 0),
            last_assigned.get(m, 0.0),
            rule.members.index(m),
        ),
    )


def plan_placements(
    waiting: Sequence[WaitingDialog],
    rules: Mapping[int, ChannelRule],
    presences: Mapping[int, Presence],
    loads: Loads,
    last_assigned: Mapping[int, float],
    *,
    while_on_call: bool,
    now: float,
) -> list[Placement]:
    """Oldest dialog first within each channel; each placement counts at once, so one plan
    never takes an agent past a limit. A dialog moving on after idling skips the agents it
    idled with, and stays put when nobody else can take it."""
    placements: list[Placement] = []
    last = dict(last_assigned)
    # Channels with no eligible member left. Until a dialog moving on after idling frees
    # its holder's slot, loads only grow, so nothing later in them can be placed either: a
    # backlog of thousands costs one look per channel.
    full: set[int] = set()
    for dialog in sorted(waiting, key=lambda d: (d.queued_at, d.id)):
        rule = rules.get(dialog.channel_id)
        if rule is None or dialog.channel_id in full:
            continue
        holder = frozenset({dialog.idle_with} if dialog.idle_with is not None else ())

        def candidates_without(skip: frozenset[int], rule: ChannelRule = rule,
                               dialog: WaitingDialog = dialog) -> list[int]:  # fmt: skip
            return eligible_agents(rule, dialog.channel_id, presences, loads,
                                   while_on_call=while_on_call, exclude=skip)  # fmt: skip

        candidates, new_round = candidates_without(dialog.tried | holder), False
        if not candidates and dialog.tried:
            candidates, new_round = candidates_without(holder), True
        if not candidates:
            if dialog.idle_with is None:
                full.add(dialog.channel_id)  # the last look excluded nobody
            continue
        if dialog.idle_with is not None:
            loads.add(dialog.idle_with, dialog.channel_id, -1)
            full.clear()
        if rule.distribution is Distribution.TO_ALL:
            placements.append(Placement(dialog.id, tuple(candidates), True, new_round))
            continue
        agent = choose_agent(rule, dialog.channel_id, candidates, loads, last)
        loads.add(agent, dialog.channel_id, 1)
        last[agent] = now
        placements.append(Placement(dialog.id, (agent,), False, new_round))
    return placements


def over_limit(
    placements: Sequence[Placement],
    waiting: Mapping[int, WaitingDialog],
    rules: Mapping[int, ChannelRule],
    held: Loads,
) -> frozenset[int]:
    """Agents whom `placements` would take past a limit, counted from `held` (what SQL says
    they hold now). A plan is made from memory; a claim or forward committed just before may
    not have reached it yet, so the shell checks the plan against SQL inside the transaction
    that writes it, and replans around the agents named here."""
    loads = Loads(dict(held.per_channel), dict(held.total))
    over: set[int] = set()
    for placement in placements:
        dialog = waiting[placement.dialog_id]
        if dialog.idle_with is not None:
            loads.add(dialog.idle_with, dialog.channel_id, -1)
        if placement.offer:
            continue
        agent = placement.agents[0]
        rule = rules[dialog.channel_id]
        loads.add(agent, dialog.channel_id, 1)
        if loads.total[agent] > HARD_CAP or (
            rule.max_open is not None
            and loads.per_channel[(agent, dialog.channel_id)] > rule.max_open
        ):
            over.add(agent)
    return frozenset(over)
