"""Queue calls on the in-memory workers: callers wait, agents are rung as their presence
allows, answer or ring out; checked by the queue log, the call records, presence and the
dials the workers were asked for."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp.test_utils import TestServer

from api.routing import CONTROLLER_KEY
from pbx.memory_worker import MemoryWorkers
from pbx.protocol import Bridge, Dial
from tests.flows.builders import (
    call_record,
    caller_number,
    company_number,
    presence,
    queue,
    queue_log,
    set_presence,
    user,
)
from tests.flows.conftest import Events
from tests.support.api_client import ApiClient


async def queue_number(admin: ApiClient, queue_id: int) -> str:
    """A company number whose callers go straight into the queue."""
    return await company_number(admin, {"type": "queue", "id": queue_id}, extension_dialing=False)


async def test_a_waiting_caller_reaches_the_agent_who_turns_ready_then_wrap_up_begins(
    admin: ApiClient, twin: MemoryWorkers, events: Events, next_extension: Callable[[], str]
) -> None:
    agent = await user(admin, next_extension, status="not_ready", reason="break")
    queue_id = await queue(admin, [agent], when_no_agents="wait", wrap_up_time=30)
    calling = caller_number()
    caller = twin.call_in(calling, await queue_number(admin, queue_id))
    await events.next("queue_enter", queue_id=queue_id)
    assert caller.playing is not None and caller.playing.name.startswith("hold")
    assert not [d for d in twin.dials if d.extension == agent.extension]

    await set_presence(admin, agent.id, "ready")
    phone = await twin.dialled(agent.extension)
    assert "X-PBX-Queue" in phone.headers
    # The offer tells the agent's console who rings, on which number and from which queue.
    offer = await events.next("queue_offer", queue_id=queue_id, user_id=agent.id)
    queue_name = (await admin.get(f"/queues/{queue_id}")).body["name"]
    assert (offer["caller"], offer["queue"]) == (calling, queue_name)
    assert offer["called"]
    phone.ring()
    assert (await presence(admin, agent.id))["activity"] == "ringing"
    phone.answer()
    await twin.until(lambda: caller.bridged_to is phone)
    await events.next("presence_changed", user_id=agent.id, activity="in_call")

    phone.hang_up()  # the agent ends the talk
    wrapping = await events.next("presence_changed", user_id=agent.id, status="wrap_up")
    assert wrapping["wrap_up_until"] is not None
    ended = await events.next("call_ended", caller=calling)
    assert (ended["disposition"], ended["connected_to"], ended["user_id"], ended["hangup_by"]) == (
        "answered", agent.extension, agent.id, "agent",
    )  # fmt: skip
    assert await caller.ended == 200
    assert await queue_log(admin, queue_id) == [
        ("enter", None), ("offer", agent.id), ("connect", agent.id), ("complete", agent.id),
    ]  # fmt: skip
    await set_presence(admin, agent.id, "logged_out")


async def test_a_caller_hanging_up_while_waiting_is_logged_abandoned(
    admin: ApiClient, twin: MemoryWorkers, events: Events, next_extension: Callable[[], str]
) -> None:
    absent = await user(admin, next_extension, status="not_ready", reason="lunch")
    queue_id = await queue(admin, [absent], when_no_agents="wait")
    calling = caller_number()
    caller = twin.call_in(calling, await queue_number(admin, queue_id))
    await events.next("queue_enter", queue_id=queue_id)
    caller.hang_up()
    abandoned = await events.next("queue_abandon", queue_id=queue_id)
    ended = await events.next("call_ended", caller=calling)
    assert (ended["disposition"], ended["hangup_by"]) == ("abandoned", "caller")
    assert abandoned["call_id"] == ended["call_id"]
    assert await queue_log(admin, queue_id) == [("enter", None), ("abandon", None)]
    assert not [d for d in twin.dials if d.extension == absent.extension]


async def test_an_agent_whose_phone_rings_out_is_skipped_for_the_next(
    admin: ApiClient, twin: MemoryWorkers, events: Events, next_extension: Callable[[], str]
) -> None:
    first = await user(admin, next_extension, status="ready")
    second = await user(admin, next_extension, status="ready")
    queue_id = await queue(admin, [first, second], strategy="in_order")
    calling = caller_number()
    caller = twin.call_in(calling, await queue_number(admin, queue_id))
    unanswered = await twin.dialled(first.extension)
    unanswered.ring()
    unanswered.ring_out()  # the queue's ring timeout, now
    answering = await twin.dialled(second.extension)
    answering.answer()
    await twin.until(lambda: caller.bridged_to is answering)
    caller.hang_up()
    ended = await events.next("call_ended", caller=calling)
    assert (ended["disposition"], ended["user_id"], ended["hangup_by"]) == (
        "answered", second.id, "caller",
    )  # fmt: skip
    assert await unanswered.ended == 487 and await answering.ended == 200
    assert await queue_log(admin, queue_id) == [
        ("enter", None), ("offer", first.id), ("no_answer", first.id), ("offer", second.id),
        ("connect", second.id), ("complete", second.id),
    ]  # fmt: skip
    # One miss (of 2 allowed) leaves the first agent ready.
    assert (await presence(admin, first.id))["status"] == "ready"
    for each in (first, second):
        await set_presence(admin, each.id, "logged_out")


async def test_a_worker_refusing_the_agents_dial_is_no_missed_call_and_the_offer_is_repeated(
    admin: ApiClient, twin: MemoryWorkers, events: Events, next_extension: Callable[[], str]
) -> None:
    agent = await user(admin, next_extension, status="ready")
    queue_id = await queue(admin, [agent])
    twin.fail_next(Dial, "no free leg in worker 0")
    calling = caller_number()
    caller = twin.call_in(calling, await queue_number(admin, queue_id))
    phone = await twin.dialled(agent.extension)  # the second Dial: the first was refused
    dials = [d.uri for d in twin.sent(Dial) if d.parent == phone.parent]
    assert dials == [phone.uri, phone.uri]
    phone.answer()
    await twin.until(lambda: caller.bridged_to is phone)
    caller.hang_up()
    ended = await events.next("call_ended", caller=calling)
    assert (ended["disposition"], ended["user_id"]) == ("answered", agent.id)
    assert await queue_log(admin, queue_id) == [
        ("enter", None), ("offer", agent.id), ("connect", agent.id), ("complete", agent.id),
    ]  # fmt: skip
    record = await call_record(admin, ended["call_id"])
    assert [leg["role"] for leg in record["legs"]] == ["caller", "agent"]
    await set_presence(admin, agent.id, "logged_out")


async def test_a_worker_dying_under_a_queue_call_fails_it_and_frees_the_agent(
    admin: ApiClient, twin: MemoryWorkers, events: Events, service: TestServer,
    next_extension: Callable[[], str],
) -> None:  # fmt: skip
    agent = await user(admin, next_extension, status="ready")
    queue_id = await queue(admin, [agent], wrap_up_time=0)
    calling = caller_number()
    caller = twin.call_in(calling, await queue_number(admin, queue_id))
    phone = await twin.dialled(agent.extension)
    phone.answer()
    await twin.until(lambda: caller.bridged_to is phone)
    pool = service.app[CONTROLLER_KEY].pool
    assert pool is not None
    await pool.kill_worker_for_test(caller.worker.id)
    ended = await events.next("call_ended", caller=calling)
    assert (ended["disposition"], ended["hangup_by"]) == ("failed", "system")
    assert await queue_log(admin, queue_id) == [
        ("enter", None), ("offer", agent.id), ("connect", agent.id), ("failed", agent.id),
    ]  # fmt: skip
    await events.next("presence_changed", user_id=agent.id, status="ready", activity="idle")
    await set_presence(admin, agent.id, "logged_out")


async def test_a_worker_dying_between_the_agents_answer_and_the_bridge_fails_the_call(
    admin: ApiClient, twin: MemoryWorkers, events: Events, next_extension: Callable[[], str]
) -> None:
    agent = await user(admin, next_extension, status="ready")
    queue_id = await queue(admin, [agent], wrap_up_time=0)
    calling = caller_number()
    caller = twin.call_in(calling, await queue_number(admin, queue_id))
    phone = await twin.dialled(agent.extension)
    twin.die_on_next(Bridge)
    phone.answer()
    ended = await events.next("call_ended", caller=calling)
    assert (ended["disposition"], ended["hangup_by"]) == ("failed", "system")
    assert caller.bridged_to is None
    # The queue log says how it ended, not just that the agent was offered the caller.
    assert await queue_log(admin, queue_id) == [
        ("enter", None), ("offer", agent.id), ("failed", agent.id),
    ]  # fmt: skip
    await events.next("presence_changed", user_id=agent.id, status="ready", activity="idle")
    await set_presence(admin, agent.id, "logged_out")


async def test_a_caller_of_higher_priority_is_served_first_then_the_longest_waiting(
    admin: ApiClient, twin: MemoryWorkers, events: Events, next_extension: Callable[[], str]
) -> None:
    """Two callers wait on the plain number; one arrives later on a number whose queue
    destination gives priority 5: that one rings the agent first, then the oldest of the
    others (as Asterisk's QUEUE_PRIO and FreeSWITCH's tiers order them)."""
    agent = await user(admin, next_extension, status="not_ready", reason="break")
    queue_id = await queue(admin, [agent], when_no_agents="wait")
    plain = await queue_number(admin, queue_id)
    urgent = await company_number(
        admin, {"type": "queue", "id": queue_id, "priority": 5}, extension_dialing=False
    )
    callers = [caller_number() for _ in range(3)]
    for calling, number, position in zip(callers, (plain, plain, urgent), (1, 2, 1), strict=True):
        twin.call_in(calling, number)
        entered = await events.next("queue_enter", queue_id=queue_id, position=position)
        assert entered["priority"] == (5 if number == urgent else 0)

    served = []
    for _ in callers:
        await set_presence(admin, agent.id, "ready")
        offer = await events.next("queue_offer", queue_id=queue_id, user_id=agent.id)
        served.append(offer["caller"])
        phone = await twin.dialled(agent.extension)
        phone.answer()
        await events.next("presence_changed", user_id=agent.id, activity="in_call")
        phone.hang_up()
        await events.next("call_ended", caller=offer["caller"])
    assert served == [callers[2], callers[0], callers[1]]
    await set_presence(admin, agent.id, "logged_out")
