"""Playwright driving Debian's Chromium (/usr/bin/chromium) against pytest-django's live server.

Never a downloaded browser: without chromium or the playwright package these tests skip on a
laptop and fail under CI. Each page a test looks at is saved under test-artifacts/screenshots/.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.conf import settings

from tests.conftest import need
from tests.factories import shelter_staff_group

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(settings.BASE_DIR) / "test-artifacts" / "screenshots"


@pytest.fixture(scope="module")
def browser() -> Iterator:
    """One Chromium per module; Playwright stops after it, so later tests see no event loop."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    need(sync_playwright is not None, "the playwright package (pip install -e '.[dev]')")
    need(CHROMIUM.exists(), f"Debian's chromium at {CHROMIUM} (apt-get install chromium)")
    with pytest.MonkeyPatch.context() as patch:
        # Playwright's sync API keeps an event loop on this thread; the ORM calls a test makes
        # between browser steps are ordinary synchronous ones, so Django may allow them.
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=str(CHROMIUM))
            yield chromium
            chromium.close()


class Screenshots:
    """Numbered full-page screenshots of one test: <test>-01-<what>.png, …"""

    def __init__(self, test_name: str) -> None:
        self.prefix = re.sub(r"[^\w-]+", "-", test_name)
        self.taken: list[Path] = []
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        for old in SCREENSHOTS.glob(f"{self.prefix}-*"):
            old.unlink()

    def path(self, what: str, suffix: str) -> Path:
        path = SCREENSHOTS / f"{self.prefix}-{len(self.taken) + 1:02d}-{what}{suffix}"
        self.taken.append(path)
        return path

    def __call__(self, page, what: str) -> None:
        page.screenshot(path=str(self.path(what, ".png")), full_page=True)


@pytest.fixture
def shots(request) -> Screenshots:
    return Screenshots(request.node.name)


@pytest.fixture
def open_page(browser, live_server) -> Iterator[Callable]:
    """Open a page in a fresh browser context (its own cookies: one per person) on the live server."""
    contexts = []

    def open_page():
        context = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900})
        context.set_default_timeout(15_000)
        contexts.append(context)
        return context.new_page()

    yield open_page
    for context in contexts:
        context.close()


@pytest.fixture
def staff(staff):
    staff.groups.add(shelter_staff_group())
    return staff


@pytest.fixture
def other_staff(other_staff):
    other_staff.groups.add(shelter_staff_group())
    return other_staff
