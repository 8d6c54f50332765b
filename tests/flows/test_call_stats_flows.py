"""Call statistics and the customer timeline over what a real queue call leaves behind (call
record, queue log, presence history written by the call flow itself, on the in-memory
workers): the figures read the rows the way the flows write them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from core.db import utcnow
from pbx.memory_worker import MemoryWorkers
from tests.flows.builders import caller_number, company_number, queue, set_presence, user
from tests.flows.conftest import Events
from tests.support.api_client import ApiClient


async def test_a_queue_call_shows_in_the_figures_and_the_callers_timeline(
    admin: ApiClient, twin: MemoryWorkers, events: Events, next_extension: Callable[[], str]
) -> None:
    since = {"since": (utcnow() - timedelta(seconds=1)).isoformat()}
    first = await user(admin, next_extension, status="ready")
    second = await user(admin, next_extension, status="ready")
    queue_id = await queue(admin, [first, second], strategy="in_order", wrap_up_time=600)
    number = await company_number(admin, {"type": "queue", "id": queue_id},
                                  extension_dialing=False)  # fmt: skip
    calling = caller_number()
    caller = twin.call_in(calling, number)
    unanswered = await twin.dialled(first.extension)
    unanswered.ring()
    unanswered.ring_out()
    answering = await twin.dialled(second.extension)
    answering.answer()
    await twin.until(lambda: caller.bridged_to is answering)
    caller.hang_up()
    await events.next("presence_changed", user_id=second.id, status="wrap_up")
    ended = await events.next("call_ended", caller=calling)
    await events.next("queue_complete", queue_id=queue_id)
    # Ending wrap-up by hand: its history row is committed before the event.
    await set_presence(admin, second.id, "ready")
    wrap_up_over = {"status": "wrap_up", "activity": "idle"}
    await events.next("presence_changed", user_id=second.id, status="ready", previous=wrap_up_over)

    queues = (await admin.get("/stats/calls/queues", params=since)).body["items"]
    mine = next(f for f in queues if f["queue_id"] == queue_id)
    assert (mine["offered"], mine["entered"], mine["answered"], mine["abandoned"]) == (1, 1, 1, 0)
    assert (mine["answered_in_service_level"], mine["service_level"]) == (1, 1.0)
    assert mine["talked"] == 1 and mine["wrap_ups"] == 1 and mine["wrap_up_seconds"] >= 0
    agents = {f["user_id"]: f for f in (await admin.get("/stats/calls/agents", params=since)
                                        ).body["items"]}  # fmt: skip
    assert (agents[first.id]["offered"], agents[first.id]["missed"]) == (1, 1)
    assert agents[first.id]["answered"] == 0
    took = agents[second.id]
    assert (took["offered"], took["answered"], took["queue_answered"], took["wrap_ups"]) == (
        1, 1, 1, 1)  # fmt: skip
    # Each figure is rounded to the millisecond on its own: their sum may differ by one.
    handled = took["talk_seconds"] + took["wrap_up_seconds"]
    assert took["handling_seconds"] == pytest.approx(handled, abs=0.0011)

    timeline = (await admin.get("/customers/timeline", params={"phone": calling})).body
    (item,) = timeline["items"]
    assert (item["kind"], item["id"], item["outcome"]) == ("call", ended["call_id"], "answered")
    assert item["handled_by"]["user_id"] == second.id and item["call"]["called"] == number
    for each in (first, second):
        await set_presence(admin, each.id, "logged_out")
