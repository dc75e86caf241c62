"""Headless Chromium for browser tests: Debian's /usr/bin/chromium driven by Playwright.

Playwright's own browser download (`playwright install`) cannot work on these machines, so the
browser is always Debian's package, installed by `make setup`. Each ``headless_chromium()`` gets
a fresh, empty profile in a temporary directory, starts with the flags that keep Chromium from
reaching for Google's services (blocked here, and slow to fail), and lets pages load only from
loopback addresses: anything else (web fonts a login page imports, say) is aborted and recorded
in ``blocked``. Leaving the ``with`` block closes the browser and removes the profile, also when
the test failed.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from playwright.sync_api import BrowserContext, Page, Route, sync_playwright

from shared.foundation.urls import loopback_host

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package `chromium`
CHROMIUM_ARGS = (
    "--no-sandbox",  # we run as root in a container
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
TIMEOUT_MS = 20_000  # for every Playwright action and wait; the whole flow takes ~1 s


class ChromiumMissingError(RuntimeError):
    pass


def chromium_missing() -> str | None:
    """Why the browser cannot start, or None when it can."""
    if os.access(CHROMIUM, os.X_OK):
        return None
    return (
        f"{CHROMIUM} not found: run `make setup`, which installs Debian's chromium package "
        "(never `playwright install`: it downloads a browser and fails here)"
    )


def is_loopback(url: str) -> bool:
    return loopback_host(urlsplit(url).hostname or "")


@dataclass
class HeadlessChromium:
    context: BrowserContext
    profile: Path
    blocked: list[str] = field(default_factory=list)  # URLs refused as not loopback

    def __post_init__(self) -> None:
        self.context.route("**/*", self._only_loopback)

    def new_page(self) -> Page:
        return self.context.new_page()

    def _only_loopback(self, route: Route) -> None:
        url = route.request.url
        if is_loopback(url):
            route.continue_()
        else:
            self.blocked.append(url)
            route.abort("blockedbyclient")


@contextmanager
def headless_chromium() -> Iterator[HeadlessChromium]:
    """A fresh browser context; the browser process is gone when the block is left."""
    reason = chromium_missing()
    if reason is not None:
        raise ChromiumMissingError(reason)
    with (
        tempfile.TemporaryDirectory(prefix="keysteward-chromium-") as profile,
        sync_playwright() as playwright,
    ):
        # A persistent context is the only way to choose the profile directory; closing it
        # closes the browser, and leaving sync_playwright() ends the driver and anything left.
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=list(CHROMIUM_ARGS),
            timeout=TIMEOUT_MS,
        )
        try:
            context.set_default_timeout(TIMEOUT_MS)
            yield HeadlessChromium(context, Path(profile))
        finally:
            context.close()
