"""The web console in a real headless Chromium, against the running service."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from core.settings import Settings
from tests.support.api_client import ApiClient
from tests.support.browser import Browser, headless_chromium
from tests.support.chat import FlakyReceiver, customer_says, eventually, new_channel


@pytest.fixture
def console_url(settings: Settings, api_server: TestServer) -> str:
    return f"http://127.0.0.1:{settings.api.port}/"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with headless_chromium() as started:
        yield started


async def test_the_service_serves_the_console_at_its_root(
    http: aiohttp.ClientSession, console_url: str
) -> None:
    async with http.get(console_url) as page:
        assert page.status == 200
        assert page.content_type == "text/html"
        assert "default-src 'self'" in page.headers["Content-Security-Policy"]
        assert page.headers["X-Content-Type-Options"] == "nosniff"
    async with http.get(console_url + "console/console.js") as script:
        assert script.status == 200
        assert script.content_type in {"application/javascript", "text/javascript"}
    for missing in ("console/nothing.js", "console/..%2Fconsole.py", "console/index.html"):
        async with http.get(console_url + missing) as response:
            assert response.status == 404, missing


async def test_a_signed_out_visitor_gets_a_sign_in_form_named_and_keyboard_reachable(
    browser: Browser, console_url: str
) -> None:
    await browser.open(console_url)
    email = await browser.control("Email")
    password = await browser.control("Password")
    sign_in = await browser.control("Sign in")
    await browser.call(lambda: email.click())
    # Tab walks the form in reading order: email, password, then the button.
    await browser.call(lambda: email.send_keys(Keys.TAB))
    assert await browser.call(lambda: browser.driver.switch_to.active_element == password)
    await browser.call(lambda: password.send_keys(Keys.TAB))
    assert await browser.call(lambda: browser.driver.switch_to.active_element == sign_in)
    # The presence menu is for signed-in people only.
    assert await browser.find_control("Status") is None
    assert await browser.script_errors() == []


async def person(admin: ApiClient, name: str, role: str = "operator") -> tuple[dict[str, Any], str]:
    """A user with an email and a console password; returns the user and the email."""
    email = f"{name.lower().replace(' ', '.')}.{next(_people)}@example.com"
    user = await admin.post("/users", {"name": name, "email": email, "role": role})
    assert user.status == 201, user
    reply = await admin.put(f"/users/{user.body['id']}/password", {"password": PASSWORD})
    assert reply.status == 204, reply
    return user.body, email


_people = itertools.count()
PASSWORD = "correct horse battery"


async def test_an_operator_signs_in_gets_ready_and_answers_a_chat_live(
    admin: ApiClient, anonymous: ApiClient, console_url: str
) -> None:
    operator, email = await person(admin, "Olga Operator")
    other, other_email = await person(admin, "Otto Other")
    async with FlakyReceiver(failures=0) as receiver, headless_chromium() as browser:
        channel = await new_channel(admin, members=[operator["id"]], reply_url=receiver.url)
        await browser.sign_in(console_url, email, PASSWORD)
        await browser.choose("Status", "ready")
        await eventually(
            lambda: admin.get(f"/users/{operator['id']}/presence"),
            lambda reply: reply.body["status"] == "ready",
        )
        # A customer writes; the dialog shows up without a reload.
        posted = await customer_says(anonymous, channel, "cust-1", "Where is my order?",
                                     name="Carla Customer")  # fmt: skip
        dialog_id = posted.body["dialog_id"]
        await browser.press("Chat with Carla Customer, 1 unread")
        await browser.until("the customer's message", lambda d: "Where is my order?" in
                            d.find_element(By.ID, "messages").text)  # fmt: skip
        await browser.type_into("Reply", "It left our warehouse today.")
        await browser.press("Send")
        await eventually(lambda: asyncio.sleep(0, receiver.accepted), bool)
        await browser.until("the reply shown", lambda d: "It left our warehouse" in
                            d.find_element(By.ID, "messages").text)  # fmt: skip
        await browser.screenshot("agent")
        assert receiver.accepted[0]["text"] == "It left our warehouse today."
        assert await browser.script_errors() == []
    # Another operator sees nothing of it, in their console or through the API.
    async with headless_chromium() as browser:
        await browser.sign_in(console_url, other_email, PASSWORD)
        assert await browser.find_control("Chat with Carla Customer, 0 unread") is None
        assert "No chats." in await browser.text_of("chats")
    as_other = admin.as_token(await admin.token_for(other["id"]))
    assert (await as_other.get(f"/dialogs/{dialog_id}")).status == 403


async def test_a_wrong_password_is_refused_in_the_page(
    admin: ApiClient, browser: Browser, console_url: str
) -> None:
    _, email = await person(admin, "Wanda Wrong")
    await browser.open(console_url)
    await browser.type_into("Email", email)
    await browser.type_into("Password", "not the password")
    await browser.press("Sign in")
    await browser.until("a refusal", lambda d: d.find_element(By.ID, "notice").text != "")
    assert await browser.find_control("Status") is None
