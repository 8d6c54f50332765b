"""A real headless Chromium (Debian's chromium + chromium-driver) driven by selenium.

Selenium blocks, and the service under test runs on the test's event loop: every browser call
goes through a thread (`await browser.call(...)`), so the page's requests get answered.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service as DriverService
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select

T = TypeVar("T")

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# Elements a person can operate; found by the name assistive technology computes for them.
_CONTROLS = "input, select, textarea, button, a[href], [role=button], [role=menuitem]"
WAIT_S = 10.0
SCREENSHOTS_ENV = "PBX_SCREENSHOTS"


class Browser:
    def __init__(self, driver: WebDriver) -> None:
        self.driver = driver

    async def call(self, fn: Callable[[], T]) -> T:
        return await asyncio.to_thread(fn)

    async def open(self, url: str) -> None:
        await self.call(lambda: self.driver.get(url))

    async def control(self, name: str, timeout_s: float = WAIT_S) -> WebElement:
        """The one visible control whose accessible name is `name`, waited for."""
        return await self.call(lambda: self._wait(lambda: self._control(name), timeout_s, name))

    async def screenshot(self, name: str, scrolled_to: str | None = None) -> None:
        """Save the page as <PBX_SCREENSHOTS>/<name>.png when that folder is given (the
        README's pictures come from the tests: `PBX_SCREENSHOTS=docs/screenshots pytest
        tests/integration/test_console.py tests/flows/test_wallboard.py`)."""
        folder = os.environ.get(SCREENSHOTS_ENV)
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
            if scrolled_to is not None:
                script = f"document.getElementById('{scrolled_to}').scrollIntoView()"
                await self.call(lambda: self.driver.execute_script(script))
            await self.call(lambda: self.driver.save_screenshot(str(Path(folder) / f"{name}.png")))

    async def script_errors(self) -> list[str]:
        """Uncaught exceptions and syntax errors the page's scripts raised so far (an
        answered request, 401 included, is not one)."""
        entries = await self.call(lambda: self.driver.get_log("browser"))
        return [e["message"] for e in entries if e.get("source") == "javascript"]

    async def find_control(self, name: str) -> WebElement | None:
        """The visible control named `name` now, if any (no wait)."""
        return await self.call(lambda: self._control(name))

    async def type_into(self, name: str, text: str) -> None:
        control = await self.control(name)
        await self.call(lambda: (control.clear(), control.send_keys(text)))

    async def press(self, name: str, timeout_s: float = WAIT_S) -> None:
        def click() -> bool:
            control = self._control(name)
            if control is None:
                return False
            control.click()
            return True

        # Found and clicked in one go: a list redrawn in between would leave a stale element.
        await self.call(lambda: self._wait(click, timeout_s, name))

    async def choose(self, name: str, value: str) -> None:
        """Pick the option with `value` in the select named `name`, as a person would."""
        control = await self.control(name)
        await self.call(lambda: Select(control).select_by_value(value))

    async def sign_in(self, url: str, email: str, password: str) -> None:
        await self.open(url)
        await self.type_into("Email", email)
        await self.type_into("Password", password)
        await self.press("Sign in")
        await self.control("Sign out")

    async def text_of(self, element_id: str) -> str:
        return await self.call(lambda: self.driver.find_element(By.ID, element_id).text)

    async def until(
        self, what: str, check: Callable[[WebDriver], T], timeout_s: float = WAIT_S
    ) -> T:
        """Wait for `check` (run in the browser's thread) to return something truthy."""
        return await self.call(lambda: self._wait(lambda: check(self.driver), timeout_s, what))

    def _control(self, name: str) -> WebElement | None:
        found = [
            element
            for element in self.driver.find_elements(By.CSS_SELECTOR, _CONTROLS)
            if element.is_displayed() and element.accessible_name == name
        ]
        if len(found) > 1:
            raise AssertionError(f"{len(found)} controls are named {name!r}")
        return found[0] if found else None

    @staticmethod
    def _wait(probe: Callable[[], T | None], timeout_s: float, what: str) -> T:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                result = probe()
            except StaleElementReferenceException:  # the page redrew it: look again
                result = None
            if result:
                return result
            if time.monotonic() > deadline:
                raise TimeoutError(f"not seen in the browser within {timeout_s:g} s: {what}")
            time.sleep(0.05)


@asynccontextmanager
async def headless_chromium() -> AsyncIterator[Browser]:
    profile = tempfile.mkdtemp(prefix="pbx-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--user-data-dir={profile}",
        "--window-size=1280,900",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = await asyncio.to_thread(
        webdriver.Chrome, options=options, service=DriverService(CHROMEDRIVER)
    )
    try:
        yield Browser(driver)
    finally:
        await asyncio.to_thread(driver.quit)
        shutil.rmtree(profile, ignore_errors=True)
