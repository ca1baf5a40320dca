"""Browser fixtures: Debian's chromium driven by Playwright against the real platform.

The platform is the session's shared one (tests/conftest.py); the web apps must be built
(`make frontend`, which `make test` runs). Every test's page is screenshotted into
`test-artifacts/` when the test ends, passed or failed.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Page,
    Playwright,
    ViewportSize,
    expect,
    sync_playwright,
)

from services.runtime.platform import LocalPlatform
from services.runtime.webapps import APPS, DIST

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
# Playwright's waits (actions, expect, wait_for_*) give up after this long; navigations and
# screenshots get longer. Generous, since CI machines are shared: they only bound a failure.
TIMEOUT_MS = 30_000
NAVIGATION_TIMEOUT_MS = 60_000
DESKTOP: ViewportSize = {"width": 1366, "height": 900}
expect.set_options(timeout=TIMEOUT_MS)


# Package scope, not session: Playwright's sync API keeps an event loop running while it is
# open, and tests after the browser tests call asyncio.run().
@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    """The Playwright driver."""
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="package")
def browser(playwright: Playwright) -> Iterator[Browser]:
    """Debian's chromium, headless."""
    if not CHROMIUM.exists():
        pytest.fail("/usr/bin/chromium is missing: `make chromium` installs Debian's package")
    launched = playwright.chromium.launch(
        executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
    )
    yield launched
    launched.close()


@pytest.fixture(scope="session")
def web(platform: LocalPlatform) -> str:
    """The edge's URL, once it serves the built web apps."""
    missing = [app for app in APPS if not (DIST / app / "browser" / "index.html").exists()]
    if missing:
        pytest.fail(f"web apps not built ({', '.join(missing)}): run `make frontend`")
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{platform.base_url}/dashboard/", timeout=5).status_code == 200:
                return platform.base_url
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError("the edge does not serve /dashboard/ within 30 s")
        time.sleep(0.2)


def _screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    page.screenshot(
        path=str(ARTIFACTS / f"{safe}.png"), full_page=True, timeout=NAVIGATION_TIMEOUT_MS
    )


def open_context(browser: Browser, web: str, **options: Any) -> BrowserContext:
    """A fresh browser profile on the edge with the suite's timeouts (`options` as new_context)."""
    created = browser.new_context(base_url=web, locale="en-US", **options)
    created.set_default_timeout(TIMEOUT_MS)
    created.set_default_navigation_timeout(NAVIGATION_TIMEOUT_MS)
    return created


@pytest.fixture
def context(browser: Browser, web: str) -> Iterator[BrowserContext]:
    """A fresh browser profile (no cookies, no storage) on the edge, desktop-sized."""
    created = open_context(browser, web, viewport=DESKTOP)
    yield created
    created.close()


@pytest.fixture
def page(context: BrowserContext, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A page whose final state is saved as test-artifacts/<test name>.png."""
    opened = context.new_page()
    yield opened
    if not opened.is_closed():
        _screenshot(opened, request.node.name)


@pytest.fixture
def phone(browser: Browser, web: str, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A phone-sized page (375 by 740 CSS pixels, touch), screenshotted like `page`."""
    created = open_context(
        browser,
        web,
        viewport={"width": 375, "height": 740},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
    )
    opened = created.new_page()
    yield opened
    _screenshot(opened, request.node.name)
    created.close()
