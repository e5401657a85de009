"""The web page in a real browser: Debian's chromium driven by Playwright (its own browser download
is never used), on a page served by a real gunicorn (:mod:`tests.serverkit`).

Shared by tests/test_page.py, tests/test_docs_page.py and scripts/page_screenshot.py.
"""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from playwright.sync_api import Browser, Page, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"  # git-ignored: screenshots the tests leave to look at
SETUP = "run `make setup-dev`"


def chromium_path() -> str:
    path = shutil.which("chromium")
    if not path:
        raise RuntimeError(f"chromium is not installed: {SETUP} (Debian: apt-get install chromium)")
    return path


def axe_path() -> Path:
    """axe-core's browser build, fetched from npm by `make setup-dev` (pinned in the Makefile)."""
    found = sorted((ROOT / "tests" / ".vendor").glob("axe-core-*/axe.min.js"))
    if not found:
        raise RuntimeError(f"axe-core is missing under tests/.vendor/: {SETUP}")
    return found[-1]


@contextmanager
def chromium() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path())
        try:
            yield browser
        finally:
            browser.close()


def open_page(browser: Browser, url: str, width: int = 1280, height: int = 900, **context) -> Page:
    """The page at ``url`` in a fresh context (its own storage) ``width`` px wide, its choices loaded."""
    ctx = browser.new_context(viewport={"width": width, "height": height}, **context)
    page = ctx.new_page()
    page.goto(url)
    page.wait_for_selector("body[data-ready]")
    return page


def wait_ready(page: Page, count: int = 1, timeout_s: float = 90) -> None:
    """Until ``count`` cards say Ready (a result shown) and none is working."""
    page.wait_for_function(
        """count => {
            const cards = [...document.querySelectorAll('.card')];
            return cards.length >= count && cards.every(c => c.querySelector('.card-status').dataset.state === 'done'
                && !c.querySelector('.stage').classList.contains('working'));
        }""", arg=count, timeout=timeout_s * 1000)
