"""Real Chromium (Debian's, driven by Playwright; nothing is downloaded) against a real proxy
process. Every page a test opens fails the test on a console error or on any request to a host
other than the proxy's, and `shot(page, name)` writes a screenshot under
tests/browser/screenshots/ (not committed) for a reviewer to look at."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pytest

SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Chromium's own background traffic (updates, sync, ...) is refused on this closed network.
ARGS = ["--headless=new", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def chromium():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed (make test installs it as root: apt-get install "
                    "chromium)")
    args = [*ARGS, "--no-sandbox"] if os.geteuid() == 0 else ARGS
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=args)
        yield browser
        browser.close()


class Watched:
    """A page whose console errors and outside requests are collected."""

    def __init__(self, page, allowed_host: str):
        self.page, self.errors, self.outside = page, [], []
        page.on("console", lambda msg: self.errors.append(msg.text)
                if msg.type == "error" else None)
        page.on("pageerror", lambda err: self.errors.append(str(err)))
        page.on("response", lambda response: self.errors.append(
            f"{response.status} {response.url}") if response.status >= 400 else None)

        def route(route):
            host = urlsplit(route.request.url).netloc
            if route.request.url.startswith(("data:", "blob:")) or host == allowed_host:
                route.continue_()
            else:
                self.outside.append(route.request.url)
                route.abort()

        page.route("**/*", route)

    def check(self) -> None:
        assert self.outside == [], f"requests outside the server: {self.outside}"
        assert self.errors == [], f"console errors: {self.errors}"


@pytest.fixture
def browse(chromium):
    """`browse(base_url, color_scheme="light")` -> a Watched page; checked for console errors
    and outside requests when the test ends."""
    contexts, watched = [], []

    def open_page(base_url: str, color_scheme: str = "light") -> Watched:
        context = chromium.new_context(base_url=base_url, viewport={"width": 1366, "height": 900},
                                       color_scheme=color_scheme)
        contexts.append(context)
        page = Watched(context.new_page(), urlsplit(base_url).netloc)
        watched.append(page)
        return page

    yield open_page
    for page in watched:
        page.check()
    for context in contexts:
        context.close()


def shot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
