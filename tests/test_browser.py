"""A person connects in a real browser: headless Chromium opens a connect link served by devhost,
signs in and consents on oidc-provider's own pages, and lands on Keysteward's success page."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from playwright.sync_api import Page, expect

from shared.storage.tables.connections import Connection
from tests.peers.browser import chromium_missing, headless_chromium
from tests.peers.world import World

APP = "oidc-demo"
USER = "browser-user@contoso.com"


def processes_mentioning(text: str) -> list[int]:
    """Pids whose command line contains ``text``: a browser left running on its profile."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:  # gone meanwhile
            continue
        if text.encode() in cmdline:
            pids.append(int(proc.name))
    return pids


def test_a_user_connects_in_a_real_browser(world: World, tmp_path: Path) -> None:
    if reason := chromium_missing():
        pytest.fail(reason)  # a skip would pass unnoticed: the browser is part of the suite
    link = world.connect_link(APP, USER)
    callback = world.api(f"oauth/{APP}/callback")
    with headless_chromium() as browser:
        page = browser.new_page()
        page.goto(link)  # devhost 302 -> oidc-provider /auth -> 303 its login page
        assert page.url.startswith(f"{world.oidc.issuer}/interaction/"), page.url
        bound = [c for c in browser.context.cookies() if c["name"].startswith("ks_bind_")]
        assert len(bound) == 1  # the sign-in is bound to this browser
        assert (bound[0]["httpOnly"], bound[0]["sameSite"], bound[0]["path"]) == (
            True, "Lax", "/api/oauth/",
        )  # fmt: skip
        page.locator("input[name=login]").fill(USER)  # the account the link names
        page.locator("input[name=password]").fill("any password will do")
        page.get_by_role("button", name="Sign-in").click()
        consent = page.get_by_role("button", name="Continue")  # the consent form
        expect(consent).to_be_visible()
        consent.click()
        page.wait_for_url(lambda url: url.startswith(f"{callback}?"))
        expect(page.locator("#title")).to_have_text("Connected")
        assert not [c for c in browser.context.cookies() if c["name"].startswith("ks_bind_")]
        expect(page.locator("#message")).to_contain_text(f"{APP} is connected for {USER}")
        page.screenshot(path=tmp_path / "connected.png", full_page=True)
        profile = str(browser.profile)
    assert processes_mentioning(profile) == [], "the browser outlived its context"

    connection = world.store.read(Connection, APP, USER)
    assert connection is not None
    assert connection.status == "active"
    assert connection.refresh_token is not None
    plaintext = connection.refresh_token.reveal()
    assert plaintext
    raw = world.store.get("Connections", APP, USER)
    assert raw is not None
    sealed = raw.data["refresh_token"]
    assert isinstance(sealed, str)
    assert sealed.startswith("v1.")
    assert sealed != plaintext
    assert plaintext not in repr(raw.data)


def sign_in(page: Page, login: str = "someone-else") -> None:
    page.locator("input[name=login]").fill(login)
    page.locator("input[name=password]").fill("any password will do")
    page.get_by_role("button", name="Sign-in").click()
    consent = page.get_by_role("button", name="Continue")
    expect(consent).to_be_visible()
    consent.click()


def test_a_sign_in_sent_to_another_browser_is_refused_there(world: World, tmp_path: Path) -> None:
    if reason := chromium_missing():
        pytest.fail(reason)
    user = "fixation-owner@contoso.com"
    # The link's owner takes the provider's URL without a browser and sends it to a colleague.
    opened = requests.get(world.connect_link(APP, user), allow_redirects=False, timeout=30)
    authorize = opened.headers["Location"]
    callback = world.api(f"oauth/{APP}/callback")
    with headless_chromium() as browser:
        page = browser.new_page()
        page.goto(authorize)
        sign_in(page)
        page.wait_for_url(lambda url: url.startswith(f"{callback}?"))
        expect(page.locator("#title")).to_have_text("Could not connect")
        expect(page.locator("#message")).to_contain_text("the browser that opened the connect")
        expect(page.locator("#code")).to_have_text("wrong_browser")
        page.screenshot(path=tmp_path / "wrong-browser.png", full_page=True)
    assert world.store.read(Connection, APP, user) is None


def test_a_sign_in_with_another_account_is_refused(world: World, tmp_path: Path) -> None:
    if reason := chromium_missing():
        pytest.fail(reason)
    user = "expected-user@contoso.com"
    callback = world.api(f"oauth/{APP}/callback")
    with headless_chromium() as browser:
        page = browser.new_page()
        page.goto(world.connect_link(APP, user))  # the right browser, the wrong account
        sign_in(page, "someone-else@contoso.com")
        page.wait_for_url(lambda url: url.startswith(f"{callback}?"))
        expect(page.locator("#title")).to_have_text("Could not connect")
        message = page.locator("#message")
        expect(message).to_contain_text("as someone-else@contoso.com, but this link is for")
        expect(message).to_contain_text(f"sign in as {user}")
        expect(page.locator("#code")).to_have_text("identity_mismatch")
        page.screenshot(path=tmp_path / "wrong-account.png", full_page=True)
    assert world.store.read(Connection, APP, user) is None
    assert [
        e.detail["signed_in"] for e in world.audit(f"{APP}/{user}", "connect.identity_mismatch")
    ] == ["someone-else@contoso.com"]
