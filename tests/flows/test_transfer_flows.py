"""Blind transfer on the in-memory workers: a phone in a call asks (REFER) to pass its caller
on; the service connects the caller there, or back to the phone that transferred, and the call
record, the queue log, presence and the events follow. The REFER itself, from a real phone
through the edge, is tested in tests/integration/test_transfers.py."""

from __future__ import annotations

from collections.abc import Callable

from core.settings import Settings
from pbx.legs import NO_SUCH_LEG
from pbx.memory_worker import FarEnd, MemoryWorkers
from pbx.protocol import Bridge, Dial
from tests.flows.builders import (
    User,
    call_record,
    caller_number,
    company_number,
    extension_to,
    presence,
    queue,
    queue_log,
    user,
)
from tests.flows.conftest import OTHER_EDGE, Events
from tests.support.api_client import ApiClient


def refer_to(extension: str, settings: Settings) -> str:
    return f"sip:{extension}@{settings.sip.domain}"


async def transfers_on_record(admin: ApiClient, events: Events, calling: str) -> list[object]:
    """The transfers on the record of the call from `calling`, once it has ended."""
    ended = await events.next("call_ended", caller=calling)
    transfers: list[object] = (await call_record(admin, ended["call_id"]))["transfers"]
    return transfers


async def answered_call(
    admin: ApiClient, twin: MemoryWorkers, desk: User
) -> tuple[str, FarEnd, FarEnd]:
    """A provider's call to a number that rings `desk`, answered and bridged."""
    number = await company_number(admin, extension_to(desk), extension_dialing=False)
    calling = caller_number()
    caller = twin.call_in(calling, number)
    phone = await twin.dialled(desk.extension)
    phone.answer()
    await twin.until(lambda: caller.bridged_to is phone)
    return calling, caller, phone


async def handed_over(
    twin: MemoryWorkers, events: Events, calling: str, caller: FarEnd, consulted: FarEnd,
    by: str, to: str,
) -> dict[str, object]:  # fmt: skip
    """The caller talks to the consulted colleague, an attended transfer on record; the
    call's end once the colleague hangs up."""
    await twin.until(lambda: caller.bridged_to is consulted)
    transferred = await events.next("call_transferred", by=by)
    assert (transferred["to"], transferred["kind"]) == (to, "attended")
    consulted.hang_up()
    ended: dict[str, object] = await events.next("call_ended", caller=calling)
    return ended


async def test_a_blind_transfer_connects_the_caller_to_the_colleague(
    admin: ApiClient, twin: MemoryWorkers, events: Events, flow_settings: Settings,
    next_extension: Callable[[], str],
) -> None:  # fmt: skip
    desk, colleague = await user(admin, next_extension), await user(admin, next_extension)
    calling, caller, phone = await answered_call(admin, twin, desk)
    phone.transfer(refer_to(colleague.extension, flow_settings))
    # The phone hears "done" and its leg ends; the caller hears ringback meanwhile.
    await twin.until(lambda: phone.ended.done() and caller.playing is not None)
    assert phone.transfer_reports == [(100, "Trying"), (200, "OK")]
    assert caller.bridged_to is None
    target = await twin.dialled(colleague.extension)
    assert (await presence(admin, desk.id))["activity"] == "idle", "the transferring desk is free"
    target.answer()
    await twin.until(lambda: caller.bridged_to is target)
    transferred = await events.next("call_transferred", by=desk.extension)
    assert (transferred["to"], transferred["kind"], transferred["by_user_id"]) == (
        colleague.extension, "blind", desk.id,
    )  # fmt: skip
    caller.hang_up()
    ended = await events.next("call_ended", caller=calling)
    assert ended["call_id"] == transferred["call_id"]
    record = await call_record(admin, ended["call_id"])
    assert (record["disposition"], record["connected_to"], record["user_id"]) == (
        "answered", colleague.extension, colleague.id,
    )  # fmt: skip
    assert [(t["by"], t["to"], t["kind"]) for t in record["transfers"]] == [
        (desk.extension, colleague.extension, "blind")
    ]


async def test_a_transfer_nobody_takes_goes_back_to_who_transferred(
    admin: ApiClient, twin: MemoryWorkers, events: Events, flow_settings: Settings,
    next_extension: Callable[[], str],
) -> None:  # fmt: skip
    desk, colleague = await user(admin, next_extension), await user(admin, next_extension)
    calling, caller, phone = await answered_call(admin, twin, desk)
    phone.transfer(refer_to(colleague.extension, flow_settings))
    (await twin.dialled(colleague.extension)).busy()
    again = await twin.dialled(desk.extension)
    assert caller.playing is not None, "the caller hears ringback, never silence"
    again.answer()
    await twin.until(lambda: caller.bridged_to is again)
    again.hang_up()
    ended = await events.next("call_ended", caller=calling)
    record = await call_record(admin, ended["call_id"])
    assert (record["disposition"], record["connected_to"]) == ("answered", desk.extension)


async def test_a_transfer_to_an_unknown_extension_is_refused_and_the_call_goes_on(
    admin: ApiClient, twin: MemoryWorkers, events: Events, flow_settings: Settings,
    next_extension: Callable[[], str],
) -> None:  # fmt: skip
    desk = await user(admin, next_extension)
    calling, caller, phone = await answered_call(admin, twin, desk)
    for target, code in (("sip:999@x", 404), (refer_to(desk.extension, flow_settings), 403)):
        phone.transfer(target)
        await twin.until(lambda code=code: phone.transfer_reports[-1][0] == code)
    assert caller.bridged_to is phone and phone.is_up
    phone.hang_up()
    assert await transfers_on_record(admin, events, calling) == []


async def test_an_agent_transfers_a_queue_caller_and_goes_into_wrap_up(
    admin: ApiClient, twin: MemoryWorkers, events: Events, flow_settings: Settings,
    next_extension: Callable[[], str],
) -> None:  # fmt: skip
    agent = await user(admin, next_extension, status="ready")
    colleague = await user(admin, next_extension)
    queue_id = await queue(admin, [agent], wrap_up_time=30)
    number = await company_number(admin, {"type": "queue", "id": queue_id},
                                  extension_dialing=False)  # fmt: skip
    calling = caller_number()
    caller = twin.call_in(calling, number)
    agent_phone = await twin.dialled(agent.extension)
    agent_phone.answer()
    await twin.until(lambda: caller.bridged_to is agent_phone)
    agent_phone.transfer(refer_to(colleague.extension, flow_settings))
    target = await twin.dialled(colleague.extension)
    target.answer()
    await twin.until(lambda: caller.bridged_to is target)
    logged = await events.next("queue_transfer", queue_id=queue_id)
    assert (logged["user_id"], logged["to"], logged["kind"]) == (agent.id, colleague.extension,
                                                                 "blind")  # fmt: skip
    assert (await presence(admin, agent.id))["status"] == "wrap_up"
    assert [event for event, _ in await queue_log(admin, queue_id)][-2:] == ["connect", "transfer"]
    caller.hang_up()
    await events.next("call_ended", caller=calling)


async def test_a_blind_transfer_by_keys_passes_the_caller_on(
    admin: ApiClient, twin: MemoryWorkers, events: Events, next_extension: Callable[[], str]
) -> None:
    desk, colleague = await user(admin, next_extension), await user(admin, next_extension)
    calling, caller, phone = await answered_call(admin, twin, desk)
    phone.press("#1")
    # The caller waits on hold music, the desk is asked for the number.
    await twin.until(lambda: caller.bridged_to is None and caller.playing is not None)
    phone.press(colleague.extension + "#")
    await twin.until(lambda: phone.ended.done())
    target = await twin.dialled(colleague.extension)
    target.answer()
    await twin.until(lambda: caller.bridged_to is target)
    transferred = await events.next("call_transferred", by=desk.extension)
    assert (transferred["to"], transferred["kind"]) == (colleague.extension, "blind")
    caller.hang_up()
    await events.next("call_ended", caller=calling)


async def test_an_attended_transfer_by_keys_hands_the_caller_over_when_the_desk_hangs_up(
    admin: ApiClient, twin: MemoryWorkers, events: Events, next_extension: Callable[[], str]
) -> None:
    desk, colleague = await user(admin, next_extension), await user(admin, next_extension)
    calling, caller, phone = await answered_call(admin, twin, desk)
    phone.press("*2" + colleague.extension + "#")
    consulted = await twin.dialled(colleague.extension)
    consulted.answer()
    await twin.until(lambda: phone.bridged_to is consulted)
    assert caller.playing is not None and caller.bridged_to is None, "on hold, not listening"
    phone.hang_up()
    ended = await handed_over(twin, events, calling, caller, consulted, desk.extension,
                              colleague.extension)  # fmt: skip
    record = await call_record(admin, ended["call_id"])
    assert (record["disposition"], record["connected_to"]) == ("answered", colleague.extension)


async def test_a_desk_hanging_up_as_the_colleague_answers_still_hands_the_caller_over(
    admin: ApiClient, twin: MemoryWorkers, events: Events, next_extension: Callable[[], str]
) -> None:
    """The desk's BYE crosses the bridge to the colleague (the worker no longer has its leg):
    the caller is handed over, not dropped."""
    desk, colleague = await user(admin, next_extension), await user(admin, next_extension)
    calling, caller, phone = await answered_call(admin, twin, desk)
    phone.press("*2" + colleague.extension + "#")
    consulted = await twin.dialled(colleague.extension)
    twin.fail_next(Bridge, f"{NO_SUCH_LEG}{phone.leg_id}")
    bridges = len(twin.sent(Bridge))
    consulted.answer()
    await twin.until(lambda: len(twin.sent(Bridge)) > bridges)
    phone.hang_up()
    await handed_over(twin, events, calling, caller, consulted, desk.extension, colleague.extension)


async def test_a_desk_hanging_up_as_the_colleague_is_dialled_still_hands_the_caller_over(
    admin: ApiClient, twin: MemoryWorkers, events: Events, next_extension: Callable[[], str]
) -> None:
    """The desk hangs up as soon as the colleague's phone is dialled, before the ringback
    the service plays it: the caller is handed over to the ringing phone."""
    desk, colleague = await user(admin, next_extension), await user(admin, next_extension)
    calling, caller, phone = await answered_call(admin, twin, desk)
    phone.press("*2" + colleague.extension + "#")
    consulted = await twin.dialled(colleague.extension)
    phone.hang_up()
    consulted.answer()
    await handed_over(twin, events, calling, caller, consulted, desk.extension, colleague.extension)


async def test_an_attended_transfer_nobody_takes_brings_the_desk_back_to_the_caller(
    admin: ApiClient, twin: MemoryWorkers, events: Events, next_extension: Callable[[], str]
) -> None:
    desk, colleague = await user(admin, next_extension), await user(admin, next_extension)
    calling, caller, phone = await answered_call(admin, twin, desk)
    phone.press("*2" + colleague.extension + "#")
    (await twin.dialled(colleague.extension)).busy()
    await twin.until(lambda: caller.bridged_to is phone)
    phone.press("*2")  # and a number nobody has
    await twin.until(lambda: caller.bridged_to is None)
    phone.press("999#")
    await twin.until(lambda: caller.bridged_to is phone)
    phone.hang_up()
    assert await transfers_on_record(admin, events, calling) == []


async def test_a_phone_that_called_a_customer_transfers_the_customer_to_a_colleague(
    admin: ApiClient, twin: MemoryWorkers, events: Events, flow_settings: Settings,
    next_extension: Callable[[], str],
) -> None:  # fmt: skip
    """The agent placed the call (outbound): the customer is passed on, the agent's leg ends
    and the agent is free at once."""
    agent, colleague = await user(admin, next_extension), await user(admin, next_extension)
    customer_number = "+4930555123"
    agent_phone = twin.call_in(agent.extension, customer_number, source="phone")
    customer = await twin.dialled(customer_number)
    customer.answer()
    await twin.until(lambda: agent_phone.bridged_to is customer)
    agent_phone.transfer(refer_to(colleague.extension, flow_settings))
    await twin.until(lambda: agent_phone.ended.done())
    assert agent_phone.transfer_reports[-1] == (200, "OK")
    assert (await presence(admin, agent.id))["activity"] == "idle", "free at once"
    target = await twin.dialled(colleague.extension)
    target.answer()
    await twin.until(lambda: customer.bridged_to is target)
    transferred = await events.next("call_transferred", by=agent.extension)
    customer.hang_up()
    ended = await events.next("call_ended", call_id=transferred["call_id"])
    record = await call_record(admin, ended["call_id"])
    assert (record["direction"], record["disposition"], record["connected_to"]) == (
        "outbound", "answered", colleague.extension,
    )  # fmt: skip


async def test_a_call_that_came_through_another_edge_reaches_its_parties_through_it(
    admin: ApiClient, twin: MemoryWorkers, flow_settings: Settings,
    next_extension: Callable[[], str],
) -> None:  # fmt: skip
    """A phone registered at another node's edge calls a customer, then transfers them: the
    trunk and the colleague are reached through that edge too, so the call's signalling
    stays on one edge (which may outlive the active node's)."""
    agent, colleague = await user(admin, next_extension), await user(admin, next_extension)
    agent_phone = twin.call_in(agent.extension, "+4930555124", source="phone", via=OTHER_EDGE)
    customer = await twin.dialled("+4930555124")
    assert twin.sent(Dial)[-1].route == f"sip:{OTHER_EDGE};lr"
    customer.answer()
    await twin.until(lambda: agent_phone.bridged_to is customer)
    agent_phone.transfer(refer_to(colleague.extension, flow_settings))
    target = await twin.dialled(colleague.extension)
    assert target.uri == f"sip:{colleague.extension}@{OTHER_EDGE}"
    target.answer()
    await twin.until(lambda: customer.bridged_to is target)
    customer.hang_up()


async def test_a_phone_that_hangs_up_right_after_asking_still_transfers(
    admin: ApiClient, twin: MemoryWorkers, flow_settings: Settings,
    next_extension: Callable[[], str],
) -> None:  # fmt: skip
    """Many phones send BYE at once after their REFER: the request and the BYE arrive
    together, and the caller still goes on to the target."""
    desk, colleague = await user(admin, next_extension), await user(admin, next_extension)
    _, caller, phone = await answered_call(admin, twin, desk)
    phone.transfer(refer_to(colleague.extension, flow_settings))
    phone.hang_up()
    target = await twin.dialled(colleague.extension)
    target.answer()
    await twin.until(lambda: caller.bridged_to is target)
    caller.hang_up()


async def test_a_caller_who_leaves_during_an_attended_transfer_leaves_nothing_ringing(
    admin: ApiClient, twin: MemoryWorkers, events: Events, next_extension: Callable[[], str]
) -> None:
    desk, colleague = await user(admin, next_extension), await user(admin, next_extension)
    calling, caller, phone = await answered_call(admin, twin, desk)
    phone.press("*2" + colleague.extension + "#")
    consulted = await twin.dialled(colleague.extension)
    caller.hang_up()
    phone.hang_up()
    await twin.until(lambda: consulted.ended.done())
    assert await transfers_on_record(admin, events, calling) == []
