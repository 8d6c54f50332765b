"""Call flows: what happens to every new call leg a media worker reports (the controller's job).

Trunk calls to a company number hear its greeting and may dial an extension during it; phone
calls reach another extension (internal) or an external number through the trunk (outbound).
The pure decisions live in ivr.digits and ivr.dialplan; this module is the asyncio shell.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import structlog

from acd.agents import apply_feature_code, change_presence
from acd.dispatcher import Dispatcher
from acd.forwarding import Action, Decision, Rules, after_no_answer, decide, rules_for_call
from acd.presence import direct_call_ended, direct_call_started
from acd.queue_places import ADOPTION_WINDOW_S, QueuePlace, QueuePlaces
from acd.queues import Queue, find_queue, queue_of_extension
from chat.blocklist import Action as BlocklistAction
from chat.blocklist import all_actions, calling_number_refused
from core.context import PhoneContacts, ServiceContext
from core.db import utcnow
from core.errors import DomainError
from core.metrics import Metrics
from core.read_cache import ReadCache
from destinations.destination import Destination
from extensions.phones import Reachable, dialable_extensions, reachable_user
from flows.call_recovery import close_interrupted_calls
from flows.callback import Callbacks
from flows.edge import Edge, number_uri
from flows.menu import discard_pending_keys, walk_menus
from flows.queue_call import QueueCall, QueueOutcome
from flows.recording import CallRecorder
from flows.supervision import (
    LiveTalks,
    NoLiveTalk,
    NoRoomToSupervise,
    SupervisionMode,
    Talk,
    supervise,
)
from flows.taken_over import agents_still_talking, talk_taken_over, talks_lost
from flows.transfer import (
    Refusal,
    Transfer,
    TransferDesk,
    TransferKind,
    judge_transfer,
    talk_until_transfer,
    transfer_codes,
)
from flows.voicemail import leave_voicemail
from ivr.cdr import (
    BUSY_CODES,
    UNAVAILABLE_CODES,
    CallLog,
    Direction,
    Disposition,
    disposition_of,
    supervised,
)
from ivr.dialplan import Dialled, plan_phone_call
from ivr.digits import (
    Collection,
    Outcome,
    feed_digit,
    feed_tick,
    give_up_waiting,
    start_collecting,
)
from ivr.menus import menu_for_extension, menu_options
from ivr.number_hours import off_hours_route
from ivr.numbers import InboundNumber, number_for_call
from ivr.prompts import system_prompt
from pbx.legs import Leg, LegGone, TransferRequest, WorkerCommandFailed
from pbx.protocol import SOURCE_HEADER, TRUNK_SOURCE

# A queue's settings and members change with these (not with queue_<log event>).
QUEUE_CHANGES = ("queue_created", "queue_updated", "queue_deleted", "user_")
log = structlog.get_logger(__name__)

# Transfer by keys: the first digit of the target within this, the next within
# calls.inter_digit_timeout; at most this many.
TRANSFER_FIRST_DIGIT_S = 10.0
MAX_TRANSFER_DIGITS = 24
# Destinations leading to destinations (queue overflow into a queue...) stop after this many.
MAX_DESTINATION_HOPS = 5

USER_HEADER = "X-PBX-User"
# The far end's IVR needs a moment after answering before it listens for digits.
POST_DIAL_DELAY_S = 1.0
# Final answers of a rung phone, as a disposition.


@dataclass(frozen=True)
class Tones:
    ringback: Path
    hold_music: Path  # queues without hold music of their own
    beep: Path  # before a voicemail recording


# Joins a leg's worker to another worker: (near leg, far leg), both answered (pbx.pool).
Link = Callable[[Leg, int], Awaitable[tuple[Leg, Leg]]]


@dataclass(frozen=True)
class Consultation:
    """A phone's own call: the user who made it, their leg, the party they talk to."""

    user_id: int
    phone_leg: Leg
    other: Leg
    target: Reachable | str


@dataclass(frozen=True)
class Finish:
    disposition: Disposition
    hangup_by: str  # caller | callee | system
    # The callee's final answer when it never answered (relayed to a phone caller).
    sip_code: int | None = None
    # The phone that answered passed the caller on: the flow goes on there (flows.transfer).
    transfer: Transfer | None = None
    # Who is passed on when it is not the flow's own leg: the callee of a call our phone
    # placed, when that phone transferred it.
    transferee: Leg | None = None


# Changes to who holds an extension, who may be reached and how calls to them are forwarded.
DIRECTORY_EVENTS = (
    "extension_", "user_", "queue_created", "queue_updated", "queue_deleted", "menu_",
    "forwarding_",
)  # fmt: skip


class CallFlows:
    """Runs one flow per inbound leg; give `handle` to the worker pool as its on_inbound."""

    def __init__(
        self,
        ctx: ServiceContext,
        registrations: PhoneContacts,
        dispatcher: Dispatcher,
        tones: Tones,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._ctx = ctx
        self._registrations = registrations
        self._dispatcher = dispatcher
        self._tones = tones
        # Business hours are decided with this clock (tests fix it).
        self._clock = clock
        self._calls = ctx.settings.calls
        self._sip = ctx.settings.sip
        self._edge = Edge(self._sip.host, self._sip.port, self._sip.domain)
        # A call's other legs pass the edge it came through (any of the cluster's): its
        # signalling then stays on that edge, which may outlive this node's.
        self._edges = {
            edge: Edge(edge.rpartition(":")[0], int(edge.rpartition(":")[2]), self._sip.domain)
            for edge in ctx.settings.edges
        }
        # Read before the caller is answered: from memory after the first call.
        self._numbers: ReadCache[str, InboundNumber | None] = ReadCache(
            lambda dialled: number_for_call(ctx, dialled),
            emptied_by=("number_", "prompt_"),
            wakeups=ctx.wakeups,
        )
        # Who holds an extension and how to reach them: read on the digit -> INVITE path.
        self._queue_of: ReadCache[str, int | None] = ReadCache(
            lambda ext: queue_of_extension(ctx, ext), emptied_by=DIRECTORY_EVENTS,
            wakeups=ctx.wakeups,
        )  # fmt: skip
        self._queues: ReadCache[int, Queue | None] = ReadCache(
            lambda queue_id: find_queue(ctx, queue_id), emptied_by=QUEUE_CHANGES,
            wakeups=ctx.wakeups,
        )  # fmt: skip
        self._menu_of: ReadCache[str, int | None] = ReadCache(
            lambda ext: menu_for_extension(ctx, ext), emptied_by=DIRECTORY_EVENTS,
            wakeups=ctx.wakeups,
        )  # fmt: skip
        self._users: ReadCache[str, Reachable | None] = ReadCache(
            lambda ext: reachable_user(ctx, ext), emptied_by=DIRECTORY_EVENTS, wakeups=ctx.wakeups
        )
        self._forwarding: ReadCache[int, Rules] = ReadCache(
            lambda user_id: rules_for_call(ctx, user_id), emptied_by=DIRECTORY_EVENTS,
            wakeups=ctx.wakeups,
        )  # fmt: skip
        self._dialable: ReadCache[None, frozenset[str]] = ReadCache(
            lambda _all: dialable_extensions(ctx), emptied_by=DIRECTORY_EVENTS,
            wakeups=ctx.wakeups,
        )  # fmt: skip
        self._menu_keys: ReadCache[int, frozenset[str]] = ReadCache(
            lambda menu_id: menu_options(ctx, menu_id), emptied_by=DIRECTORY_EVENTS,
            wakeups=ctx.wakeups,
        )  # fmt: skip
        # The whole blocklist under one key: callers are mostly new numbers each time.
        self._blocklist: ReadCache[None, dict[str, BlocklistAction]] = ReadCache(
            lambda _all: all_actions(ctx), emptied_by=("blocklist_",), wakeups=ctx.wakeups
        )
        self._recorder = CallRecorder(ctx)
        # Talks of our phones by their dialog's SIP Call-ID (attended transfer by REFER).
        self._consultations: dict[str, Consultation] = {}
        # Calls connected to one of our users' phones now (supervision).
        self.talks = LiveTalks()
        # Waiting callers who asked to be called back (flows.callback).
        self.callbacks = Callbacks(
            ctx, dispatcher, self._edge, registrations, self._recorder, self.talks,
            tones.ringback,
        )  # fmt: skip
        # Waiting callers' places, for a controller taking over (pbx media hosts only).
        self.places = QueuePlaces(ctx.redis, enabled=bool(ctx.settings.cluster.media_hosts))
        self._supervisions: set[asyncio.Task[None]] = set()
        self._link: Link | None = None
        self.transfer_codes = transfer_codes(ctx.settings.feature_codes)

    @property
    def tones(self) -> Tones:
        return self._tones

    @property
    def metrics(self) -> Metrics:
        return self._ctx.metrics

    async def warm(self) -> None:
        """Read what every call needs before the first one arrives: the extensions a caller
        may dial and the blocklist (the per-number caches fill on their first call)."""
        await self._dialable.get(None)
        await self._blocklist.get(None)
        # Before any worker is taken over: its callers may be offered to agents at once.
        await agents_still_talking(self._ctx, await self.places.take_left())

    async def close_unclaimed_places(self) -> None:
        """The records of callers a lost controller left waiting whom no worker taken over
        holds (their media host is gone too) are closed as interrupted."""
        await asyncio.sleep(ADOPTION_WINDOW_S)
        unclaimed = self.places.unclaimed()
        if not unclaimed:
            return
        try:
            await talks_lost(self._ctx, list(unclaimed.values()))
            closed = await close_interrupted_calls(
                self._ctx, only={place.call_id for place in unclaimed.values()}
            )
        except Exception:  # a task nobody awaits: said here, and the next takeover retries
            log.exception("queue_places_not_closed", calls=len(unclaimed))
            return
        await self.places.forget(*unclaimed)
        log.warning("queue_places_lost", calls=closed)

    async def adopted(self, leg: Leg, peer: Leg | None) -> None:
        """A call a lost controller left on a media host (pbx.pool took its worker over): a
        bridged pair talks on until one side hangs up (a queue's talk then ends as the lost
        controller would have ended it, flows.taken_over); a caller who waited in a queue
        waits on there with the place they had; anyone else is hung up (their record was
        closed as interrupted at the takeover, flows.call_recovery)."""
        place = self.places.claim(leg.id)
        taken_over = self._ctx.metrics.calls_taken_over
        if self.places.given_up(leg.id):  # taken over too late: closed, its agent freed
            taken_over.labels(kind="hung_up").inc()
            await _hang_up(leg, peer)
            return
        if peer is not None:
            if place is not None and place.agent_user_id is not None:
                taken_over.labels(kind="talk").inc()
                try:
                    await talk_taken_over(self._ctx, place, leg, peer)
                finally:
                    await self.places.forget(leg.id)
                return
            taken_over.labels(kind="bridged").inc()
            if place is not None:  # not a queue's talk: its record ends as the others did
                await self.places.forget(leg.id)
                await close_interrupted_calls(self._ctx, only={place.call_id})
            await _end_together(leg, peer)
            return
        if place is None:
            taken_over.labels(kind="hung_up").inc()
            await _hang_up(leg, None)
            return
        taken_over.labels(kind="waiting").inc()
        try:
            await self._wait_on(leg, place)
        finally:
            await self.places.forget(leg.id)  # also if the queue is gone meanwhile

    async def _wait_on(self, leg: Leg, place: QueuePlace) -> None:
        """A caller taken over goes back into their queue, in their place."""
        if place.agent_user_id is not None:
            # The agent's leg went before the bridge (or as the controller died): the agent
            # is free, and the caller waits on in their place.
            await talks_lost(self._ctx, [place])
            place = place.model_copy(update={"agent_user_id": None, "talk_started_at": None})
        call = CallLog.taken_over(self._ctx, place.call_id, Direction.INBOUND)
        call.number_records = place.number_records
        await self._run(call, leg, lambda: self._to_queue(
            leg, call, place.queue_id, priority=place.priority, entered_at=place.entered_at,
        ))  # fmt: skip

    async def handle(self, leg: Leg) -> None:
        source = leg.headers.get(SOURCE_HEADER)
        if source == TRUNK_SOURCE:
            await self._company_number_call(leg)
        elif source == "phone" and leg.headers.get(USER_HEADER):
            await self._phone_call(leg, leg.headers[USER_HEADER])
        else:
            # Only the edge sets these headers; anything else did not come through it.
            await leg.reject(403, "Not through the edge")

    # -- company numbers: greeting, extension dialing, default destination ----------------

    async def _company_number_call(self, leg: Leg) -> None:
        number = await self._numbers.get(unquote(leg.called))
        if number is None:
            await leg.reject(404, "Unknown number")
            return
        if calling_number_refused(await self._blocklist.get(None), leg.caller):
            await leg.reject(603, "Decline")  # blocklisted (chat.blocklist)
            return
        call = CallLog.open(
            self._ctx, direction=Direction.INBOUND, caller=leg.caller, called=leg.called,
            worker_id=leg.worker_id,
        )  # fmt: skip
        call.number_records = number.record_calls
        call.add_leg(leg.id, "caller", leg.sip_call_id)
        await self._run(call, leg, lambda: self._greeting_flow(leg, call, number))

    async def _greeting_flow(self, leg: Leg, call: CallLog, number: InboundNumber) -> Finish:
        await leg.answer()
        call.system_answered()
        closed = await off_hours_route(self._ctx, number.id, self._clock())
        if closed is not None:
            if closed.prompt is not None:
                await self._play_through(leg, closed.prompt)
            return await self._to_destination(leg, call, closed.destination, number)
        prompt = number.greeting_path
        # A menu after the greeting: a single digit that is no extension picks its option.
        menu = number.default_destination
        menu_keys = await self._menu_keys.get(menu.id) if menu.type == "menu" else frozenset()
        if not number.extension_dialing:
            playback = await leg.play(prompt, barge_in=False)
            await _until(playback.finished, leg)
            return await self._to_destination(leg, call, number.default_destination, number)
        for attempt in range(self._calls.unknown_extension_retries + 1):
            collection = await self._collect_extension(leg, prompt, menu_keys)
            if collection.outcome is Outcome.MENU_OPTION and menu.type == "menu":
                return await self._to_menu(leg, call, menu.id, number, first_key=collection.digits)
            if collection.outcome is Outcome.EXTENSION:
                decided_at = asyncio.get_running_loop().time()
                return await self._to_destination_extension(
                    leg, call, collection.digits, number, decided_at=decided_at
                )
            if collection.outcome is Outcome.NOTHING:
                break
            log.info("unknown_extension_dialled", call_id=call.id, digits=collection.digits,
                     attempt=attempt + 1)  # fmt: skip
            prompt = await system_prompt(self._ctx, "extension_not_found")
        return await self._to_destination(leg, call, number.default_destination, number)

    async def _collect_extension(
        self, leg: Leg, prompt: Path, menu_keys: frozenset[str] = frozenset()
    ) -> Collection:
        """Play `prompt` (stopped by the first digit) and collect an extension (ivr.digits),
        or one key of the menu that follows the greeting."""
        loop = asyncio.get_running_loop()
        collection = start_collecting(
            await self._dialable.get(None), self._calls.inter_digit_timeout, menu_keys
        )
        playback = await leg.play(prompt, barge_in=True)
        prompt_over_at: float | None = None
        while not collection.done:
            now = loop.time()
            if collection.deadline is not None:
                wait: float | None = collection.deadline - now
            elif playback.finished.done():
                prompt_over_at = prompt_over_at if prompt_over_at is not None else now
                wait = prompt_over_at + self._calls.wait_after_greeting - now
                if wait <= 0:
                    collection = give_up_waiting(collection)
                    break
            else:
                wait = None  # no digit yet and the greeting plays: wait for either
            playing = None if playback.finished.done() else playback.finished
            digit = await _next_digit_or(leg, playing, wait)
            if digit is None:
                collection = feed_tick(collection, loop.time())
            else:
                collection = feed_digit(collection, digit, loop.time())
        if not collection.digits:
            # A digit has stopped the prompt in the worker already (barge-in): no round trip
            # to it between the deciding digit and the dial.
            with contextlib.suppress(LegGone):
                await leg.stop_playback()
        return collection

    async def _to_destination(
        self,
        leg: Leg,
        call: CallLog,
        destination: Destination,
        number: InboundNumber | None,
        *,
        hops: int = 0,
    ) -> Finish:
        if destination.type == "extension":
            return await self._to_destination_extension(leg, call, destination.extension, number)
        if destination.type == "number":
            return await self._to_external(leg, call, destination.number, post_dial="")
        if destination.type == "queue" and hops < MAX_DESTINATION_HOPS:
            return await self._to_queue(
                leg, call, destination.id, hops=hops, priority=destination.priority
            )
        # hangup (menu and voicemail arrive with their issues)
        if destination.type == "menu":
            return await self._to_menu(leg, call, destination.id, number)
        if destination.type == "voicemail":
            return await self._to_voicemail(leg, call, destination.box)
        # hangup
        await self.say(leg, "goodbye")
        await leg.hangup()
        return Finish(Disposition.ENDED_IN_IVR, "system")

    async def _to_queue(
        self, leg: Leg, call: CallLog, queue_id: int, *, hops: int = 0, priority: int = 0,
        entered_at: float | None = None,
    ) -> Finish:  # fmt: skip
        """The caller (answered) waits in the queue with `priority` (higher is served first)
        from now on, or since `entered_at` (taken over); an overflow goes on to its
        destination."""
        queue = await self._queues.get(queue_id)
        if queue is None:
            log.warning("queue_gone", queue_id=queue_id, call_id=call.id)
            await self.say(leg, "not_available")
            await leg.hangup()
            return Finish(Disposition.UNAVAILABLE, "system")
        result = await QueueCall(
            self._ctx, self._dispatcher, self._edge_of(leg), leg, call, queue,
            self._tones.hold_music,
            self._registrations, self._recorder, self.transfer_desk, self.talks, self.callbacks,
            self.places, priority=priority, entered_at=entered_at,
        ).run()  # fmt: skip
        if result.outcome is QueueOutcome.ANSWERED:
            return Finish(Disposition.ANSWERED, result.hangup_by, transfer=result.transfer)
        if result.outcome is QueueOutcome.CALLBACK:
            return Finish(Disposition.CALLBACK, result.hangup_by)
        if result.outcome is QueueOutcome.ABANDONED:
            return Finish(Disposition.ABANDONED, result.hangup_by)
        if result.outcome is QueueOutcome.FAILED:
            return Finish(Disposition.FAILED, "system")
        await leg.stop_playback()
        return await self._to_destination(leg, call, queue.spec.overflow, None, hops=hops + 1)

    async def _to_destination_extension(
        self,
        leg: Leg,
        call: CallLog,
        extension: str,
        number: InboundNumber | None,
        *,
        decided_at: float | None = None,
    ) -> Finish:
        queue_id = await self._queue_of.get(extension)
        if queue_id is not None:
            return await self._to_queue(leg, call, queue_id)
        menu_id = await self._menu_of.get(extension)
        if menu_id is not None:
            return await self._to_menu(leg, call, menu_id, number)
        finish = await self._ring_extension(
            leg, call, extension, caller_answered=True, decided_at=decided_at
        )
        if finish.disposition in (Disposition.ANSWERED, Disposition.ABANDONED) or number is None:
            return finish
        if finish.disposition is Disposition.UNAVAILABLE:
            await self.say(leg, "not_available")
        fallback = number.no_answer_destination
        if fallback.type == "extension" and fallback.extension == extension:
            await leg.hangup()
            return finish
        # The fallback's own failure ends the call: no endless loop between destinations.
        return await self._to_destination(leg, call, fallback, None)

    # -- menus and voicemail (flows.menu, flows.voicemail) ---------------------------

    async def _to_menu(
        self, leg: Leg, call: CallLog, menu_id: int, number: InboundNumber | None,
        *, first_key: str | None = None,
    ) -> Finish:  # fmt: skip
        if first_key is None:
            await discard_pending_keys(leg)

        async def route(destination: Destination) -> Finish:
            return await self._to_destination(leg, call, destination, number)

        return await walk_menus(
            self._ctx, leg, menu_id, route, first_key=first_key, call_id=call.id
        )

    async def _to_voicemail(self, leg: Leg, call: CallLog, box_id: int) -> Finish:
        result = await leave_voicemail(
            self._ctx, leg, box_id, self._tones.beep, caller=leg.caller, call_id=call.id
        )
        if not result.box_found:
            await self.say(leg, "not_available")
            await leg.hangup()
            return Finish(Disposition.ENDED_IN_IVR, "system")
        return Finish(Disposition.VOICEMAIL, result.hangup_by)

    # -- ringing a phone and bridging -----------------------------------------------------

    async def _ring_extension(
        self,
        leg: Leg,
        call: CallLog,
        extension: str,
        *,
        caller_answered: bool,
        decided_at: float | None = None,
        follow_forwarding: bool = True,
    ) -> Finish:
        """Ring an extension's phone for `leg` (after the user's per-status forwarding),
        bridge on answer, return once the call ends.

        `decided_at`: when the caller's digits decided the extension, for the dial latency.
        """
        target = await self._users.get(extension)
        if target is None:
            return Finish(Disposition.UNAVAILABLE, "system")
        # A forwarded call does not follow the next user's forwarding: no loops.
        rules = await self._forwarding.get(target.user_id) if follow_forwarding else {}
        # Presence from the controller's memory (the dispatcher mirrors every change), and no
        # registration look-up: a phone that is not registered makes the edge answer 480 at
        # once, which is the same "unavailable". Nothing but the dial is awaited here.
        decision = decide(self._dispatcher.presence_of(target.user_id), rules)
        if decision.action is not Action.RING:
            return await self._forward(leg, call, extension, decision, caller_answered)
        finish = await self._dial_user(
            leg, call, extension, target, caller_answered=caller_answered, decided_at=decided_at
        )
        unanswered = (Disposition.NO_ANSWER, Disposition.BUSY, Disposition.UNAVAILABLE)
        no_answer = after_no_answer(rules)
        if no_answer is not None and finish.disposition in unanswered and not leg.ended.done():
            return await self._forward(leg, call, extension, no_answer, caller_answered)
        return finish

    async def _forward(
        self, leg: Leg, call: CallLog, extension: str, decision: Decision, caller_answered: bool
    ) -> Finish:
        destination = decision.destination
        log.info("direct_call_forwarded", call_id=call.id, extension=extension,
                 action=decision.action.value,
                 destination=destination.model_dump() if destination else None)  # fmt: skip
        if destination is None or destination.type == "hangup":
            return Finish(Disposition.BUSY, "callee", sip_code=486)
        if destination.type == "extension":
            return await self._ring_extension(leg, call, destination.extension,
                                              caller_answered=caller_answered,
                                              follow_forwarding=False)  # fmt: skip
        if destination.type == "voicemail":
            if not caller_answered:
                await leg.answer()
                call.system_answered()
            return await self._to_voicemail(leg, call, destination.box)
        assert destination.type == "number"
        return await self._to_external(
            leg, call, destination.number, post_dial="", caller_answered=caller_answered
        )

    async def _dial_user(
        self,
        leg: Leg,
        call: CallLog,
        extension: str,
        target: Reachable,
        *,
        caller_answered: bool,
        decided_at: float | None,
    ) -> Finish:
        callee = await leg.dial(
            self._edge_of(leg).uri_of(extension),
            timeout=self._calls.ring_timeout,
            from_uri=f"sip:{leg.caller}@{self._sip.domain}",
        )
        # Whatever ends this call (even the caller leaving between two steps), the callee's
        # phone must not keep ringing, or stay connected to nobody.
        try:
            if decided_at is not None:
                elapsed = asyncio.get_running_loop().time() - decided_at
                self._ctx.metrics.extension_dial_latency.observe(elapsed)
            # After the INVITE has left: the write follows the decision. The ACD skips the
            # user from here until the call ends.
            async with self._occupied(target.user_id, call.id):
                if caller_answered:
                    await leg.play(self._tones.ringback, loop=True, barge_in=False)
                call.add_leg(callee.id, "callee", callee.sip_call_id)
                return await self._connect(
                    leg, callee, call, target, caller_answered=caller_answered
                )
        finally:
            await callee.drop()

    async def _connect(
        self,
        leg: Leg,
        callee: Leg,
        call: CallLog,
        target: Reachable | str,
        *,
        caller_answered: bool,
        post_dial: str = "",
    ) -> Finish:
        """Wait for the callee, then bridge them (whoever dialled hangs the callee up after)."""
        await _first(callee.answered, callee.ended, leg.ended)
        if leg.ended.done():
            return Finish(Disposition.ABANDONED, "caller")
        if callee.ended.done() and not callee.answered.done():
            code = callee.ended.result().code
            if caller_answered:
                with contextlib.suppress(LegGone):
                    await leg.stop_playback()
            return Finish(disposition_of(code), "callee", sip_code=code)
        # From the answer on: a phone that transfers at once is not turned away. The phone
        # that may: the callee if it is one of ours, else the phone that dialled a number.
        placed_by = leg.headers.get(USER_HEADER) if call.caller_user_id is not None else None
        phone = callee if isinstance(target, Reachable) else leg if placed_by else None
        with phone.taking_transfers() if phone else contextlib.nullcontext() as transfers:
            # The person on our side: the callee, or for an external number who dialled it.
            talker = target.user_id if isinstance(target, Reachable) else call.caller_user_id
            record = await self._recorder.will_record(leg, call, user_id=talker)
            connected = caller_answered
            try:
                if not connected:
                    await leg.answer()
                    connected = True
                if record:
                    # The party outside: the callee when our phone dialled a number, else
                    # the caller (from the provider, or passed on to our callee).
                    dialled_out = isinstance(target, str) and leg.headers.get(
                        SOURCE_HEADER) != TRUNK_SOURCE  # fmt: skip
                    await self._recorder.announce(callee if dialled_out else leg)
                await leg.bridge(callee)
            except LegGone:
                # One side hung up in the instant between the callee's answer and the bridge.
                if not connected:
                    return Finish(Disposition.ABANDONED, "caller")
            if isinstance(target, Reachable):
                call.answered(target.extension, target.user_id)
            else:
                call.answered(target)
            if record:
                await self._recorder.start(leg, call)
            if post_dial:
                await _send_post_dial(callee, post_dial)
            with self._consultable(call, leg, callee, target):
                if isinstance(target, Reachable) and transfers is not None:
                    desk = self.transfer_desk(call, target.extension, target.user_id)
                    transfer = await talk_until_transfer(
                        leg, callee, transfers, desk, self.transfer_codes
                    )
                    if transfer is not None:
                        return Finish(Disposition.ANSWERED, "callee", transfer=transfer)
                elif placed_by and transfers is not None:
                    desk = self.transfer_desk(call, placed_by, call.caller_user_id)
                    transfer = await talk_until_transfer(
                        callee, leg, transfers, desk, self.transfer_codes
                    )
                    if transfer is not None:
                        callee.hand_on()  # the number dialled goes on; its dialler's leg ends
                        return Finish(Disposition.ANSWERED, "caller", transfer=transfer,
                                      transferee=callee)  # fmt: skip
                else:
                    await _first(leg.ended, callee.ended)
        party = "caller" if leg.ended.done() else "callee"
        end = leg.ended.result() if party == "caller" else callee.ended.result()
        await leg.drop()
        if end.lost:
            return Finish(Disposition.FAILED, "system")  # the worker died under the call
        return Finish(Disposition.ANSWERED, end.ended_by(party))

    @contextlib.asynccontextmanager
    async def _occupied(self, user_id: int | None, call_id: int) -> AsyncIterator[None]:
        """A user's phone in a non-ACD call: the ACD skips them until it ends."""
        if user_id is None:
            yield
            return
        cause = f"call:{call_id}"
        await change_presence(self._ctx, user_id, direct_call_started, cause)
        try:
            yield
        finally:
            await change_presence(self._ctx, user_id, direct_call_ended, cause)

    # -- calls from our own phones --------------------------------------------------------

    async def _phone_call(self, leg: Leg, extension: str) -> None:
        caller = await self._users.get(extension)
        dialled = unquote(leg.called)
        codes = self._ctx.settings.feature_codes
        feature = codes.by_code().get(dialled)
        plan = plan_phone_call(dialled, extension, await self._dialable.get(None))
        direction = Direction.OUTBOUND if plan.kind is Dialled.EXTERNAL else Direction.INTERNAL
        user_id = caller.user_id if caller else None
        call = CallLog.open(
            self._ctx, direction=direction, caller=extension, called=dialled,
            worker_id=leg.worker_id, user_id=user_id,
        )  # fmt: skip
        call.add_leg(leg.id, "caller", leg.sip_call_id)
        if feature is not None:
            await self._run(call, leg, lambda: self._feature_code(leg, user_id, feature))
            return
        if dialled.startswith(codes.supervise) and len(dialled) > len(codes.supervise):
            agent = dialled.removeprefix(codes.supervise)
            async with self._occupied(user_id, call.id):
                await self._run(call, leg, lambda: self._supervise_by_code(leg, caller, agent))
            return
        async with contextlib.AsyncExitStack() as occupied:
            # Released when the phone passes its callee on and its leg ends.
            await occupied.enter_async_context(self._occupied(user_id, call.id))
            await self._run(call, leg, lambda: self._phone_flow(leg, call, plan.kind, plan.target,
                                                                plan.post_dial),
                            on_let_go=occupied.aclose)  # fmt: skip

    async def _feature_code(self, leg: Leg, user_id: int | None, feature: str) -> Finish:
        """A desk phone's presence key: apply it, confirm in a few words, hang up."""
        await leg.answer()
        prompt = f"feature_{feature}"
        if user_id is None:
            prompt = "feature_refused"
        else:
            try:
                await apply_feature_code(self._ctx, user_id, feature)
            except DomainError as exc:
                log.info("feature_code_refused", user_id=user_id, feature=feature, error=str(exc))
                prompt = "feature_refused"
        await self.say(leg, prompt)
        await leg.hangup()
        return Finish(Disposition.ENDED_IN_IVR, "system")

    async def _phone_flow(
        self, leg: Leg, call: CallLog, kind: Dialled, target: str, post_dial: str
    ) -> Finish:
        if kind is Dialled.EXTENSION:
            queue_id = await self._queue_of.get(target)
            if queue_id is not None:
                await leg.answer()
                call.system_answered()
                return await self._to_queue(leg, call, queue_id)
            menu_id = await self._menu_of.get(target)
            if menu_id is not None:
                await leg.answer()
                call.system_answered()
                return await self._to_menu(leg, call, menu_id, None)
            finish = await self._ring_extension(leg, call, target, caller_answered=False)
            return await _refuse_if_unanswered(leg, finish)
        if kind is Dialled.EXTERNAL:
            if not self._ctx.settings.trunk.uri:
                await leg.reject(403, "No outbound route")
                return Finish(Disposition.REJECTED, "system")
            finish = await self._to_external(leg, call, target, post_dial, caller_answered=False)
            return await _refuse_if_unanswered(leg, finish)
        refusals = {
            Dialled.OWN_EXTENSION: (403, "Own extension", Disposition.REJECTED),
            Dialled.UNKNOWN_EXTENSION: (404, "Extension not found", Disposition.NOT_FOUND),
            Dialled.INVALID: (484, "Address incomplete", Disposition.NOT_FOUND),
        }
        code, reason, disposition = refusals[kind]
        await leg.reject(code, reason)
        return Finish(disposition, "system")

    async def _to_external(
        self,
        leg: Leg,
        call: CallLog,
        number: str,
        post_dial: str,
        *,
        caller_answered: bool = True,
    ) -> Finish:
        trunk_uri = self._ctx.settings.trunk.uri
        if not trunk_uri and not caller_answered:
            return Finish(Disposition.REJECTED, "system", sip_code=480)
        if not trunk_uri:
            await self.say(leg, "not_available")
            await leg.hangup()
            return Finish(Disposition.REJECTED, "system")
        callee = await leg.dial(
            number_uri(trunk_uri, number), timeout=self._calls.ring_timeout,
            from_uri=f"sip:{leg.caller}@{self._sip.domain}",
            # Through the edge, which then holds the call as it holds those to phones: should
            # this worker die, it ends the call for the provider too (BYE or CANCEL).
            route=self._edge_of(leg).route,
        )  # fmt: skip
        try:
            call.add_leg(callee.id, "trunk", callee.sip_call_id)
            return await self._connect(
                leg, callee, call, number, caller_answered=caller_answered, post_dial=post_dial
            )
        finally:
            await callee.drop()

    # -- transfers (flows.transfer) ------------------------------------------------------

    def transfer_desk(self, call: CallLog, extension: str, user_id: int | None) -> TransferDesk:
        """How the phone of `extension`, talking to the caller of `call`, passes them on."""
        return _PhoneTransfers(self, call, extension, user_id)

    async def judge_transfer(
        self, target: str, by_extension: str, by_user_id: int | None
    ) -> Transfer | Refusal:
        return judge_transfer(
            target, by_extension=by_extension, by_user_id=by_user_id,
            extensions=await self._dialable.get(None),
            outbound_route=bool(self._ctx.settings.trunk.uri),
        )  # fmt: skip

    async def transfer_target_by_keys(self, phone: Leg) -> str:
        """Ask the phone's user for the number to transfer to: digits until '#' or a pause."""
        prompt = await system_prompt(self._ctx, "transfer_target")
        playback = await phone.play(prompt, barge_in=True)
        digits = ""
        wait: float | None = TRANSFER_FIRST_DIGIT_S
        while len(digits) < MAX_TRANSFER_DIGITS:
            digit = await phone.next_digit(wait)
            if digit is None or digit == "#":
                break
            digits += digit
            wait = self._calls.inter_digit_timeout
        if phone.ended.done():
            raise LegGone(phone.id)
        if not playback.finished.done():
            await phone.stop_playback()
        return digits

    async def consult(
        self, call: CallLog, caller: Leg, phone: Leg, transfer: Transfer
    ) -> Transfer | None:
        """Attended by keys: the caller waits on hold while the phone rings the target and
        talks to them. The phone hanging up hands the caller over (the transfer, with the
        target's leg); the target not answering or hanging up brings the phone back to the
        caller (None)."""
        target = await self._users.get(transfer.target)
        if transfer.external or target is None:
            return transfer  # a queue, a menu, a number: nobody to consult, passed on blind
        try:
            consulted = await caller.dial(
                self._edge_of(caller).uri_of(target.extension),
                timeout=self._calls.ring_timeout,
                from_uri=f"sip:{transfer.by_extension}@{self._sip.domain}",
            )  # fmt: skip
        except WorkerCommandFailed as exc:  # no leg free in the caller's worker
            log.warning("consult_not_dialled", call_id=call.id, error=str(exc))
            return None
        handed_over = False
        try:
            call.add_leg(consulted.id, "consulted", consulted.sip_call_id)
            async with self._occupied(target.user_id, call.id):
                # The phone may hang up at any moment from here: that hands the caller over.
                with contextlib.suppress(LegGone):
                    await phone.play(self._tones.ringback, loop=True, barge_in=False)
                await _first(consulted.answered, consulted.ended, phone.ended)
                if phone.ended.done() and not consulted.ended.done() and not caller.ended.done():
                    handed_over = True  # hung up while it rang: the caller rings on there
                    return replace(transfer, kind=TransferKind.ATTENDED, leg=consulted)
                if consulted.ended.done() or phone.ended.done():
                    return None
                with contextlib.suppress(LegGone):
                    await phone.bridge(consulted)
                    log.info("consult_connected", call_id=call.id, by=transfer.by_extension,
                             target=target.extension)  # fmt: skip
                await _first(phone.ended, consulted.ended)
                if phone.ended.done() and not consulted.ended.done() and not caller.ended.done():
                    handed_over = True
                    return replace(transfer, kind=TransferKind.ATTENDED, leg=consulted)
                if caller.ended.done():
                    # The caller left meanwhile: the two talk on until one of them hangs up.
                    await _first(phone.ended, consulted.ended)
                return None
        finally:
            if not handed_over:
                await consulted.drop()

    async def _transferred(self, leg: Leg, call: CallLog, transfer: Transfer) -> Finish:
        """The caller, whose phone-side party has let go, is connected to the transfer's
        target as if they had dialled it. Nobody takes the call there (busy, unregistered, no
        answer): back to the one who transferred, ringing them (then their forwarding).
        Whatever happens, the legs the transfer brought along end with it."""
        try:
            return await self._pass_on(leg, call, transfer)
        finally:
            for brought in (transfer.leg, transfer.replaced):
                if brought is not None and not brought.ended.done():
                    with contextlib.suppress(LegGone, WorkerCommandFailed):
                        await brought.hangup()  # handed on: drop() would leave it

    async def _pass_on(self, leg: Leg, call: CallLog, transfer: Transfer) -> Finish:
        call.transferred(transfer.by_extension, transfer.by_user_id, transfer.target,
                         transfer.kind.value)  # fmt: skip
        await discard_pending_keys(leg)  # keys pressed while talking are no choice
        await leg.play(self._tones.ringback, loop=True, barge_in=False)
        if transfer.leg is not None:
            finish = await self._hand_over(leg, call, transfer)
        elif transfer.external:
            finish = await self._to_external(leg, call, transfer.target, transfer.post_dial)
        else:
            finish = await self._to_destination_extension(leg, call, transfer.target, None)
        result = "connected"
        if finish.transfer is None and _unanswered(finish) and not leg.ended.done():
            log.info("transfer_returned", call_id=call.id, to=transfer.by_extension,
                     target=transfer.target, disposition=finish.disposition.value)  # fmt: skip
            result = "returned"
            await leg.play(self._tones.ringback, loop=True, barge_in=False)
            finish = await self._ring_extension(
                leg, call, transfer.by_extension, caller_answered=True
            )
            if finish.transfer is None and _unanswered(finish) and not leg.ended.done():
                result = "failed"
                await self.say(leg, "not_available")
                await leg.hangup()
        elif finish.disposition is Disposition.ABANDONED:
            result = "abandoned"
        lost = leg.ended.done() and leg.ended.result().lost
        if not lost:
            # Someone took the call before it was passed on, whatever happened after.
            finish = replace(finish, disposition=Disposition.ANSWERED)
        self._ctx.metrics.call_transfers.labels(kind=transfer.kind.value, result=result).inc()
        return finish

    async def _hand_over(self, leg: Leg, call: CallLog, transfer: Transfer) -> Finish:
        """Attended: the caller is connected to the consulted party's leg (answered, or still
        ringing if the phone hung up before the answer), through a link if it lives in
        another worker (a consultation the phone made as a call of its own)."""
        assert transfer.leg is not None
        target_leg = transfer.leg
        if transfer.replaced is not None:
            with contextlib.suppress(LegGone, WorkerCommandFailed):
                await transfer.replaced.hangup()  # the consultation's own call ends with it
        user = None if transfer.external else await self._users.get(transfer.target)
        target: Reachable | str = user or transfer.target
        try:
            async with self._occupied(user.user_id if user else None, call.id):
                if target_leg.worker_id == leg.worker_id:
                    return await self._connect(leg, target_leg, call, target, caller_answered=True)
                return await self._connect_linked(leg, target_leg, call, target)
        except WorkerCommandFailed as exc:
            # No link to the other worker (full, gone): back to who transferred.
            log.warning("hand_over_failed", call_id=call.id, error=str(exc))
            return Finish(Disposition.UNAVAILABLE, "system")

    async def _connect_linked(
        self, leg: Leg, target_leg: Leg, call: CallLog, target: Reachable | str
    ) -> Finish:
        if self._link is None:
            raise WorkerCommandFailed("no links between workers here")
        near, far = await self._link(leg, target_leg.worker_id)
        # Either end of the far worker's pair ending ends the other: then the near side ends.
        mirror = asyncio.create_task(_end_together(far, target_leg))
        try:
            await far.bridge(target_leg)
            return await self._connect(leg, near, call, target, caller_answered=True)
        finally:
            mirror.cancel()
            await near.drop()
            await far.drop()

    # -- supervision (flows.supervision) -------------------------------------------------

    async def supervise(
        self, call_id: int, supervisor_user_id: int, supervisor_extension: str,
        mode: SupervisionMode,
    ) -> None:  # fmt: skip
        """Ring the supervisor's phone from the call's worker; answered, it hears the call
        in `mode`. NoLiveTalk if the call is not connected to anyone now."""
        talk = self.talks.of_call(call_id)
        try:
            leg = await talk.other.dial(
                self._edge_of(talk.other).uri_of(supervisor_extension),
                timeout=self._calls.ring_timeout,
                from_uri=f"sip:{talk.other.caller or 'supervision'}@{self._sip.domain}",
            )  # fmt: skip
        except LegGone:
            raise NoLiveTalk(f"call {call_id} ended just now") from None
        except WorkerCommandFailed:
            raise NoRoomToSupervise(f"call {call_id}'s media worker has no leg free") from None
        task = asyncio.create_task(self._supervision(talk, leg, supervisor_user_id, mode))
        self._supervisions.add(task)
        task.add_done_callback(self._supervisions.discard)

    async def _supervision(
        self, talk: Talk, leg: Leg, supervisor_user_id: int, mode: SupervisionMode
    ) -> None:
        try:
            async with self._occupied(supervisor_user_id, talk.call_id):
                heard = await supervise(talk, leg, mode)
        except Exception:
            log.exception("supervision_failed", call_id=talk.call_id)
            await leg.drop()
            return
        if heard is not None:
            self._ctx.metrics.call_supervisions.labels(mode=heard.value).inc()
            supervised(self._ctx, talk.call_id, supervisor_user_id, talk.user_id, heard)

    async def _supervise_by_code(self, leg: Leg, caller: Reachable | None, agent: str) -> Finish:
        """A supervisor's desk phone dialled the supervise code and an agent's extension: it
        hears the agent's live call, through a link when the call lives in another worker."""
        target = await self._users.get(agent)
        try:
            if caller is None or caller.role not in ("admin", "supervisor") or target is None:
                raise NoLiveTalk("not allowed")
            talk = self.talks.of_user(target.user_id)
        except NoLiveTalk:
            await leg.answer()
            await self.say(leg, "feature_refused")
            await leg.hangup()
            return Finish(Disposition.REJECTED, "system")
        await leg.answer()
        if talk.other.worker_id == leg.worker_id:
            heard = await supervise(talk, leg, SupervisionMode.LISTEN)
        else:
            if self._link is None:
                raise WorkerCommandFailed("no links between workers here")
            near, far = await self._link(talk.other, leg.worker_id)
            try:
                await far.bridge(leg)
                heard = await supervise(talk, near, SupervisionMode.LISTEN, keys=leg)
            finally:
                await far.drop()
        if heard is not None:
            self._ctx.metrics.call_supervisions.labels(mode=heard.value).inc()
            supervised(self._ctx, talk.call_id, caller.user_id, talk.user_id, heard)
        await leg.drop()
        return Finish(Disposition.ANSWERED, "system")

    def _edge_of(self, leg: Leg) -> Edge:
        return self._edges.get(leg.source, self._edge)

    def use_links(self, link: Link) -> None:
        """How calls are joined across two workers (WorkerPool.link)."""
        self._link = link

    def consultation(self, replaces: str) -> Consultation | None:
        """The call a phone made itself that a REFER's Replaces names: "call-id;to-tag=..."."""
        return self._consultations.get(replaces.split(";", 1)[0].strip())

    @contextlib.contextmanager
    def _consultable(
        self, call: CallLog, leg: Leg, callee: Leg, target: Reachable | str
    ) -> Iterator[None]:
        """A talk from one of our phones may be the consultation of an attended transfer
        that phone completes from its other call (REFER with Replaces naming this dialog)."""
        with contextlib.ExitStack() as stack:
            if isinstance(target, Reachable):
                stack.enter_context(self.talks.talking(Talk(call.id, leg, callee, target.user_id)))
            elif call.caller_user_id is not None:  # our phone dialled a number
                stack.enter_context(
                    self.talks.talking(Talk(call.id, callee, leg, call.caller_user_id))
                )
            key = leg.sip_call_id
            if call.caller_user_id is None or leg.direction != "inbound" or not key:
                yield
                return
            self._consultations[key] = Consultation(call.caller_user_id, leg, callee, target)
            try:
                yield
            finally:
                self._consultations.pop(key, None)

    # -- shared -----------------------------------------------------------------------------

    async def _run(
        self,
        call: CallLog,
        leg: Leg,
        flow: Callable[[], Awaitable[Finish]],
        *,
        on_let_go: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Run a flow; whatever happens, the call record is closed and the caller released.
        A transfer goes on with whoever is passed on: the caller, or the callee of a call our
        phone placed (then `leg`, that phone's, ends at once and `on_let_go` runs)."""
        party = leg
        transferred = False
        try:
            finish = await flow()
            while finish.transfer is not None:
                transferred = True
                if finish.transferee is not None and party is leg:
                    party = finish.transferee
                    await leg.drop()
                    if on_let_go is not None:
                        await on_let_go()
                finish = await self._transferred(party, call, finish.transfer)
        except LegGone:
            # The caller hung up (or its worker died) in the middle of a step.
            end = party.ended.result() if party.ended.done() else None
            lost = end is not None and end.code >= 500
            gone = Disposition.ANSWERED if transferred else Disposition.ABANDONED
            finish = Finish(Disposition.FAILED if lost else gone,
                            end.ended_by("caller") if end else "caller")  # fmt: skip
        except WorkerCommandFailed as exc:
            # The worker could not carry a step out (no leg left to dial, a prompt it cannot
            # read): the call failed, and its record says so instead of staying open.
            log.warning("call_flow_step_refused", call_id=call.id, error=str(exc))
            finish = Finish(Disposition.FAILED, "system")
        finally:
            await leg.drop()
            if party is not leg and not party.ended.done():
                with contextlib.suppress(LegGone, WorkerCommandFailed):
                    await party.hangup()  # handed on: drop() would leave it
        call.ended(finish.disposition, finish.hangup_by)

    async def say(self, leg: Leg, prompt_key: str) -> None:
        await self._play_through(leg, await system_prompt(self._ctx, prompt_key))

    async def _play_through(self, leg: Leg, prompt: Path) -> None:
        playback = await leg.play(prompt, barge_in=False)
        await _until(playback.finished, leg)


async def _hang_up(*legs: Leg | None) -> None:
    for leg in legs:
        if leg is not None:
            with contextlib.suppress(LegGone, WorkerCommandFailed):
                await leg.hangup()


async def _end_together(a: Leg, b: Leg) -> None:
    await _first(a.ended, b.ended)
    for leg in (a, b):
        if not leg.ended.done():
            with contextlib.suppress(LegGone, WorkerCommandFailed):
                await leg.hangup()


async def _refuse_if_unanswered(leg: Leg, finish: Finish) -> Finish:
    """A relayed call nobody took: the caller's phone shows the callee's answer (busy, not
    available); anything else becomes 480, never 5xx (the edge would try another worker)."""
    if finish.disposition in (Disposition.ANSWERED, Disposition.ABANDONED) or leg.ended.done():
        return finish
    code = finish.sip_code if finish.sip_code in BUSY_CODES | UNAVAILABLE_CODES else 480
    with contextlib.suppress(LegGone):
        await leg.reject(code)
    return finish


def _unanswered(finish: Finish) -> bool:
    return finish.disposition in (
        Disposition.NO_ANSWER, Disposition.BUSY, Disposition.UNAVAILABLE, Disposition.FAILED,
        Disposition.NOT_FOUND, Disposition.REJECTED,
    )  # fmt: skip


async def _send_post_dial(leg: Leg, digits: str) -> None:
    await asyncio.sleep(POST_DIAL_DELAY_S)
    with contextlib.suppress(LegGone):
        await leg.send_dtmf(digits)
        log.info("post_dial_digits_sent", leg=leg.id, digits=digits)


async def _first(*futures: asyncio.Future[Any]) -> None:
    await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)


async def _until(done: asyncio.Future[Any], leg: Leg) -> None:
    """Wait for `done`; LegGone if the caller hangs up first."""
    await _first(done, leg.ended)
    if not done.done():
        raise LegGone(leg.id)


async def _next_digit_or(
    leg: Leg, other: asyncio.Future[Any] | None, wait_s: float | None
) -> str | None:
    """The next digit, or None when `wait_s` passes or `other` completes first."""
    digit = await leg.next_digit(wait_s, until=other)
    if digit is None and leg.ended.done():
        raise LegGone(leg.id)
    return digit


class _PhoneTransfers:
    """The TransferDesk of one phone in one talk (flows.transfer)."""

    def __init__(
        self, flows: CallFlows, call: CallLog, extension: str, user_id: int | None
    ) -> None:
        self._flows = flows
        self._call = call
        self._extension = extension
        self._user_id = user_id

    async def judge(self, request: TransferRequest) -> Transfer | Refusal:
        if request.replaces is not None:
            return self._attended(request.replaces)
        return await self._flows.judge_transfer(
            unquote(request.target_user), self._extension, self._user_id
        )

    def _attended(self, replaces: str) -> Transfer | Refusal:
        """REFER with Replaces: the phone consulted in a call of its own; its far end is
        connected to this caller. Only the same user's call can be named."""
        found = self._flows.consultation(replaces)
        if found is None or found.user_id != self._user_id or found.other.ended.done():
            return Refusal(481, "Call/Transaction Does Not Exist")
        target = found.target
        return Transfer(
            self._extension, self._user_id,
            target.extension if isinstance(target, Reachable) else target,
            external=not isinstance(target, Reachable), kind=TransferKind.ATTENDED,
            leg=found.other, replaced=found.phone_leg,
        )  # fmt: skip

    def refused(self, request: TransferRequest, refusal: Refusal) -> None:
        kind = TransferKind.BLIND if request.replaces is None else TransferKind.ATTENDED
        self._count(kind, "refused")
        log.info("transfer_refused", call_id=self._call.id, target=request.target,
                 code=refusal.code)  # fmt: skip

    async def by_keys(self, kind: TransferKind, caller: Leg, phone: Leg) -> Transfer | None:
        """The caller waits on hold music while the phone's user dials the target; nothing
        dialled, a number they may not reach or an attended transfer that came to nothing
        brings the two back together."""
        flows = self._flows
        log.info("transfer_keys_pressed", call_id=self._call.id, kind=kind.value)
        try:
            await caller.unbridge(phone)
            await caller.play(flows.tones.hold_music, loop=True, barge_in=False)
            digits = await flows.transfer_target_by_keys(phone)
            if caller.ended.done():
                return None  # the caller left while the number was typed
            verdict: Transfer | Refusal | None = None
            if digits:
                verdict = await flows.judge_transfer(digits, self._extension, self._user_id)
            if isinstance(verdict, Transfer) and kind is TransferKind.ATTENDED:
                return await self._consulted(caller, phone, verdict)
            if isinstance(verdict, Transfer):
                return verdict
            self._count(kind, "refused")
            await flows.say(phone, "transfer_refused")
            await caller.bridge(phone)
            return None
        except LegGone:
            return None  # either hung up: the talk ends with it

    async def _consulted(self, caller: Leg, phone: Leg, transfer: Transfer) -> Transfer | None:
        flows = self._flows
        done = await flows.consult(self._call, caller, phone, transfer)
        if done is None and not caller.ended.done() and not phone.ended.done():
            self._count(TransferKind.ATTENDED, "returned")
            await flows.say(phone, "not_available")
            await caller.bridge(phone)
        return done

    def _count(self, kind: TransferKind, result: str) -> None:
        self._flows.metrics.call_transfers.labels(kind=kind.value, result=result).inc()
