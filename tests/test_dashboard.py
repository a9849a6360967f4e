"""The admin dashboard in a real headless Chromium (Debian's package, driven by Selenium
through the system chromedriver): it loads without console errors and its numbers follow the
traffic through the proxy."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
DEADLINE = 15.0
#: What the page shows for "no value yet" (an en dash).
NO_VALUE = "\u2013"


def chromedriver() -> str | None:
    return CHROMEDRIVER if Path(CHROMEDRIVER).exists() else shutil.which("chromedriver")


class Browser:
    """A Selenium driver whose blocking calls run in a thread, so the servers under test keep
    running on the event loop meanwhile."""

    def __init__(self, driver: Any) -> None:
        self.driver = driver

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    async def get(self, url: str) -> None:
        await self.call(self.driver.get, url)

    async def text(self, element_id: str) -> str:
        script = "const e = document.getElementById(arguments[0]); return e ? e.textContent : null;"
        return await self.call(self.driver.execute_script, script, element_id)

    async def console_errors(self) -> list[dict[str, Any]]:
        entries = await self.call(self.driver.get_log, "browser")
        return [e for e in entries if e["level"] in ("SEVERE", "ERROR")]


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Browser]:
    driver_path = chromedriver()
    if not (Path(CHROMIUM).exists() and driver_path) and not os.environ.get("CI"):
        pytest.skip("chromium / chromedriver not installed (CI installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = await asyncio.to_thread(
        webdriver.Chrome, options=options, service=Service(executable_path=driver_path)
    )
    try:
        yield Browser(driver)
    finally:
        await asyncio.to_thread(driver.quit)


async def eventually(check: Callable[[], Any], what: str) -> Any:
    """Poll ``check`` (async) until it returns something truthy, or fail after the deadline."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def number(text: str | None) -> float | None:
    if text is None or text.strip() in ("", NO_VALUE):
        return None
    return float(text.replace(",", "").replace("%", "").strip())


@pytest.mark.slow
async def test_dashboard_loads_without_console_errors_and_follows_traffic(make_proxy, browser):
    proxy = await make_proxy()
    await browser.get(str(proxy.admin.make_url("/")))

    async def live() -> bool:
        status = await browser.text("status")
        return status is not None and status.startswith("live")

    await eventually(live, "the first /stats poll")
    assert number(await browser.text("saved")) == 0
    seen_rps: list[float] = []

    for _ in range(6):  # one miss, then five hits
        response = await proxy.client.post("/agents/select", json={"task": "plan a trip"})
        assert response.status == 200

    async def moved() -> bool:
        rps = number(await browser.text("rps"))
        if rps:
            seen_rps.append(rps)
        return (
            number(await browser.text("requests-total")) == 6
            and number(await browser.text("saved")) == 5
            and bool(seen_rps)
        )

    await eventually(moved, "the numbers to follow the traffic")
    assert number(await browser.text("hit-ratio")) == pytest.approx(83.3)
    assert max(seen_rps) > 0
    assert number(await browser.text("lat-hit-p50")) > 0
    assert number(await browser.text("lat-miss-p99")) > 0
    assert number(await browser.text("tier-ratio-l1")) > 0
    assert number(await browser.text("score")) is not None
    assert await browser.console_errors() == []


@pytest.mark.slow
async def test_dashboard_shows_what_stats_reports(make_proxy, browser):
    proxy = await make_proxy(monitor={"interval": "1h"})  # one score while the test runs
    for _ in range(3):
        await proxy.client.post("/search", json={"q": "cheap flights"})
    await browser.get(str(proxy.admin.make_url("/")))

    async def rendered() -> bool:
        return number(await browser.text("requests-total")) == 3

    await eventually(rendered, "the stats to render")
    stats = await (await proxy.admin.get("/stats")).json()

    score = stats.get("health", {}).get("score")
    shown_score = number(await browser.text("score"))
    if score is None:
        assert shown_score is None
    else:
        assert abs(shown_score - score) <= 0.5  # shown as a whole number
    l1 = stats.get("tiers", {}).get("l1", {})
    shown_l1 = await browser.text("tier-ratio-l1")
    looked_up = l1.get("hits", 0) + l1.get("misses", 0)
    if "hits" in l1 and "misses" in l1 and looked_up:
        assert number(shown_l1) == pytest.approx(100 * l1["hits"] / looked_up, abs=0.05)
    else:
        assert shown_l1 == NO_VALUE
    assert await browser.console_errors() == []


async def test_dashboard_is_self_contained(make_proxy):
    proxy = await make_proxy()

    response = await proxy.admin.get("/")
    page = await response.text()

    assert response.status == 200
    assert response.content_type == "text/html"
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    for external in ("<script src", '<link rel="stylesheet"', "@import", "http://", "https://"):
        assert external not in page
