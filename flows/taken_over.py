"""A queue call's talk that a lost controller connected, carried on by the controller that
took its worker over (flows.calls.adopted): the agent shows as in a call again from this
controller's start (before any caller is taken over and offered), and at the talk's end the
record, the queue log and the agent's wrap-up are what the lost controller would have
written (flows.queue_call). A talk nobody took over frees its agent."""

from __future__ import annotations

import asyncio
import contextlib
import time

from acd.agents import change_presence
from acd.presence import answered
from acd.queue_places import QueuePlace
from core.context import ServiceContext
from flows.queue_call import agent_call_over, log_talk_end
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
        lost, hangup_by = log_talk_end(
            ctx, place.queue_id, call.id, user_id, caller, agent,
            round(time.time() - place.talk_started_at, 3),
        )  # fmt: skip
        call.ended(Disposition.FAILED if lost else Disposition.ANSWERED, hangup_by)
    finally:
        for leg in (agent, caller):
            if not leg.ended.done():
                with contextlib.suppress(LegGone, WorkerCommandFailed):
                    await leg.hangup()
        await _agent_free(ctx, place, user_id)


async def _agent_free(ctx: ServiceContext, place: QueuePlace, user_id: int) -> None:
    await agent_call_over(ctx, user_id, place.wrap_up_seconds, f"call:{place.call_id}")
