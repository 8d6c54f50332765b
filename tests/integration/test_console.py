"""The web console in a real headless Chromium, against the running service."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from selenium.webdriver.common.keys import Keys

from core.settings import Settings
from tests.support.browser import Browser, headless_chromium


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
