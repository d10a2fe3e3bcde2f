"""Debian's Chromium, headless, driven by selenium through Debian's chromedriver."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.env import require_python_module, require_tool

PAGE_TIMEOUT = 30.0


@contextmanager
def chromium(profile: Path) -> Iterator[Any]:
    """A headless Chromium (quit at the end, even on failure), with autoplay allowed."""
    binary = require_tool("chromium", "chromium")
    driver_path = require_tool("chromedriver", "chromium-driver")
    require_python_module("selenium", "selenium")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # never let Selenium Manager download anything
    options = Options()
    options.binary_location = binary
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--mute-audio",
                     "--disable-dev-shm-usage", "--window-size=1200,1100",
                     "--autoplay-policy=no-user-gesture-required", "--no-first-run",
                     f"--user-data-dir={profile}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        driver.set_page_load_timeout(PAGE_TIMEOUT)
        yield driver
    finally:
        driver.quit()


def wait(driver: Any, condition: Callable[[Any], Any], what: str,
         seconds: float = PAGE_TIMEOUT) -> Any:
    """Until `condition(driver)` is truthy; a failure says what was awaited."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, seconds, poll_frequency=0.1).until(condition)
    except TimeoutException:
        try:
            console = [entry["message"] for entry in driver.get_log("browser")]
            text = driver.find_element("tag name", "body").text
        except Exception as exc:  # the report must not hide the failure
            console, text = [f"(cannot read the page: {exc})"], ""
        raise AssertionError(f"the page did not show {what} within {seconds} s; it shows "
                             f"{text[:2000]!r}; console: {console[-20:]}") from None
