"""Callbacks on the in-memory workers: a waiting caller presses the queue's callback key,
confirms or keys in a number and is hung up keeping their place; at their turn the agent is
rung first, then the customer through the trunk. Checked by the request (API and events),
the queue log, the call records, presence and the dials the workers were asked for."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestServer

from acd.callback_rules import CallbackState
from acd.callbacks import begin_attempt, customer_answered, request_callback
from api.routing import CONTEXT_KEY, CONTROLLER_KEY
from core.db import utcnow
from flows.callback import CALLBACK_HEADER
from pbx.memory_worker import FarEnd, MemoryWorkers
from tests.flows.builders import (
    User,
    call_record,
    caller_number,
    presence,
    queue,
    queue_log,
    set_presence,
    user,
)
from tests.flows.conftest import Events
from tests.flows.test_queue_flows import queue_number
from tests.support.api_client import ApiClient

CALLBACK_KEY = "5"
CONFIRM = "1"


async def callback_queue(admin: ApiClient, agents: list[User], **fields: Any) -> tuple[int, str]:
    """A queue that offers callbacks on key 5, its callers waiting even with nobody ready,
    and a company number that leads straight into it."""
    fields = {"when_no_agents": "wait", "callback_key": CALLBACK_KEY, **fields}
    queue_id = await queue(admin, agents, **fields)
    return queue_id, await queue_number(admin, queue_id)


async def ask_for_callback(
    twin: MemoryWorkers, events: Events, queue_id: int, number: str, calling: str,
    keys: str = CONFIRM,
) -> tuple[FarEnd, dict[str, Any]]:  # fmt: skip
    """A caller enters the queue, presses the callback key then `keys`; the request."""
    caller = twin.call_in(calling, number)
    await events.next("queue_enter", queue_id=queue_id)
    caller.press(CALLBACK_KEY + keys)
    requested = await events.next("callback_requested", queue_id=queue_id)
    return caller, requested


async def test_a_caller_who_asks_is_called_back_by_the_agent_at_their_turn(
    admin: ApiClient, twin: MemoryWorkers, events: Events, next_extension: Callable[[], str]
) -> None:
    agent = await user(admin, next_extension, status="not_ready", reason="break")
    queue_id, number = await callback_queue(admin, [agent], wrap_up_time=30)
    calling = caller_number()
    caller, requested = await ask_for_callback(twin, events, queue_id, number, calling)
    # The number they call from, confirmed; shown to them later: the number they called.
    assert (requested["number"], requested["shown_number"], requested["state"]) == (
        calling, number, "pending",
    )  # fmt: skip
    assert await caller.ended == 200  # the service hung up after "we will call you back"
    ended = await events.next("call_ended", caller=calling)
    assert (ended["disposition"], ended["call_id"]) == ("callback", requested["call_id"])
    waiting = (await admin.get(f"/queues/{queue_id}/waiting")).body["items"]
    assert [(w["callback_id"], w["position"]) for w in waiting] == [(requested["id"], 1)]

    await set_presence(admin, agent.id, "ready")
    phone = await twin.dialled(agent.extension)
    # A call of its own (no caller's leg), naming the callback, from the customer's number.
    assert phone.parent is None and phone.headers[CALLBACK_HEADER] == str(requested["id"])
    assert phone.from_uri.startswith(f"sip:{calling}@")
    phone.answer()
    customer = await twin.dialled(calling)
    assert customer.parent == phone.leg_id and customer.route is not None  # via the edge
    assert customer.from_uri.startswith(f"sip:{number}@")
    assert phone.playing is not None and phone.playing.name.startswith("ringback")
    calling_now = (await admin.get(f"/callbacks/{requested['id']}")).body
    assert (calling_now["state"], calling_now["user_id"]) == ("calling", agent.id)
    customer.answer()
    await twin.until(lambda: customer.bridged_to is phone)
    await events.next("presence_changed", user_id=agent.id, activity="in_call")

    customer.hang_up()
    done = await events.next("callback_updated", id=requested["id"], state="completed")
    assert (done["attempts"], done["user_id"]) == (1, agent.id)
    [attempt] = done["history"]
    assert (attempt["result"], attempt["user_id"]) == ("answered", agent.id)
    await events.next("presence_changed", user_id=agent.id, status="wrap_up")
    await events.next("call_ended", call_id=attempt["call_id"])
    record = await call_record(admin, attempt["call_id"])
    assert (record["direction"], record["caller"], record["called"], record["user_id"],
            record["disposition"]) == ("outbound", agent.extension, calling, agent.id,
                                       "answered")  # fmt: skip
    assert await queue_log(admin, queue_id) == [
        ("enter", None), ("callback", None), ("offer", agent.id), ("connect", agent.id),
        ("complete", agent.id), ("callback_attempt", agent.id),
    ]  # fmt: skip
    assert (await admin.get(f"/queues/{queue_id}/waiting")).body["items"] == []
    await set_presence(admin, agent.id, "logged_out")


async def test_a_caller_without_a_number_keys_one_in_and_a_pending_callback_can_be_cancelled(
    admin: ApiClient, twin: MemoryWorkers, events: Events, next_extension: Callable[[], str]
) -> None:
    absent = await user(admin, next_extension, status="not_ready", reason="lunch")
    queue_id, number = await callback_queue(admin, [absent])
    # Anonymous: nothing to confirm, the number is keyed in (hash ends it), then confirmed.
    caller, requested = await ask_for_callback(twin, events, queue_id, number, "anonymous",
                                               keys="4930555#" + CONFIRM)  # fmt: skip
    assert requested["number"] == "4930555"
    assert await caller.ended == 200

    in_use = await admin.delete(f"/queues/{queue_id}")  # nobody would call them back
    assert (in_use.status, in_use.error_code) == (409, "queue_in_use")
    reply = await admin.delete(f"/callbacks/{requested['id']}")
    assert (reply.status, reply.body["state"]) == (200, "cancelled")
    await events.next("queue_callback_cancel", queue_id=queue_id)
    assert (await admin.get(f"/queues/{queue_id}/waiting")).body["items"] == []
    again = await admin.delete(f"/callbacks/{requested['id']}")
    assert (again.status, again.error_code) == (409, "callback_over")
    assert (await admin.delete("/callbacks/999999")).status == 404
    listed = await admin.get("/callbacks", params={"queue_id": str(queue_id), "state": "cancelled"})
    assert [c["id"] for c in listed.body["items"]] == [requested["id"]]
    assert not [d for d in twin.dials if d.extension == absent.extension]


async def test_a_caller_who_confirms_no_number_keeps_waiting_in_their_place(
    admin: ApiClient, twin: MemoryWorkers, events: Events, next_extension: Callable[[], str]
) -> None:
    absent = await user(admin, next_extension, status="not_ready", reason="lunch")
    queue_id, number = await callback_queue(admin, [absent])
    caller = twin.call_in(caller_number(), number)
    await events.next("queue_enter", queue_id=queue_id)
    caller.press(CALLBACK_KEY + "999")  # three answers that are neither 1 nor 2
    await twin.until(lambda: caller.playing is not None and caller.playing.name.startswith("hold"))
    caller.hang_up()
    await events.next("queue_abandon", queue_id=queue_id)
    assert await queue_log(admin, queue_id) == [("enter", None), ("abandon", None)]
    listed = await admin.get("/callbacks", params={"queue_id": str(queue_id)})
    assert listed.body["items"] == []


async def test_a_caller_whose_turn_comes_while_asked_is_connected_instead(
    admin: ApiClient, twin: MemoryWorkers, events: Events, next_extension: Callable[[], str]
) -> None:
    agent = await user(admin, next_extension, status="not_ready", reason="break")
    queue_id, number = await callback_queue(admin, [agent])
    calling = caller_number()
    caller = twin.call_in(calling, number)
    await events.next("queue_enter", queue_id=queue_id)
    caller.press(CALLBACK_KEY)  # and no answer yet: the question waits for a key

    def asked() -> bool:
        heard = [p.name for p in caller.prompts]
        return any(n.startswith("hold") for n in heard) and not heard[-1].startswith("hold")

    await twin.until(asked)
    await set_presence(admin, agent.id, "ready")
    phone = await twin.dialled(agent.extension)
    assert CALLBACK_HEADER not in phone.headers  # the caller on the line, not a callback
    phone.answer()
    await twin.until(lambda: caller.bridged_to is phone)
    caller.hang_up()
    await events.next("call_ended", caller=calling)
    assert await queue_log(admin, queue_id) == [
        ("enter", None), ("offer", agent.id), ("connect", agent.id), ("complete", agent.id),
    ]  # fmt: skip
    await set_presence(admin, agent.id, "logged_out")


async def test_a_caller_hanging_up_while_asked_is_logged_abandoned_and_phones_are_not_asked(
    admin: ApiClient, twin: MemoryWorkers, events: Events, next_extension: Callable[[], str]
) -> None:
    absent = await user(admin, next_extension, status="not_ready", reason="lunch")
    queue_id, number = await callback_queue(admin, [absent], extension=next_extension())
    caller = twin.call_in(caller_number(), number)
    await events.next("queue_enter", queue_id=queue_id)
    caller.press(CALLBACK_KEY)
    caller.hang_up()
    await events.next("queue_abandon", queue_id=queue_id)
    # A colleague's phone dialling the queue: an extension is no number to call back.
    colleague = await user(admin, next_extension)
    queue_ext = (await admin.get(f"/queues/{queue_id}")).body["extension"]
    desk = twin.call_in(colleague.extension, queue_ext, source="phone")
    await events.next("queue_enter", queue_id=queue_id)
    desk.press(CALLBACK_KEY + CONFIRM)
    desk.hang_up()
    await events.next("queue_abandon", queue_id=queue_id)
    assert await queue_log(admin, queue_id) == [
        ("enter", None), ("abandon", None), ("enter", None), ("abandon", None),
    ]  # fmt: skip
    assert (await admin.get("/callbacks", params={"queue_id": str(queue_id)})).body["items"] == []


async def test_an_unreached_customer_is_tried_again_until_the_attempts_are_spent(
    admin: ApiClient, twin: MemoryWorkers, events: Events, next_extension: Callable[[], str]
) -> None:
    agent = await user(admin, next_extension, status="not_ready", reason="break")
    queue_id, number = await callback_queue(
        admin, [agent], callback_attempts=2, callback_retry_interval=1, wrap_up_time=0
    )
    calling = caller_number()
    _, requested = await ask_for_callback(twin, events, queue_id, number, calling)
    await set_presence(admin, agent.id, "ready")

    # The agent hangs up while the customer rings: not the customer's attempt, tried again.
    phone = await twin.dialled(agent.extension)
    phone.answer()
    customer = await twin.dialled(calling)
    customer.ring()
    phone.hang_up()
    assert await customer.ended == 487
    left = await events.next("callback_updated", id=requested["id"], state="pending")
    assert (left["attempts"], left["history"][-1]["result"]) == (0, "agent_left")

    phone = await twin.dialled(agent.extension)
    phone.answer()
    (await twin.dialled(calling)).busy()
    busy = await events.next("callback_updated", id=requested["id"], state="pending")
    assert (busy["attempts"], busy["history"][-1]["result"]) == (1, "busy")
    assert busy["next_attempt_at"] is not None
    # No wrap-up after a call that reached nobody: ready for the retry.
    assert (await presence(admin, agent.id))["status"] == "ready"

    phone = await twin.dialled(agent.extension)  # the retry, once the interval is over
    phone.answer()
    (await twin.dialled(calling)).ring_out()
    failed = await events.next("callback_updated", id=requested["id"], state="failed")
    assert [a["result"] for a in failed["history"]] == ["agent_left", "busy", "no_answer"]
    await events.next("queue_callback_failed", queue_id=queue_id)
    assert await queue_log(admin, queue_id) == [
        ("enter", None), ("callback", None),
        ("offer", agent.id), ("callback_attempt", agent.id),
        ("offer", agent.id), ("callback_attempt", agent.id),
        ("offer", agent.id), ("callback_attempt", agent.id), ("callback_failed", None),
    ]  # fmt: skip
    await set_presence(admin, agent.id, "logged_out")


async def test_a_callback_keeps_its_callers_place_ahead_of_later_callers(
    admin: ApiClient, twin: MemoryWorkers, events: Events, next_extension: Callable[[], str]
) -> None:
    agent = await user(admin, next_extension, status="not_ready", reason="break")
    queue_id, number = await callback_queue(admin, [agent], wrap_up_time=0)
    first = caller_number()
    await ask_for_callback(twin, events, queue_id, number, first)
    later = caller_number()
    on_the_line = twin.call_in(later, number)
    await events.next("queue_enter", queue_id=queue_id)

    await set_presence(admin, agent.id, "ready")
    phone = await twin.dialled(agent.extension)
    assert CALLBACK_HEADER in phone.headers and phone.from_uri.startswith(f"sip:{first}@")
    phone.answer()
    customer = await twin.dialled(first)
    customer.answer()
    await twin.until(lambda: customer.bridged_to is phone)
    phone.hang_up()
    await events.next("queue_callback_attempt", queue_id=queue_id)

    phone = await twin.dialled(agent.extension)  # then the caller who waited on the line
    assert phone.parent is not None and CALLBACK_HEADER not in phone.headers
    phone.answer()
    await twin.until(lambda: on_the_line.bridged_to is phone)
    on_the_line.hang_up()
    await events.next("call_ended", caller=later)
    await set_presence(admin, agent.id, "logged_out")


async def test_a_restart_completes_a_talk_it_cut_and_takes_up_an_interrupted_attempt(
    admin: ApiClient, twin: MemoryWorkers, events: Events, service: TestServer,
    next_extension: Callable[[], str],
) -> None:  # fmt: skip
    """What the last run left in SQL: one callback whose customer had answered, one still
    being dialled. Taken up as at a start: the first is completed, the second counts an
    interrupted attempt and waits for its turn again."""
    agent = await user(admin, next_extension, status="not_ready", reason="break")
    queue_id, _ = await callback_queue(admin, [agent])
    ctx = service.app[CONTEXT_KEY]
    left: list[int] = []
    for connected in (True, False):
        made = await request_callback(
            ctx, queue_id=queue_id, call_id=0, number=caller_number(), shown_number="1",
            number_records=False,
            priority=0, entered_at=utcnow(),
        )  # fmt: skip
        await begin_attempt(ctx, made.id, agent.id)
        if connected:
            await customer_answered(ctx, made.id)
        left.append(made.id)
    flows = service.app[CONTROLLER_KEY]._flows
    assert flows is not None
    await flows.callbacks.start()

    completed = await events.next("callback_updated", id=left[0], state="completed")
    assert completed["history"][-1]["result"] == "answered"
    retried = await events.next("callback_updated", id=left[1], state="pending")
    assert (retried["attempts"], retried["history"][-1]["result"]) == (1, "interrupted")
    assert retried["next_attempt_at"] is not None  # after the queue's retry interval
    reply = await admin.delete(f"/callbacks/{left[1]}")
    assert reply.body["state"] == CallbackState.CANCELLED.value


async def test_callback_options_are_checked_as_a_whole(
    admin: ApiClient, next_extension: Callable[[], str]
) -> None:
    agent = await user(admin, next_extension)
    queue_id, _ = await callback_queue(admin, [agent])
    taken = await admin.patch(f"/queues/{queue_id}", {"exit_key": CALLBACK_KEY})
    assert (taken.status, taken.error_code) == (422, "key_taken")
    both = await admin.post("/queues", {"name": "Clash", "exit_key": "7", "callback_key": "7"})
    assert (both.status, both.error_code) == (422, "key_taken")
    for field, value, code in (
        ("callback_attempts", 0, "validation_error"),
        ("callback_retry_interval", 0, "validation_error"),
        ("callback_key", "55", "validation_error"),
        ("callback_attempts", None, "invalid"),
    ):
        refused = await admin.patch(f"/queues/{queue_id}", {field: value})
        assert (refused.status, refused.error_code) == (422, code), (field, value)
    cleared = await admin.patch(f"/queues/{queue_id}", {"callback_key": None})
    assert (cleared.status, cleared.body["callback_key"]) == (200, None)
    await set_presence(admin, agent.id, "logged_out")


async def test_a_callback_asked_for_through_the_api_is_served_like_a_callers(
    admin: ApiClient, twin: MemoryWorkers, events: Events, next_extension: Callable[[], str]
) -> None:
    """A web form's or the CRM's "call me back": it enters the queue now."""
    agent = await user(admin, next_extension, status="ready")
    queue_id, number = await callback_queue(admin, [agent], wrap_up_time=0)
    customer = caller_number()
    reply = await admin.post("/callbacks", {"queue_id": queue_id, "number": customer})
    assert reply.status == 201, reply
    assert (reply.body["shown_number"], reply.body["state"]) == (number, "pending")
    phone = await twin.dialled(agent.extension)
    assert phone.parent is None and phone.headers[CALLBACK_HEADER] == str(reply.body["id"])
    phone.answer()
    far = await twin.dialled(customer)
    assert far.from_uri.startswith(f"sip:{number}@")
    far.answer()
    await twin.until(lambda: far.bridged_to is phone)
    far.hang_up()
    await events.next("callback_updated", id=reply.body["id"], state="completed")
    await events.next("queue_callback_attempt", queue_id=queue_id)
    assert await queue_log(admin, queue_id) == [
        ("enter", None), ("callback", None), ("offer", agent.id), ("connect", agent.id),
        ("complete", agent.id), ("callback_attempt", agent.id),
    ]  # fmt: skip
    request = await call_record(admin, reply.body["call_id"])
    assert (request["direction"], request["caller"], request["disposition"]) == (
        "inbound", customer, "callback",
    )  # fmt: skip

    await set_presence(admin, agent.id, "not_ready", reason="break")
    waiting = await admin.post("/callbacks", {"queue_id": queue_id, "number": customer})
    assert waiting.status == 201, waiting
    again = await admin.post("/callbacks", {"queue_id": queue_id, "number": customer})
    assert (again.status, again.error_code) == (409, "callback_exists")
    for body, status, code in (
        ({"queue_id": queue_id, "number": "12"}, 422, "invalid_number"),
        ({"queue_id": queue_id, "number": "49301", "shown_number": "999"}, 422, "unknown_number"),
        ({"queue_id": 999999, "number": "49301"}, 404, "not_found"),
        ({"queue_id": queue_id, "number": "49301", "priority": 101}, 422, "validation_error"),
    ):
        refused = await admin.post("/callbacks", body)
        assert (refused.status, refused.error_code) == (status, code), body
    assert (await admin.delete(f"/callbacks/{waiting.body['id']}")).status == 200
    await set_presence(admin, agent.id, "logged_out")
