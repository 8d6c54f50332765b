"""The wallboard on the in-memory workers: a caller shows as waiting in their queue, and the
answered call counts for the queue, the agent and its hour."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from selenium.webdriver.remote.webdriver import WebDriver

from core.settings import Settings
from pbx.memory_worker import MemoryWorkers
from tests.flows.builders import caller_number, company_number, queue, set_presence, user
from tests.flows.conftest import Events
from tests.support.api_client import ApiClient
from tests.support.browser import headless_chromium


async def board(admin: ApiClient) -> dict[str, Any]:
    reply = await admin.get("/wallboard?time_zone=Europe/Berlin")
    assert reply.status == 200, reply.body
    return reply.body


def entry(items: list[dict[str, Any]], key: str, value: int) -> dict[str, Any]:
    return next(item for item in items if item[key] == value)


async def test_a_waiting_caller_then_their_answered_call_show_on_the_wallboard(
    admin: ApiClient, twin: MemoryWorkers, events: Events, next_extension: Callable[[], str]
) -> None:
    agent = await user(admin, next_extension, status="not_ready", reason="break")
    queue_id = await queue(admin, [agent], when_no_agents="wait", wrap_up_time=0)
    number = await company_number(admin, {"type": "queue", "id": queue_id},
                                  extension_dialing=False)  # fmt: skip
    before = entry((await board(admin))["queues"], "id", queue_id)
    assert (before["waiting"], before["answered_today"]) == (0, 0)

    caller = twin.call_in(caller_number(), number)
    await events.next("queue_enter", queue_id=queue_id)
    waiting = await board(admin)
    assert entry(waiting["queues"], "id", queue_id)["waiting"] == 1
    assert entry(waiting["queues"], "id", queue_id)["longest_wait_seconds"] >= 0
    shown = entry(waiting["agents"], "user_id", agent.id)
    assert (shown["status"], shown["reason"], shown["calls_today"]) == ("not_ready", "break", 0)

    await set_presence(admin, agent.id, "ready")
    phone = await twin.dialled(agent.extension)
    phone.answer()
    await twin.until(lambda: caller.bridged_to is phone)
    phone.hang_up()
    await events.next("queue_complete", queue_id=queue_id)
    await events.next("call_ended", called=number)
    after = await board(admin)
    today = entry(after["queues"], "id", queue_id)
    assert (today["waiting"], today["answered_today"], today["abandoned_today"]) == (0, 1, 0)
    assert today["service_level_today"] is not None
    assert entry(after["agents"], "user_id", agent.id)["calls_today"] == 1
    assert sum(hour["answered"] for hour in after["calls_per_hour"]) >= 1
    await set_presence(admin, agent.id, "logged_out")


async def test_the_wallboard_wants_a_real_time_zone_and_staff(
    admin: ApiClient, anonymous: ApiClient
) -> None:
    wrong = await admin.get("/wallboard?time_zone=Mars/Olympus")
    assert (wrong.status, wrong.error_code) == (422, "unknown_time_zone")
    assert (await anonymous.get("/wallboard")).status == 401


FIRST_LOAD_S = 30.0


async def test_a_supervisor_sees_a_queued_call_on_the_wallboard_page(
    admin: ApiClient, twin: MemoryWorkers, events: Events, next_extension: Callable[[], str],
    flow_settings: Settings,
) -> None:  # fmt: skip
    agent = await user(admin, next_extension, status="not_ready", reason="break")
    queue_id = await queue(admin, [agent], when_no_agents="wait")
    name = (await admin.get(f"/queues/{queue_id}")).body["name"]
    number = await company_number(admin, {"type": "queue", "id": queue_id},
                                  extension_dialing=False)  # fmt: skip
    email = f"supervisor.{queue_id}@example.com"
    created = await admin.post("/users", {"name": "Sue", "email": email, "role": "supervisor"})
    password = "a supervisor's password"
    assert (await admin.put(f"/users/{created.body['id']}/password",
                            {"password": password})).status == 204  # fmt: skip

    def waiting_in_row(driver: WebDriver) -> str | None:
        # One script reads the whole table: the page redraws its rows every second, and a
        # walk cell by cell over the many queues earlier tests left took longer than that,
        # so it always met a row already replaced.
        rows = driver.execute_script(
            "return [...document.querySelectorAll('#queue-board tr')]"
            ".map((row) => [...row.cells].map((cell) => cell.textContent));"
        )
        return next((str(cells[1]) for cells in rows if cells and cells[0] == name), None)

    async with headless_chromium() as browser:
        await browser.sign_in(f"http://127.0.0.1:{flow_settings.api.port}/", email, password)
        # The first load sums the day over every call earlier tests made: slow on a busy machine.
        await browser.until("the queue on the wallboard", lambda d: waiting_in_row(d) == "0",
                            timeout_s=FIRST_LOAD_S)  # fmt: skip
        caller = twin.call_in(caller_number(), number)
        await events.next("queue_enter", queue_id=queue_id)
        # The page learns it from the event stream, without a reload.
        await browser.until("the caller waiting", lambda d: waiting_in_row(d) == "1")
        await browser.screenshot("wallboard", scrolled_to="wallboard")
        caller.hang_up()
        await browser.until("the caller gone", lambda d: waiting_in_row(d) == "0")
        assert await browser.script_errors() == []
