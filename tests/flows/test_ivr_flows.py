"""Company-number calls on the in-memory workers: the greeting with extension dialing, menus,
and a worker refusing to dial, checked by what the service records and what it told the
worker."""

from __future__ import annotations

from collections.abc import Callable

from core.settings import Settings
from pbx.memory_worker import MemoryWorkers
from pbx.protocol import Dial
from tests.flows.builders import (
    HANGUP,
    call_record,
    caller_number,
    company_number,
    extension_to,
    menu,
    presence,
    user,
)
from tests.flows.conftest import Events
from tests.support.api_client import ApiClient


async def test_an_extension_dialled_during_the_greeting_rings_and_is_bridged_on_answer(
    admin: ApiClient, twin: MemoryWorkers, events: Events, flow_settings: Settings,
    next_extension: Callable[[], str],
) -> None:  # fmt: skip
    desk = await user(admin, next_extension)
    number = await company_number(admin, HANGUP)
    twin.prompt_seconds = None  # the greeting plays until a digit cuts it short
    calling = caller_number()
    caller = twin.call_in(calling, number)
    await twin.until(lambda: caller.playing is not None)
    greeting = caller.playing
    caller.press(desk.extension)

    phone = await twin.dialled(desk.extension)
    sip = flow_settings.sip
    assert (phone.uri, phone.from_uri) == (
        f"sip:{desk.extension}@{sip.host}:{sip.port}", f"sip:{calling}@{sip.domain}"
    )  # fmt: skip
    await twin.until(lambda: caller.playing not in (None, greeting))
    assert caller.playing is not None and caller.playing.name.startswith("ringback")
    phone.ring()
    phone.answer()
    await twin.until(lambda: caller.bridged_to is phone)
    assert caller.playing is None  # the bridge stopped the ringback
    assert (await presence(admin, desk.id))["activity"] == "in_call"

    caller.hang_up()
    ended = await events.next("call_ended", caller=calling)
    assert (ended["disposition"], ended["connected_to"], ended["user_id"], ended["hangup_by"]) == (
        "answered", desk.extension, desk.id, "caller",
    )  # fmt: skip
    assert await phone.ended == 200  # the service hung the phone up after its caller
    legs = (await call_record(admin, ended["call_id"]))["legs"]
    assert [leg["role"] for leg in legs] == ["caller", "callee"]
    await events.next("presence_changed", user_id=desk.id, activity="idle")


async def test_a_menu_option_routes_the_caller_after_an_invalid_key(
    admin: ApiClient, twin: MemoryWorkers, events: Events, next_extension: Callable[[], str]
) -> None:
    desk = await user(admin, next_extension)
    menu_id = await menu(admin, options={"1": HANGUP, "2": extension_to(desk)})
    number = await company_number(admin, {"type": "menu", "id": menu_id}, extension_dialing=False)
    calling = caller_number()
    caller = twin.call_in(calling, number)
    await twin.until(lambda: len(caller.prompts) == 2)  # the greeting played out; the menu
    caller.press("9")
    await twin.until(lambda: len(caller.prompts) == 4)  # "not a choice", the menu again
    caller.press("2")

    phone = await twin.dialled(desk.extension)
    phone.answer()
    await twin.until(lambda: caller.bridged_to is phone)
    phone.hang_up()
    ended = await events.next("call_ended", caller=calling)
    assert (ended["disposition"], ended["connected_to"], ended["hangup_by"]) == (
        "answered", desk.extension, "callee",
    )  # fmt: skip
    assert await caller.ended == 200
    assert [d.uri.split("@")[0] for d in twin.sent(Dial) if d.parent == phone.parent] == [
        f"sip:{desk.extension}"
    ]


async def test_an_unregistered_extension_is_unavailable(
    admin: ApiClient, twin: MemoryWorkers, events: Events, next_extension: Callable[[], str]
) -> None:
    away = await user(admin, next_extension)
    twin.phones.unregister(away.extension)
    number = await company_number(admin, HANGUP)
    calling = caller_number()
    caller = twin.call_in(calling, number)
    await twin.until(lambda: bool(caller.prompts))
    caller.press(away.extension)
    ended = await events.next("call_ended", caller=calling)
    # "Not available", then the number's no-answer destination (hang up: "goodbye").
    assert (ended["disposition"], ended["hangup_by"]) == ("ended_in_ivr", "system")
    # Greeting, a moment of ringback, "not available", "goodbye".
    assert len(caller.prompts) == 4 and await caller.ended == 200
    # Dialled without asking the edge first: its location look-up answered 480.
    (dial,) = [d for d in twin.dials if d.extension == away.extension]
    assert not dial.answered.done()


async def test_a_worker_refusing_to_dial_an_extension_ends_the_call_as_failed(
    admin: ApiClient, twin: MemoryWorkers, events: Events, next_extension: Callable[[], str]
) -> None:
    desk = await user(admin, next_extension)
    number = await company_number(admin, HANGUP)
    twin.fail_next(Dial, "no free leg in worker 0")
    calling = caller_number()
    caller = twin.call_in(calling, number)
    await twin.until(lambda: bool(caller.prompts))
    caller.press(desk.extension)
    assert await caller.ended == 200  # the caller is let go either way
    ended = await events.next("call_ended", caller=calling, timeout=0.5)
    assert (ended["disposition"], ended["hangup_by"]) == ("failed", "system")


async def test_a_call_forwarded_to_a_number_goes_to_the_provider_through_the_edge(
    admin: ApiClient, twin: MemoryWorkers, events: Events, flow_settings: Settings
) -> None:
    external = "4930111222"
    number = await company_number(
        admin, {"type": "number", "number": external}, extension_dialing=False
    )
    calling = caller_number()
    caller = twin.call_in(calling, number)

    provider = await twin.dialled(external)
    sip = flow_settings.sip
    # Addressed to the provider, routed through the edge: it then holds the call, and ends it
    # for the provider should the worker die.
    assert (provider.uri, provider.route) == (
        f"sip:{external}@127.0.0.1:5999", f"sip:{sip.host}:{sip.port};lr"
    )  # fmt: skip
    provider.answer()
    await twin.until(lambda: caller.bridged_to is provider)
    caller.hang_up()
    ended = await events.next("call_ended", caller=calling)
    assert (ended["disposition"], ended["connected_to"]) == ("answered", external)
    assert await provider.ended == 200
