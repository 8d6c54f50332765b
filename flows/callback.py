"""Callback: a waiting caller presses the queue's callback key, confirms the number to call
back, hangs up and keeps their place. At their turn the agent the dispatcher offers is rung
first (a call the pool places for no caller); once they answer, they hear whom they call and
the customer is dialled through the trunk, then both are bridged. A failed call is retried
after the queue's interval, at the head of the queue again, until its attempts are spent
(acd.callback_rules); every step is in the queue log under the caller's call and in the
request's history (acd.callbacks), and a restart takes the open requests up again.

Bitrix24 and FreeSWITCH's mod_callcenter do the same; Asterisk needs dialplan for it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import structlog

from acd.agents import change_presence, store
from acd.callback_rules import (
    AttemptResult,
    CallbackState,
    callback_number,
    spoken_digits,
)
from acd.callbacks import (
    Callback,
    CallbackOver,
    begin_attempt,
    cancel_callback,
    customer_answered,
    end_attempt,
    get_callback,
    open_callbacks,
    request_callback,
)
from acd.decisions import AgentTarget
from acd.dispatcher import Dispatcher, Entry, Offer
from acd.presence import Presence, answered, call_ended, offer_missed, wrap_up_length
from acd.queue_log import QueueEvent, record
from acd.queues import Queue, QueueSpec, find_queue
from core.context import PhoneContacts, ServiceContext
from core.db import utcnow
from core.errors import Conflict, InvalidInput
from flows.edge import Edge, answering_agent_of, number_uri, ring_headers
from flows.recording import CallRecorder
from flows.supervision import LiveTalks, Talk
from ivr.cdr import CallLog, Direction, Disposition, disposition_of
from ivr.numbers import NumberRow, list_numbers
from ivr.prompts import spoken, system_prompt
from pbx.legs import Leg, LegGone, WorkerCommandFailed

log = structlog.get_logger(__name__)

PENDING = CallbackState.PENDING

# The INVITE to an agent's phone names the callback (a phone may show it).
CALLBACK_HEADER = "X-PBX-Callback"
# Tries the caller gets to key in or confirm a number before they go back to waiting.
NUMBER_TRIES = 3
MAX_NUMBER_DIGITS = 20
FIRST_DIGIT_S = 10.0
# Seconds to wait for a key after a question has been read out.
ANSWER_S = 6.0
# After a worker could not place the agent's call: the next offer waits this long, so that a
# full pool is not asked again in a loop (nobody is on the line to hear the delay).
NO_ROOM_PAUSE_S = 1.0

_DISPOSITIONS = {
    AttemptResult.ANSWERED: Disposition.ANSWERED,
    AttemptResult.NO_ANSWER: Disposition.NO_ANSWER,
    AttemptResult.BUSY: Disposition.BUSY,
    AttemptResult.UNAVAILABLE: Disposition.UNAVAILABLE,
    AttemptResult.FAILED: Disposition.FAILED,
    AttemptResult.AGENT_LEFT: Disposition.ABANDONED,
    AttemptResult.INTERRUPTED: Disposition.FAILED,
}
# A customer who did not answer, by the disposition of their final answer.
_RESULTS = {
    Disposition.NO_ANSWER: AttemptResult.NO_ANSWER,
    Disposition.BUSY: AttemptResult.BUSY,
    Disposition.UNAVAILABLE: AttemptResult.UNAVAILABLE,
    Disposition.FAILED: AttemptResult.FAILED,
}


class Originate(Protocol):
    """A call placed from the worker pool for no caller (pbx.pool.WorkerPool.originate)."""

    async def __call__(
        self, uri: str, *, timeout: float, from_uri: str | None = None,  # noqa: ASYNC109
        headers: dict[str, str] | None = None,
    ) -> Leg: ...  # fmt: skip


# -- the caller's side: which number to call back -------------------------------------------


async def ask_callback_number(ctx: ServiceContext, leg: Leg, known: str) -> str | None:
    """Ask the caller to confirm the number they call from (when the trunk could dial it) or
    to key in another; the number they confirmed, or None when they did not (they wait on).
    LegGone when they hang up."""
    number = callback_number(known)
    for _ in range(NUMBER_TRIES):
        if number is None:
            number = callback_number(await _key_in(ctx, leg))
            if number is None:
                continue
        question = await spoken(
            ctx, f"We will call you back on {spoken_digits(number)}. "
            "Press 1 to confirm, or 2 to give another number.",
        )  # fmt: skip
        choice = await _first_key(leg, question, ANSWER_S)
        if choice == "1":
            return number
        if choice == "2":
            number = None
    return None


async def _key_in(ctx: ServiceContext, leg: Leg) -> str:
    """Digits until the hash key or a pause (the settings' inter-digit timeout)."""
    prompt = await system_prompt(ctx, "callback_number")
    digits = ""
    digit = await _first_key(leg, prompt, FIRST_DIGIT_S)
    while digit is not None and digit != "#" and len(digits) < MAX_NUMBER_DIGITS:
        digits += digit
        digit = await leg.next_digit(ctx.settings.calls.inter_digit_timeout)
    if leg.ended.done():
        raise LegGone(leg.id)
    return digits


async def _first_key(leg: Leg, prompt: Path, wait: float) -> str | None:
    """Play the prompt (a key cuts it short), then wait up to `wait` seconds for a key."""
    playback = await leg.play(prompt, barge_in=True)
    key = await leg.next_digit(None, until=playback.finished)
    if key is None and not leg.ended.done():
        key = await leg.next_digit(wait)
    if leg.ended.done():
        raise LegGone(leg.id)
    if not playback.finished.done():
        await leg.stop_playback()
    return key


# -- the service's side: calling back ----------------------------------------------------------


@dataclass(frozen=True)
class _Attempt:
    result: AttemptResult
    user_id: int | None  # the agent who made it
    call_id: int | None = None  # the attempt's call record, once the customer was dialled


class Callbacks:
    """The callbacks this controller carries out: one task per open request, from the key
    press (or the start) until it is completed, failed or cancelled."""

    def __init__(
        self, ctx: ServiceContext, dispatcher: Dispatcher, edge: Edge,
        registrations: PhoneContacts, recorder: CallRecorder, talks: LiveTalks, ringback: Path,
    ) -> None:  # fmt: skip
        self._ctx = ctx
        self._dispatcher = dispatcher
        self._edge = edge
        self._registrations = registrations
        self._recorder = recorder
        self._talks = talks
        self._ringback = ringback
        self._originate: Originate | None = None
        self._serving: dict[int, asyncio.Task[None]] = {}
        self._stopped = False

    @property
    def available(self) -> bool:
        """Whether a caller may ask now: calls can be placed and the trunk is set."""
        return (
            self._originate is not None and bool(self._ctx.settings.trunk.uri) and not self._stopped
        )

    def use_originate(self, originate: Originate) -> None:
        self._originate = originate

    async def start(self) -> None:
        """Take up what the last run left open; an attempt it was making is over: completed
        if the customer had answered, else counted as interrupted."""
        for callback in await open_callbacks(self._ctx):
            if callback.state is CallbackState.CALLING:
                if callback.connected:
                    self._log(callback, QueueEvent.COMPLETE, user_id=callback.user_id,
                              hangup_by="system", callback_id=callback.id)  # fmt: skip
                result = AttemptResult.ANSWERED if callback.connected else AttemptResult.INTERRUPTED
                queue = await find_queue(self._ctx, callback.queue_id)
                callback = await self._attempted(
                    callback, _Attempt(result, callback.user_id),
                    queue.spec if queue is not None else QueueSpec(name=""),
                )  # fmt: skip
            if callback.state is CallbackState.PENDING:
                self.serve(callback)
        if self._serving:
            log.info("callbacks_taken_up", callbacks=len(self._serving))

    async def stop(self) -> None:
        """Calls under way end; the requests stay open in SQL for the next start."""
        self._stopped = True
        tasks = list(self._serving.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def request(self, queue: Queue, call: CallLog, caller: Leg, entry: Entry,
                      number: str) -> Callback:  # fmt: skip
        """Keep the caller's request (in SQL before they are told); serve() it once their
        entry has left the queue."""
        callback = await request_callback(
            self._ctx, queue_id=queue.id, call_id=call.id, number=number,
            shown_number=caller.called, number_records=call.number_records,
            priority=entry.priority, entered_at=datetime.fromtimestamp(entry.entered_at, UTC),
        )  # fmt: skip
        self._log(callback, QueueEvent.CALLBACK, wait_seconds=entry.waited(),
                  callback_id=callback.id, number=number)  # fmt: skip
        return callback

    async def request_from_outside(
        self, queue: Queue, number: str, priority: int, shown_number: str | None
    ) -> Callback:
        """A request made outside a call (a web form, the CRM: POST /callbacks), served at
        once: it enters the queue now. Its call record says that the request came in
        (inbound, disposition `callback`); the company number shown to the customer is the
        one asked for, else one that leads to this queue, else the first."""
        if not self.available:
            raise NoOutboundRoute("callbacks need the trunk (trunk.uri) to call customers")
        for open_one in await open_callbacks(self._ctx):
            if open_one.queue_id == queue.id and open_one.number == number:
                raise CallbackExists(f"callback {open_one.id} to {number} is open in this "
                                     "queue", details={"callback_id": open_one.id})  # fmt: skip
        line = await _company_line(self._ctx, queue.id, shown_number)
        call = CallLog.open(self._ctx, direction=Direction.INBOUND, caller=number,
                            called=line.number, worker_id=0)  # fmt: skip
        call.ended(Disposition.CALLBACK, "caller")
        callback = await request_callback(
            self._ctx, queue_id=queue.id, call_id=call.id, number=number,
            shown_number=line.number, number_records=line.record_calls, priority=priority,
            entered_at=utcnow(),
        )  # fmt: skip
        self._log(callback, QueueEvent.ENTER, priority=priority, source="api")
        self._log(callback, QueueEvent.CALLBACK, wait_seconds=0.0, callback_id=callback.id,
                  number=number, source="api")  # fmt: skip
        self.serve(callback)
        return callback

    def serve(self, callback: Callback) -> None:
        """Carry the request out from now on (once: a second call is a no-op); after stop()
        it waits in SQL for the next start."""
        if callback.id in self._serving or self._stopped:
            return
        task = asyncio.create_task(self._serve(callback.id), name=f"callback-{callback.id}")
        self._serving[callback.id] = task
        task.add_done_callback(lambda done: self._served(callback.id, done))

    async def cancel(self, callback_id: int) -> Callback:
        """A pending request is taken back (acd.callbacks.cancel_callback) and leaves the
        queue; an agent rung for it meanwhile stops ringing."""
        callback = await cancel_callback(self._ctx, callback_id)
        task = self._serving.pop(callback_id, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._log(callback, QueueEvent.CALLBACK_CANCEL, callback_id=callback.id)
        return callback

    def _served(self, callback_id: int, task: asyncio.Task[None]) -> None:
        if self._serving.get(callback_id) is task:
            del self._serving[callback_id]
        if not task.cancelled() and task.exception() is not None:
            log.error("callback_task_failed", callback_id=callback_id,
                      error=repr(task.exception()))  # fmt: skip

    async def _serve(self, callback_id: int) -> None:
        # Read again each round: a request cancelled meanwhile (even before this task began,
        # or through an API served apart) is not served.
        while (callback := await get_callback(self._ctx, callback_id)).state is PENDING:
            queue = await find_queue(self._ctx, callback.queue_id)
            if queue is None:  # deleted meanwhile (it refuses while requests wait): given up
                log.warning("callback_queue_gone", callback_id=callback.id)
                await self._attempted(callback, _Attempt(AttemptResult.FAILED, None),
                                      QueueSpec(name=""), max_attempts=0)  # fmt: skip
                return
            if callback.next_attempt_at is not None:
                delay = (callback.next_attempt_at - utcnow()).total_seconds()
                await asyncio.sleep(max(0.0, delay))
            entry = self._dispatcher.join(
                queue.id, callback.call_id, callback.priority,
                entered_at=callback.entered_at.timestamp(), callback_id=callback.id,
            )  # fmt: skip
            try:
                attempt = await self._take_turn(queue.spec, callback, entry)
            except Exception:
                # A bug or an outage in one attempt must not strand the request.
                log.exception("callback_attempt_failed", callback_id=callback.id)
                attempt = _Attempt(AttemptResult.FAILED, None)
            finally:
                await self._dispatcher.leave(entry)
            if attempt is None:
                return  # cancelled
            await self._attempted(callback, attempt, queue.spec)

    async def _attempted(
        self, callback: Callback, attempt: _Attempt, spec: QueueSpec, *,
        max_attempts: int | None = None,
    ) -> Callback:  # fmt: skip
        """The attempt's end, in the request (its next state) and in the queue log."""
        after = await end_attempt(
            self._ctx, callback.id, attempt.result, call_id=attempt.call_id,
            max_attempts=spec.callback_attempts if max_attempts is None else max_attempts,
            retry_interval=spec.callback_retry_interval,
        )  # fmt: skip
        self._log(after, QueueEvent.CALLBACK_ATTEMPT, user_id=attempt.user_id,
                  callback_id=callback.id, result=attempt.result.value,
                  attempt_call_id=attempt.call_id, attempts=after.attempts)  # fmt: skip
        if after.state is CallbackState.FAILED:
            self._log(after, QueueEvent.CALLBACK_FAILED, callback_id=callback.id,
                      attempts=after.attempts)  # fmt: skip
        return after

    async def _take_turn(
        self, spec: QueueSpec, callback: Callback, entry: Entry
    ) -> _Attempt | None:
        """Offers until an agent answers, then one attempt to reach the customer; None when
        the request was cancelled meanwhile. An agent who leaves before the customer answers
        is logged, counted as tried for this entry, and the next agent is offered it."""
        while True:
            offer = await entry.offers.get()
            if (await get_callback(self._ctx, callback.id)).state is not PENDING:
                await self._withdraw(offer.agents, entry)
                return None
            rung = await self._ring(spec, callback, entry, offer)
            if rung is None:
                continue
            agent, agent_leg = rung
            attempt = await self._attempt(spec, callback, entry, agent, agent_leg)
            if attempt is None or attempt.result is not AttemptResult.AGENT_LEFT:
                return attempt
            await self._attempted(callback, attempt, spec)
            self._dispatcher.offer_over(entry, [agent.user_id])

    async def _ring(
        self, spec: QueueSpec, callback: Callback, entry: Entry, offer: Offer
    ) -> tuple[AgentTarget, Leg] | None:
        agents = offer.agents
        assert self._originate is not None  # serve() runs once calls can be placed
        agent_leg: Leg | None = None
        try:
            agent_leg = await self._originate(
                self._edge.uri_of(agents[0].extension), timeout=spec.ring_timeout,
                from_uri=self._edge.uri_of(callback.number, domain=True),
                headers={**ring_headers(spec.name, agents), CALLBACK_HEADER: str(callback.id)},
            )  # fmt: skip
            for agent in agents:
                self._log(callback, QueueEvent.OFFER, user_id=agent.user_id,
                          wait_seconds=entry.waited(), extension=agent.extension,
                          caller=callback.number, called=callback.shown_number,
                          queue=spec.name, callback_id=callback.id)  # fmt: skip
            await _first(agent_leg.answered, agent_leg.ended)
            winner = None
            if agent_leg.answered.done() and not agent_leg.ended.done():
                winner = await answering_agent_of(self._registrations, agents, agent_leg)
        except WorkerCommandFailed as exc:  # no worker could place the call
            log.warning("callback_agents_not_rung", callback_id=callback.id, error=str(exc))
            await self._withdraw(agents, entry)
            await asyncio.sleep(NO_ROOM_PAUSE_S)
            self._dispatcher.offer_over(entry, [])
            return None
        except BaseException:
            if agent_leg is not None:
                await agent_leg.drop()
            await self._withdraw(agents, entry)
            raise
        if winner is None:
            await agent_leg.drop()
            missed = [] if agent_leg.answered.done() else [a.user_id for a in agents]
            for user_id in missed:
                self._log(callback, QueueEvent.NO_ANSWER, user_id=user_id,
                          wait_seconds=entry.waited(), callback_id=callback.id)  # fmt: skip
                await change_presence(self._ctx, user_id, self._missed,
                                      f"no_answer:{callback.call_id}")  # fmt: skip
                self._ctx.metrics.acd_offers.labels(result="no_answer").inc()
            await self._withdraw([a for a in agents if a.user_id not in missed], entry)
            self._dispatcher.offer_over(entry, missed)
            return None
        await self._withdraw([a for a in agents if a is not winner], entry)
        return winner, agent_leg

    async def _attempt(
        self, spec: QueueSpec, callback: Callback, entry: Entry, agent: AgentTarget,
        agent_leg: Leg,
    ) -> _Attempt | None:  # fmt: skip
        """The agent has answered: tell them whom they call, dial the customer, talk. None
        when the request was cancelled as their phone rang (they are hung up)."""
        cause = f"callback:{callback.id}"
        call: CallLog | None = None
        attempt = _Attempt(AttemptResult.FAILED, agent.user_id)
        hangup_by = "system"
        try:
            await change_presence(self._ctx, agent.user_id, answered, cause)
            self._ctx.metrics.acd_offers.labels(result="answered").inc()
            try:
                callback = await begin_attempt(self._ctx, callback.id, agent.user_id)
            except CallbackOver:  # cancelled while the agent's phone rang
                return None
            await self._brief(agent_leg, spec, callback)
            call = CallLog.open(
                self._ctx, direction=Direction.OUTBOUND, caller=agent.extension,
                called=callback.number, worker_id=agent_leg.worker_id, user_id=agent.user_id,
            )  # fmt: skip
            call.number_records = callback.number_records
            call.add_leg(agent_leg.id, "agent", agent_leg.sip_call_id)
            attempt, hangup_by = await self._call_customer(spec, callback, entry, agent,
                                                           agent_leg, call)  # fmt: skip
        except (LegGone, WorkerCommandFailed) as exc:
            log.info("callback_attempt_cut", callback_id=callback.id, error=str(exc))
            left = agent_leg.ended.done() and not agent_leg.ended.result().lost
            result = AttemptResult.AGENT_LEFT if left else AttemptResult.FAILED
            attempt = _Attempt(result, agent.user_id, call.id if call is not None else None)
            hangup_by = "agent" if left else "system"
        finally:
            await agent_leg.drop()
            wrap_up = (
                wrap_up_length(agent.wrap_up_time, spec.wrap_up_time)
                if attempt.result is AttemptResult.ANSWERED else 0
            )  # fmt: skip
            now = store(self._ctx).now()
            await change_presence(
                self._ctx, agent.user_id,
                lambda p: call_ended(p, acd=True, wrap_up_seconds=wrap_up, now=now), cause,
            )  # fmt: skip
            if call is not None:
                call.ended(_DISPOSITIONS[attempt.result], hangup_by)
        return attempt

    async def _brief(self, agent_leg: Leg, spec: QueueSpec, callback: Callback) -> None:
        """What the agent hears before the customer is dialled."""
        brief = await spoken(self._ctx, f"Callback for {spec.name}. "
                                        f"Calling {spoken_digits(callback.number)}.")  # fmt: skip
        playback = await agent_leg.play(brief, barge_in=False)
        await _first(playback.finished, agent_leg.ended)
        if agent_leg.ended.done():
            raise LegGone(agent_leg.id)

    async def _call_customer(
        self, spec: QueueSpec, callback: Callback, entry: Entry, agent: AgentTarget,
        agent_leg: Leg, call: CallLog,
    ) -> tuple[_Attempt, str]:  # fmt: skip
        """Dial the customer from the agent's worker and bridge them; the attempt and who
        hung up."""
        await agent_leg.play(self._ringback, loop=True, barge_in=False)
        customer = await agent_leg.dial(
            number_uri(self._ctx.settings.trunk.uri, callback.number),
            timeout=self._ctx.settings.calls.ring_timeout,
            from_uri=self._edge.uri_of(callback.shown_number, domain=True),
            route=self._edge.route,
        )  # fmt: skip
        try:
            call.add_leg(customer.id, "trunk", customer.sip_call_id)
            await _first(customer.answered, customer.ended, agent_leg.ended)
            if not customer.answered.done() or customer.ended.done():
                if agent_leg.ended.done() and not customer.ended.done():
                    return _Attempt(AttemptResult.AGENT_LEFT, agent.user_id, call.id), "agent"
                code = customer.ended.result().code if customer.ended.done() else 500
                result = _RESULTS[disposition_of(code)]
                return _Attempt(result, agent.user_id, call.id), "callee"
            await customer_answered(self._ctx, callback.id)
            call.answered(callback.number, agent.user_id)
            if await self._recorder.will_record(customer, call, user_id=agent.user_id,
                                                by_queue=spec.record_calls):  # fmt: skip
                await self._recorder.announce(customer)
                await customer.bridge(agent_leg)
                await self._recorder.start(customer, call)
            else:
                await customer.bridge(agent_leg)
            await self._dispatcher.answered(entry, agent.user_id)
            self._log(callback, QueueEvent.CONNECT, user_id=agent.user_id,
                      wait_seconds=entry.waited(), callback_id=callback.id)  # fmt: skip
            loop = asyncio.get_running_loop()
            talk_started = loop.time()
            with self._talks.talking(Talk(call.id, customer, agent_leg, agent.user_id)):
                await _first(customer.ended, agent_leg.ended)
            by = "callee" if customer.ended.done() else "agent"
            self._log(callback, QueueEvent.COMPLETE, user_id=agent.user_id,
                      hangup_by="caller" if by == "callee" else "agent", callback_id=callback.id,
                      talk_seconds=round(loop.time() - talk_started, 3))  # fmt: skip
            return _Attempt(AttemptResult.ANSWERED, agent.user_id, call.id), by
        finally:
            await customer.drop()

    def _missed(self, presence: Presence) -> Presence:
        return offer_missed(presence, max_missed=self._ctx.settings.acd.max_missed_offers)

    async def _withdraw(self, agents: Any, entry: Entry) -> None:
        for agent in agents:
            await self._dispatcher.withdraw(agent.user_id, entry)

    def _log(self, callback: Callback, event: QueueEvent, **details: Any) -> None:
        record(self._ctx, callback.queue_id, callback.call_id, event, **details)


async def _first(*futures: asyncio.Future[Any]) -> None:
    await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)


async def _company_line(ctx: ServiceContext, queue_id: int, wanted: str | None) -> NumberRow:
    rows = await list_numbers(ctx)
    if wanted is not None:
        for row in rows:
            if row.number == wanted:
                return row
        raise UnknownCompanyNumber(f"{wanted} is none of the company's numbers",
                                   field="shown_number")  # fmt: skip
    to_queue = [
        row for row in rows
        if row.default_destination.get("type") == "queue"
        and row.default_destination.get("id") == queue_id
    ]  # fmt: skip
    if to_queue or rows:
        return (to_queue or rows)[0]
    raise NoCompanyNumber("a callback is shown from a company number, and there is none")


class CallbackExists(Conflict):
    code = "callback_exists"


class NoOutboundRoute(Conflict):
    code = "no_outbound_route"


class NoCompanyNumber(Conflict):
    code = "no_company_number"


class UnknownCompanyNumber(InvalidInput):
    code = "unknown_number"
