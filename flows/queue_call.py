"""A caller in a queue: hold music, announcements, the exit key, and ringing the agents the
dispatcher offers until one answers (the asyncio shell around acd.dispatcher)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import structlog

from acd.agents import change_presence, store
from acd.callbacks import Callback
from acd.decisions import AgentTarget
from acd.dispatcher import Dispatcher, Entry, Offer
from acd.presence import Presence, Status, answered, call_ended, offer_missed, wrap_up_length
from acd.queue_log import QueueEvent, record
from acd.queue_places import QueuePlace, QueuePlaces
from acd.queues import Queue
from core.context import PhoneContacts, ServiceContext
from flows.callback import Callbacks, ask_callback_number
from flows.edge import Edge, answering_agent_of, ring_headers
from flows.recording import CallRecorder
from flows.supervision import LiveTalks, Talk
from flows.transfer import Transfer, TransferDesk, talk_until_transfer, transfer_codes
from ivr.cdr import CallLog, Direction
from ivr.prompt_library import get_prompt, prompt_file
from ivr.prompts import spoken, system_prompt
from pbx.legs import Leg, LegGone, TransferRequest, WorkerCommandFailed

log = structlog.get_logger(__name__)


class QueueOutcome(StrEnum):
    ANSWERED = "answered"  # an agent took the call and it has ended
    ABANDONED = "abandoned"  # the caller hung up while waiting
    FAILED = "failed"  # the caller's or the agent's worker died
    OVERFLOW = "overflow"  # timeout, exit key, full, no agents: the overflow destination
    CALLBACK = "callback"  # the caller asked to be called back and was hung up


@dataclass(frozen=True)
class QueueResult:
    outcome: QueueOutcome
    hangup_by: str = "system"
    # The agent passed the caller on (answered): the call goes on there.
    transfer: Transfer | None = None
    # The request the caller made (CALLBACK): served once the caller has left the queue.
    callback: Callback | None = None


# The TransferDesk for an agent's phone in a call, by the call, their extension and user id.
TransferDesks = Callable[[CallLog, str, int | None], TransferDesk]


class QueueCall:
    """One caller's stay in one queue."""

    def __init__(
        self, ctx: ServiceContext, dispatcher: Dispatcher, edge: Edge, leg: Leg, call: CallLog,
        queue: Queue, default_hold: Path, registrations: PhoneContacts, recorder: CallRecorder,
        transfer_desks: TransferDesks, talks: LiveTalks, callbacks: Callbacks,
        places: QueuePlaces, *, priority: int = 0, entered_at: float | None = None,
    ) -> None:  # fmt: skip
        """`entered_at`: a caller taken over from a lost controller (flows.calls.adopted)
        waits on with the place they had since then (epoch)."""
        self._ctx = ctx
        self._registrations = registrations
        self._dispatcher = dispatcher
        self._edge = edge
        self._leg = leg
        self._call = call
        self._queue = queue
        self._spec = queue.spec
        self._default_hold = default_hold
        self._priority = priority
        self._recorder = recorder
        self._transfer_desks = transfer_desks
        self._talks = talks
        self._callbacks = callbacks
        self._places = places
        self._place: QueuePlace | None = None
        self._entered_at = entered_at
        self._transfer_codes = transfer_codes(ctx.settings.feature_codes)

    async def run(self) -> QueueResult:
        """The caller is answered already. Returns once the call ended or must overflow."""
        resumed = self._entered_at is not None
        refusal = None if resumed else await self._refusal()
        if refusal is not None:
            self._log(refusal, wait_seconds=0.0)
            return QueueResult(QueueOutcome.OVERFLOW)
        entry = self._dispatcher.join(
            self._queue.id, self._call.id, self._priority, entered_at=self._entered_at
        )
        if resumed:
            log.info("queue_place_taken_over", call_id=self._call.id, queue_id=self._queue.id,
                     position=self._dispatcher.position(entry))  # fmt: skip
        else:
            self._log(
                QueueEvent.ENTER, position=self._dispatcher.position(entry),
                priority=self._priority,
            )  # fmt: skip
            if self._priority:
                self._ctx.metrics.queue_priority_entries.labels(queue=str(self._queue.id)).inc()
        self._place = QueuePlace(
            call_id=self._call.id, queue_id=self._queue.id, priority=self._priority,
            entered_at=entry.entered_at, number_records=self._call.number_records,
        )  # fmt: skip
        try:
            await self._places.keep(self._leg.id, self._place)
            result = await self._wait(entry)
        finally:
            await self._dispatcher.leave(entry)
            await self._places.forget(self._leg.id)
        if result.callback is not None:
            self._callbacks.serve(result.callback)  # the caller's place, kept for them
        return result

    async def _refusal(self) -> QueueEvent | None:
        spec = self._spec
        if spec.max_length and len(self._dispatcher.waiting(self._queue.id)) >= spec.max_length:
            return QueueEvent.FULL
        if spec.when_no_agents == "overflow":
            presences = [self._dispatcher.presence_of(member) for member in spec.members]
            if all(p.status is Status.LOGGED_OUT for p in presences):
                return QueueEvent.NO_AGENTS
        return None

    async def _wait(self, entry: Entry) -> QueueResult:
        loop = asyncio.get_running_loop()
        spec = self._spec
        # A caller taken over has waited already.
        deadline = loop.time() + spec.max_wait - entry.waited() if spec.max_wait else math.inf
        interval = spec.announce_interval or math.inf
        next_announcement = loop.time() + interval
        await self._hold_music()
        while True:
            offer_ready = asyncio.ensure_future(entry.offers.get())
            try:
                wait = min(deadline, next_announcement) - loop.time()
                digit = await self._leg.next_digit(max(0.0, wait), until=offer_ready)
            finally:
                if not offer_ready.done():
                    offer_ready.cancel()
            offer = (
                offer_ready.result() if offer_ready.done() and not offer_ready.cancelled() else None
            )
            if self._leg.ended.done():
                if offer is not None:
                    await self._withdraw(offer.agents, entry)
                return self._caller_gone(entry)
            if digit is not None and digit == spec.exit_key:
                if offer is not None:
                    await self._withdraw(offer.agents, entry)
                self._log(QueueEvent.EXIT_KEY, wait_seconds=entry.waited())
                return QueueResult(QueueOutcome.OVERFLOW)
            # The caller's turn came as they pressed it: they are connected instead.
            if digit is not None and digit == spec.callback_key and offer is None:
                if self._callback_offered():
                    asked = await self._callback(entry)
                    if isinstance(asked, QueueResult):
                        return asked
                    if isinstance(asked, Offer):  # their turn came while they were asked
                        result = await self._ring(entry, asked)
                        if result is not None:
                            return result
                    await self._hold_music()
                continue
            if offer is not None:
                result = await self._ring(entry, offer)
                if result is not None:
                    return result
                await self._hold_music()
                continue
            now = loop.time()
            if now >= deadline:
                self._log(QueueEvent.TIMEOUT, wait_seconds=entry.waited())
                return QueueResult(QueueOutcome.OVERFLOW)
            if now >= next_announcement:
                await self._announce(entry)
                next_announcement = loop.time() + interval

    # -- a callback instead of waiting --------------------------------------------------------

    def _callback_offered(self) -> bool:
        """Callers from outside (the trunk's) may ask, once calls can be placed: a phone's
        extension is no number to call back through the trunk."""
        return self._callbacks.available and self._call.direction is Direction.INBOUND

    async def _callback(self, entry: Entry) -> QueueResult | Offer | None:
        """The caller confirms a number, their request is kept, they hear so and are hung
        up; None when they confirmed none (they wait on, in their place). An offer made
        while they are asked ends the asking: it is returned, to ring the agents."""
        await self._leg.stop_playback()
        asking = asyncio.ensure_future(ask_callback_number(self._ctx, self._leg, self._leg.caller))
        offered = asyncio.ensure_future(entry.offers.get())
        try:
            await asyncio.wait([asking, offered], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pending in (asking, offered):
                if not pending.done():
                    pending.cancel()  # a get() cancelled leaves its item in the queue
            await asyncio.gather(asking, return_exceptions=True)
        if offered.done() and not offered.cancelled():
            if self._leg.ended.done():
                await self._withdraw(offered.result().agents, entry)
                return self._caller_gone(entry)
            with contextlib.suppress(LegGone):
                await self._leg.stop_playback()
            return offered.result()
        try:
            number = asking.result()
            if number is None:
                await self._play_through(await system_prompt(self._ctx, "callback_declined"))
                return None
        except LegGone:
            return self._caller_gone(entry)
        callback = await self._callbacks.request(self._queue, self._call, self._leg, entry, number)
        with contextlib.suppress(LegGone):  # told or not, they are called back
            await self._play_through(await system_prompt(self._ctx, "callback_accepted"))
            await self._leg.hangup()
        return QueueResult(QueueOutcome.CALLBACK, "system", callback=callback)

    async def _play_through(self, prompt: Path) -> None:
        playback = await self._leg.play(prompt, barge_in=False)
        watched: list[asyncio.Future[Any]] = [playback.finished, self._leg.ended]
        await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        if self._leg.ended.done():
            raise LegGone(self._leg.id)

    # -- ringing agents ---------------------------------------------------------------------

    async def _ring(self, entry: Entry, offer: Offer) -> QueueResult | None:
        """Ring the offered agents; None when nobody answered (the caller waits on).

        However many agents are offered (ring_all), one worker leg rings them: the edge forks
        it to every phone and CANCELs the others when one answers."""
        agents = offer.agents
        try:
            agent_leg = await self._dial(agents)
        except WorkerCommandFailed as exc:
            log.info("agents_not_rung", user_ids=[a.user_id for a in agents], error=str(exc))
            await self._withdraw(agents, entry)
            self._dispatcher.offer_over(entry, [])
            return None
        try:
            for agent in agents:
                # Who rings, on which number and queue: what the agent's console shows.
                self._log(QueueEvent.OFFER, user_id=agent.user_id, wait_seconds=entry.waited(),
                          extension=agent.extension, caller=self._leg.caller,
                          called=self._leg.called, queue=self._spec.name)  # fmt: skip
            watched: list[asyncio.Future[Any]] = [self._leg.ended, agent_leg.answered,
                                                  agent_leg.ended]  # fmt: skip
            await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
            winner = None
            if agent_leg.answered.done() and not agent_leg.ended.done():
                winner = await self._answering_agent(agents, agent_leg)
        except BaseException:
            await agent_leg.drop()
            await self._withdraw(agents, entry)
            raise
        if winner is None:
            await agent_leg.drop()
            caller_gone = self._leg.ended.done()
            # Rang out or refused by every phone: each offered agent missed it.
            missed = [] if caller_gone or agent_leg.answered.done() else [a.user_id for a in agents]
            for user_id in missed:
                self._log(QueueEvent.NO_ANSWER, user_id=user_id, wait_seconds=entry.waited())
                await change_presence(
                    self._ctx, user_id, self._missed, f"no_answer:{entry.call_id}"
                )
                self._ctx.metrics.acd_offers.labels(result="no_answer").inc()
            await self._withdraw([a for a in agents if a.user_id not in missed], entry)
            if caller_gone:
                return self._caller_gone(entry)
            self._dispatcher.offer_over(entry, missed)
            return None
        await self._withdraw([a for a in agents if a is not winner], entry)
        return await self._talk(entry, winner, agent_leg)

    async def _dial(self, agents: tuple[AgentTarget, ...]) -> Leg:
        agent_leg = await self._leg.dial(
            self._edge.uri_of(agents[0].extension),
            timeout=self._spec.ring_timeout,
            from_uri=self._edge.uri_of(self._leg.caller, domain=True),
            headers=ring_headers(self._spec.name, agents),
        )
        try:
            self._call.add_leg(agent_leg.id, "agent", agent_leg.sip_call_id)
        except BaseException:
            await agent_leg.drop()  # not ours to track yet: it must not ring on
            raise
        return agent_leg

    async def _answering_agent(
        self, agents: tuple[AgentTarget, ...], agent_leg: Leg
    ) -> AgentTarget | None:
        return await answering_agent_of(self._registrations, agents, agent_leg)

    async def _talk(self, entry: Entry, agent: AgentTarget, agent_leg: Leg) -> QueueResult:
        # From the answer on: an agent who transfers at once is not turned away.
        with agent_leg.taking_transfers() as transfers:
            return await self._connected(entry, agent, agent_leg, transfers)

    async def _connected(
        self,
        entry: Entry,
        agent: AgentTarget,
        agent_leg: Leg,
        transfers: asyncio.Queue[TransferRequest],
    ) -> QueueResult:
        cause = f"call:{entry.call_id}"
        await change_presence(self._ctx, agent.user_id, answered, cause)
        self._ctx.metrics.acd_offers.labels(result="answered").inc()
        loop = asyncio.get_running_loop()
        transfer: Transfer | None = None
        try:
            record = await self._recorder.will_record(
                self._leg, self._call, user_id=agent.user_id, by_queue=self._spec.record_calls
            )
            try:
                if record:
                    await self._recorder.announce(self._leg)
                # Before the bridge: a controller taking over finds a bridged caller's agent.
                await self._keep_talk(agent)
                await self._leg.bridge(agent_leg)
            except (LegGone, WorkerCommandFailed):
                return self._not_connected(entry, agent, agent_leg)
            self._call.answered(agent.extension, agent.user_id)
            if record:
                await self._recorder.start(self._leg, self._call)
            await self._dispatcher.answered(entry, agent.user_id)
            self._log(QueueEvent.CONNECT, user_id=agent.user_id, wait_seconds=entry.waited())
            talk_started = loop.time()
            desk = self._transfer_desks(self._call, agent.extension, agent.user_id)
            with self._talks.talking(Talk(self._call.id, self._leg, agent_leg, agent.user_id)):
                transfer = await talk_until_transfer(
                    self._leg, agent_leg, transfers, desk, self._transfer_codes
                )
            if transfer is not None:
                self._log(QueueEvent.TRANSFER, user_id=agent.user_id, to=transfer.target,
                          kind=transfer.kind.value,
                          talk_seconds=round(loop.time() - talk_started, 3))  # fmt: skip
                return QueueResult(QueueOutcome.ANSWERED, "agent", transfer)
            lost, hangup_by = log_talk_end(
                self._ctx, self._queue.id, self._call.id, agent.user_id, self._leg, agent_leg,
                round(loop.time() - talk_started, 3),
            )  # fmt: skip
            return QueueResult(QueueOutcome.FAILED if lost else QueueOutcome.ANSWERED, hangup_by)
        finally:
            # The agent is free the moment their leg is gone: their presence changes before
            # the caller's leg is hung up, so the next caller's INVITE waits for no worker.
            await agent_leg.drop()
            wrap_up = wrap_up_length(agent.wrap_up_time, self._spec.wrap_up_time)
            try:
                await agent_call_over(self._ctx, agent.user_id, wrap_up, cause)
            finally:
                if transfer is None:  # else the caller goes on to the transfer's target
                    await self._leg.drop()

    async def _keep_talk(self, agent: AgentTarget) -> None:
        """For a controller taking over: the talk ends as this one would have ended it."""
        if self._place is not None:
            wrap_up = wrap_up_length(agent.wrap_up_time, self._spec.wrap_up_time)
            self._place = self._place.model_copy(update={
                "agent_user_id": agent.user_id, "wrap_up_seconds": wrap_up,
                "talk_started_at": time.time(),
            })  # fmt: skip
            await self._places.keep(self._leg.id, self._place)

    def _not_connected(self, entry: Entry, agent: AgentTarget, agent_leg: Leg) -> QueueResult:
        """A leg ended between the agent's answer and the bridge: the caller hung up just then
        (abandon), or a worker died or the agent hung up at once (failed)."""
        if self._leg.ended.done() and not self._leg.ended.result().lost:
            return self._caller_gone(entry)
        ended = self._leg.ended if self._leg.ended.done() else agent_leg.ended
        end = ended.result() if ended.done() else None
        self._log(QueueEvent.FAILED, user_id=agent.user_id, talk_seconds=0.0,
                  reason=end.reason if end is not None else "not connected")  # fmt: skip
        by = "caller" if ended is self._leg.ended else "agent"
        return QueueResult(QueueOutcome.FAILED, end.ended_by(by) if end is not None else "system")

    def _caller_gone(self, entry: Entry) -> QueueResult:
        """The caller's leg ended while waiting: they hung up or their media died (abandon),
        or their worker died (failed: nobody chose to leave)."""
        end = self._leg.ended.result()
        if end.lost:
            self._log(QueueEvent.FAILED, wait_seconds=entry.waited(), reason=end.reason)
            return QueueResult(QueueOutcome.FAILED, "system")
        self._log(QueueEvent.ABANDON, wait_seconds=entry.waited())
        return QueueResult(QueueOutcome.ABANDONED, end.ended_by("caller"))

    def _missed(self, presence: Presence) -> Presence:
        return offer_missed(presence, max_missed=self._ctx.settings.acd.max_missed_offers)

    async def _withdraw(self, agents: Iterable[AgentTarget], entry: Entry) -> None:
        """Their offer ends through no fault of theirs (another agent won, the caller left)."""
        for agent in agents:
            await self._dispatcher.withdraw(agent.user_id, entry)

    # -- what the caller hears --------------------------------------------------------------

    async def _hold_music(self) -> None:
        path = self._default_hold
        if self._spec.hold_music_prompt_id is not None:
            with contextlib.suppress(Exception):
                path = prompt_file(
                    self._ctx, await get_prompt(self._ctx, self._spec.hold_music_prompt_id)
                )
        await self._leg.play(path, loop=True, barge_in=False)

    async def _announce(self, entry: Entry) -> None:
        position = self._dispatcher.position(entry)
        text = f"You are number {position} in the queue."
        expected = self._dispatcher.expected_wait(entry)
        if expected is not None:
            minutes = max(1, round(expected * position / 60))
            text += (
                f" The expected waiting time is about {minutes} minute{'s' if minutes > 1 else ''}."
            )
        path = await spoken(self._ctx, text)
        await self._leg.stop_playback()
        playback = await self._leg.play(path, barge_in=False)
        watched: list[asyncio.Future[Any]] = [playback.finished, self._leg.ended]
        await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        if not self._leg.ended.done():
            await self._hold_music()

    def _log(self, event: QueueEvent, **details: Any) -> None:
        record(self._ctx, self._queue.id, self._call.id, event, **details)


def log_talk_end(
    ctx: ServiceContext, queue_id: int, call_id: int, user_id: int, caller: Leg, agent: Leg,
    talk_seconds: float,
) -> tuple[bool, str]:  # fmt: skip
    """A queue talk one side ended, in the queue log (`complete`, or `failed` when a worker
    died): whether it was lost, and who hung up."""
    end = caller.ended.result() if caller.ended.done() else agent.ended.result()
    hangup_by = end.ended_by("caller" if caller.ended.done() else "agent")
    if end.lost:
        record(ctx, queue_id, call_id, QueueEvent.FAILED, user_id=user_id,
               talk_seconds=talk_seconds, reason=end.reason)  # fmt: skip
    else:
        record(ctx, queue_id, call_id, QueueEvent.COMPLETE, user_id=user_id,
               hangup_by=hangup_by, talk_seconds=talk_seconds)  # fmt: skip
    return end.lost, hangup_by


async def agent_call_over(
    ctx: ServiceContext, user_id: int, wrap_up_seconds: float, cause: str
) -> None:
    """The agent's queue call is over: wrap-up, or what they asked for meanwhile."""
    now = store(ctx).now()
    await change_presence(
        ctx, user_id,
        lambda p: call_ended(p, acd=True, wrap_up_seconds=wrap_up_seconds, now=now), cause,
    )  # fmt: skip
