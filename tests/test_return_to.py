"""``return_to`` is parsed and compared as a browser parses it (issue 16, point 3). With
``https://app.example.test/cb/`` allowed, an attacker's values were accepted and the 302 resolved
outside the prefix on the same host; a value with CR/LF was accepted and made the callback answer
500 after the grant was stored. Each value below was one of those. Over real HTTP through devhost,
with the browser's own view of each URL checked by a WHATWG parser in the test (ada-url)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

import pytest
from ada_url import URL

from shared.storage.tables.connect_links import ConnectLink, digest
from tests.peers.world import RETURN_PREFIX, World

APP = "oidc-demo"
HOST = "https://app.example.test"

ESCAPES = {
    "encoded-dot-segments": f"{HOST}/cb/%2e%2e/%2e%2e/evil",
    "mixed-case-encoded-dots": f"{HOST}/cb/%2E%2e/evil",
    "dot-dot": f"{HOST}/cb/..",
    "dot-dot-slash": f"{HOST}/cb/../evil",
    "backslash": f"{HOST}/cb/..\\evil",
    "tab-inside-dots": f"{HOST}/cb/.\t./evil",
    "encoded-slashes": f"{HOST}/cb/%2F%2Fevil.test",
    "encoded-backslash": f"{HOST}/cb/%5cevil",
    "crlf": f"{HOST}/cb/x\r\nSet-Cookie: pwned=1",
    "lf": f"{HOST}/cb/x\nLocation: https://evil.test/",
    "nul": f"{HOST}/cb/x\x00",
    "space": f"{HOST}/cb/x y",
    "credentials": "https://app.example.test@evil.test/cb/",
}


def link_request(world: World, return_to: str) -> tuple[int, dict[str, Any]]:
    body = {"app": APP, "user_id": "rt@contoso.com", "return_to": return_to}
    answer = world.call("POST", "connect-sessions", json=body)
    return answer.status_code, answer.json()


@pytest.mark.parametrize("value", ESCAPES.values(), ids=ESCAPES.keys())
def test_a_return_to_a_browser_would_rewrite_is_refused_when_the_link_is_made(
    world: World, value: str
) -> None:
    before = len(world.audit_actions("connect.link_created"))
    status, body = link_request(world, value)
    assert status == 400, body
    assert set(body) == {"error", "message"}
    assert body["error"] == "invalid_request"
    assert "return_to" in body["message"]
    assert len(world.audit_actions("connect.link_created")) == before  # nothing was made


def finish(world: World, user: str, return_to: str) -> tuple[int, str | None]:
    link = world.connect_link(APP, user, return_to=return_to)
    callback = world.consent(APP, world.authorize_url(link), user)
    response = world.http.get(callback, allow_redirects=False, timeout=30)
    return response.status_code, response.headers.get("Location")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (f"{RETURN_PREFIX}done", f"{HOST}/cb/done"),
        (f"{RETURN_PREFIX}done?tab=2#top", f"{HOST}/cb/done?tab=2"),
        ("HTTPS://APP.example.TEST:443/cb/x", f"{HOST}/cb/x"),  # the form a browser follows
        (f"{RETURN_PREFIX}ok?next=%2Fhome", f"{HOST}/cb/ok?next=%2Fhome"),  # a query may encode
    ],
)
def test_an_allowed_return_to_is_followed_in_its_normalised_form(
    world: World, given: str, expected: str
) -> None:
    user = f"rt-{len(given)}@contoso.com"
    status, location = finish(world, user, given)
    assert status == 302
    assert location is not None
    assert location.startswith(f"{expected}&status=connected" if "?" in expected
                               else f"{expected}?status=connected")  # fmt: skip
    parsed = URL(location)
    assert parsed.host == "app.example.test"
    assert parsed.pathname.startswith("/cb/")
    assert parse_qs(parsed.search[1:])["user_id"] == [user]


@pytest.mark.parametrize(
    "value",
    [
        "http://app.example.test/cb/x",  # another scheme
        "https://app.example.test:8443/cb/x",  # another port
        "https://evil.app.example.test/cb/x",  # another host
        "https://app.example.test/cbx",  # beside the prefix, not under it
        "https://app.example.test/cb",  # the prefix without its '/'
    ],
)
def test_a_return_to_outside_the_allowed_urls_is_not_followed(world: World, value: str) -> None:
    status, body = link_request(world, value)
    assert status == 201
    assert body["return_to_allowed"] is False
    code, location = finish(world, f"rt-out-{abs(hash(value)) % 10_000}@contoso.com", value)
    assert code == 200  # a plain page, never a redirect
    assert location is None


def test_a_value_stored_before_these_checks_never_makes_the_callback_fail(world: World) -> None:
    """A link made by an earlier version may hold CR/LF in ``return_to``: the grant is stored and
    the page answers; no header ever carries what was stored."""
    user = "rt-legacy@contoso.com"
    link = world.connect_link(APP, user, return_to=f"{RETURN_PREFIX}done")
    row = world.store.read(ConnectLink, digest(link.rsplit("/", 1)[1]), "link")
    assert row is not None
    row.return_to = f"{RETURN_PREFIX}done\r\nSet-Cookie: pwned=1"
    world.store.save(row)
    callback = world.consent(APP, world.authorize_url(link), user)
    response = world.http.get(callback, allow_redirects=False, timeout=30)
    assert response.status_code in (200, 302), response.text
    assert "pwned" not in response.headers.get("Location", "")
    assert "pwned" not in response.headers.get("Set-Cookie", "")
    assert world.call("GET", f"connections/{APP}/{user}").json()["status"] == "active"
