"""A queue call's talk that a lost controller connected, carried on by the controller that
took its worker over (flows.calls.adopted): the agent shows as in a call again from this
controller's start (before any caller is taken over and offered), and at the talk's end the
record, the queue log and the agent's wrap-up are what the lost controller would have
written (flows.queue_call). A talk nobody took over frees its agent."""

from __future__ import annotations

import asyncio
import contextlib
import time

from acd.agents import change_presence, store
from acd.presence import answered, call_ended
from acd.queue_log import QueueEvent, record
from acd.queue_places import QueuePlace
from core.context import ServiceContext
from ivr.cdr import CallLog, Direction, Disposition
from pbx.legs import Leg, LegGone, WorkerCommandFailed


async def agents_still_talking(ctx: ServiceContext, left: list[QueuePlace]) -> None:
    """At the start: the agents of the talks left behind are in a call (the restart's
    recovery made everyone idle)."""
    for place in left:
        if place.agent_user_id is not None:
            await change_presence(ctx, place.agent_user_id, answered, f"call:{place.call_id}")


async def talks_lost(ctx: ServiceContext, unclaimed: list[QueuePlace]) -> None:
    """Talks no worker taken over holds: their agents are free (after their wrap-up)."""
    for place in unclaimed:
        if place.agent_user_id is not None:
            await _agent_free(ctx, place, place.agent_user_id)


async def talk_taken_over(ctx: ServiceContext, place: QueuePlace, caller: Leg, agent: Leg) -> None:
    """Until one side hangs up; then the other is hung up. `place` has an agent."""
    assert place.agent_user_id is not None and place.talk_started_at is not None
    call = CallLog.taken_over(ctx, place.call_id, Direction.INBOUND)
    user_id = place.agent_user_id
    try:
        await asyncio.wait([caller.ended, agent.ended], return_when=asyncio.FIRST_COMPLETED)
        end = caller.ended.result() if caller.ended.done() else agent.ended.result()
        hangup_by = end.ended_by("caller" if caller.ended.done() else "agent")
        talk = round(time.time() - place.talk_started_at, 3)
        if end.lost:
            record(ctx, place.queue_id, call.id, QueueEvent.FAILED, user_id=user_id,
                   talk_seconds=talk, reason=end.reason)  # fmt: skip
            call.ended(Disposition.FAILED, hangup_by)
        else:
            record(ctx, place.queue_id, call.id, QueueEvent.COMPLETE, user_id=user_id,
                   hangup_by=hangup_by, talk_seconds=talk)  # fmt: skip
            call.ended(Disposition.ANSWERED, hangup_by)
    finally:
        for leg in (agent, caller):
            if not leg.ended.done():
                with contextlib.suppress(LegGone, WorkerCommandFailed):
                    await leg.hangup()
        await _agent_free(ctx, place, user_id)


async def _agent_free(ctx: ServiceContext, place: QueuePlace, user_id: int) -> None:
    now = store(ctx).now()
    await change_presence(
        ctx, user_id,
        lambda p: call_ended(p, acd=True, wrap_up_seconds=place.wrap_up_seconds, now=now),
        f"call:{place.call_id}",
    )  # fmt: skip
