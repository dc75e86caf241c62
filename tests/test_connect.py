"""The connect flow through devhost against a real oidc-provider (oidc; entra through MSAL over
https) and the PagerDuty and legacy Azure DevOps OAuth fakes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests

from shared.foundation.clock import SystemClock
from shared.storage.tables.connect_links import OAuthState, digest
from shared.storage.tables.connections import Connection
from shared.trail.audit import AuditLog
from tests.peers.world import RETURN_URL, World, state_of


def stored(world: World, app: str, user: str) -> Connection | None:
    return world.store.read(Connection, app, user)


def audit_reasons(world: World, subject: str) -> list[str]:
    entries = AuditLog(world.store, SystemClock()).read(
        datetime.now(UTC) - timedelta(hours=1), subject=subject
    )
    return [str(e.detail.get("reason")) for e in entries if e.action == "connection.connect_failed"]


def test_the_link_redirects_to_the_provider_with_state_and_pkce(world: World) -> None:
    authorize = world.authorize_url(world.connect_link("oidc-demo", "pkce@contoso.com"))
    query = parse_qs(urlsplit(authorize).query)
    assert authorize.startswith(world.oidc.issuer)
    assert query["code_challenge_method"] == ["S256"]
    assert len(query["code_challenge"][0]) == 43
    assert len(query["state"][0]) >= 22  # at least 128 bits, url-safe base64
    assert query["redirect_uri"] == [
        f"{world.env['KEYSTEWARD_PUBLIC_URL']}/api/oauth/oidc-demo/callback"
    ]
    assert query["prompt"] == ["consent"]  # or offline_access is dropped


@pytest.mark.parametrize(
    ("app", "user"),
    [
        ("oidc-demo", "alice@contoso.com"),
        ("entra-demo", "bob@contoso.com"),
        ("pagerduty-incidents", "carol@contoso.com"),
        ("ado-legacy", "dave@contoso.com"),
    ],
)
def test_a_user_connects_and_the_grant_is_stored_sealed(world: World, app: str, user: str) -> None:
    response = world.connect(app, user)
    assert response.status_code == 200, response.text
    assert "is connected" in response.text
    assert response.headers["Referrer-Policy"] == "no-referrer"
    connection = stored(world, app, user)
    assert connection is not None
    assert connection.status == "active"
    assert connection.access_expires_at is not None
    raw = world.store.get("Connections", app, user)
    assert raw is not None
    sealed = raw.data.get("refresh_token") or raw.data.get("msal_cache")
    assert isinstance(sealed, str)
    assert sealed.startswith("v1.")
    secret = connection.refresh_token or connection.msal_cache
    assert secret is not None
    assert secret.reveal() not in repr(raw.data)
    api = world.call("GET", f"connections/{app}/{user}")
    assert api.status_code == 200
    assert api.json()["status"] == "active"
    for value in (
        secret.reveal(),
        connection.access_token.reveal() if connection.access_token else "",
    ):
        assert value not in api.text


def test_the_provider_saw_the_documented_request_shapes(world: World) -> None:
    world.connect("pagerduty-incidents", "shape-pd@contoso.com")
    world.connect("ado-legacy", "shape-ado@contoso.com")
    assert world.pagerduty.violations == []
    assert world.ado.violations == []
    token = world.pagerduty.requests_to("/oauth/token")[-1]
    assert token.headers["content-type"].startswith("application/x-www-form-urlencoded")
    assert {"client_id", "client_secret", "code_verifier", "code", "redirect_uri"} <= set(
        token.form
    )
    ado = world.ado.requests_to("/oauth2/token")[-1]
    assert ado.form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    assert ado.form["client_assertion_type"] == (
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    )


def test_return_to_is_followed_only_when_allowed(world: World) -> None:
    link = world.connect_link("oidc-demo", "erin@contoso.com", return_to=RETURN_URL)
    callback = world.consent("oidc-demo", world.authorize_url(link), "erin@contoso.com")
    response = world.http.get(callback, allow_redirects=False, timeout=30)
    assert response.status_code == 302
    assert response.headers["Location"].startswith(f"{RETURN_URL}?status=connected")
    link = world.connect_link("oidc-demo", "frank@contoso.com", return_to="https://evil.example/x")
    callback = world.consent("oidc-demo", world.authorize_url(link), "frank@contoso.com")
    response = world.http.get(callback, allow_redirects=False, timeout=30)
    assert response.status_code == 200  # a plain page, never an open redirect
    assert "evil.example" not in response.text


def test_a_link_works_once(world: World) -> None:
    link = world.connect_link("oidc-demo", "once@contoso.com")
    world.authorize_url(link)
    again = world.http.get(link, allow_redirects=False, timeout=30)
    assert again.status_code == 404
    assert "text/html" in again.headers["Content-Type"]


def callback_url(world: World, app: str, **params: str) -> str:
    return f"{world.api(f'oauth/{app}/callback')}?{urlencode(params)}"


def assert_refused(
    world: World, url: str, status: int, reason: str, *, app: str, user: str
) -> None:
    response = world.http.get(url, allow_redirects=False, timeout=30)
    assert response.status_code == status, response.text
    assert "text/html" in response.headers["Content-Type"]
    assert reason in response.text
    assert stored(world, app, user) is None
    assert reason in audit_reasons(world, f"{app}/{user}") or reason in audit_reasons(
        world, f"{app}/?"
    )


def test_the_user_declining_stores_nothing(world: World) -> None:
    world.pagerduty.deny_next()
    authorize = world.authorize_url(world.connect_link("pagerduty-incidents", "no@contoso.com"))
    denied = world.consent("pagerduty-incidents", authorize, "no@contoso.com")
    assert "error=access_denied" in denied
    assert_refused(world, denied, 403, "access_denied", app="pagerduty-incidents",
                   user="no@contoso.com")  # fmt: skip


def test_another_provider_error_stores_nothing(world: World) -> None:
    authorize = world.authorize_url(world.connect_link("oidc-demo", "err@contoso.com"))
    url = callback_url(world, "oidc-demo", error="server_error", state=state_of(authorize))
    assert_refused(
        world, url, 502, "provider_server_error", app="oidc-demo", user="err@contoso.com"
    )


@pytest.mark.parametrize("case", ["missing", "unknown"])
def test_a_missing_or_unknown_state_is_refused(world: World, case: str) -> None:
    params = {"code": "x"} if case == "missing" else {"code": "x", "state": "forged-state-value"}
    response = world.http.get(callback_url(world, "oidc-demo", **params), timeout=30)
    assert response.status_code == 400
    assert f"{case}_state" in response.text


def test_a_replayed_callback_is_refused(world: World) -> None:
    authorize = world.authorize_url(world.connect_link("oidc-demo", "replay@contoso.com"))
    callback = world.consent("oidc-demo", authorize, "replay@contoso.com")
    assert world.http.get(callback, allow_redirects=False, timeout=30).status_code == 200
    again = world.http.get(callback, allow_redirects=False, timeout=30)
    assert again.status_code == 400
    assert "unknown_state" in again.text


def test_an_expired_state_is_refused(world: World) -> None:
    authorize = world.authorize_url(world.connect_link("oidc-demo", "late@contoso.com"))
    state = state_of(authorize)
    row = world.store.read(OAuthState, digest(state), "state")
    assert row is not None
    row.expires_at = datetime.now(UTC) - timedelta(seconds=1)  # ten minutes went by
    world.store.save(row)
    callback = world.consent("oidc-demo", authorize, "late@contoso.com")
    assert_refused(world, callback, 400, "expired_state", app="oidc-demo", user="late@contoso.com")


def test_a_state_issued_for_another_app_is_refused(world: World) -> None:
    authorize = world.authorize_url(world.connect_link("oidc-demo", "cross@contoso.com"))
    callback = world.consent("oidc-demo", authorize, "cross@contoso.com")
    moved = callback.replace("/oauth/oidc-demo/", "/oauth/pagerduty-incidents/")
    assert_refused(world, moved, 400, "wrong_app", app="pagerduty-incidents",
                   user="cross@contoso.com")  # fmt: skip
    assert stored(world, "oidc-demo", "cross@contoso.com") is None
    # The state was not spent by the wrong app's callback: the right one still finishes.
    assert world.http.get(callback, allow_redirects=False, timeout=30).status_code == 200
    assert stored(world, "oidc-demo", "cross@contoso.com") is not None


def test_opening_a_link_binds_the_sign_in_to_that_browser_with_a_cookie(world: World) -> None:
    link = world.connect_link("oidc-demo", "cookie@contoso.com")
    opened = requests.get(link, allow_redirects=False, timeout=30)
    assert opened.status_code == 302
    state = state_of(opened.headers["Location"])
    name, _, attributes = opened.headers["Set-Cookie"].partition(";")
    cookie_name, _, value = name.partition("=")
    assert cookie_name == f"ks_bind_{digest(state)[:16]}"
    assert len(value) >= 43  # 256 bits, url-safe base64
    parts = {a.strip().split("=")[0].lower(): a.strip() for a in attributes.split(";")}
    assert parts["max-age"] == "Max-Age=600"  # the state's lifetime
    assert parts["path"] == "Path=/api/oauth/"  # the callbacks only
    assert "httponly" in parts
    assert parts["samesite"] == "SameSite=Lax"  # survives the provider's top-level redirect
    assert "secure" not in parts  # KEYSTEWARD_PUBLIC_URL is http here
    row = world.store.read(OAuthState, digest(state), "state")
    assert row is not None
    assert row.browser == digest(value)  # only its digest is stored
    assert value not in str(world.store.get("OAuthStates", digest(state), "state"))


def test_a_sign_in_finished_in_another_browser_stores_nothing_and_leaves_the_state(
    world: World,
) -> None:
    # Fixation: the link's owner fetches the authorize URL without a browser and sends it to a
    # colleague, who signs in and consents in their own browser.
    user = "fixer@contoso.com"
    attacker = requests.Session()
    authorize = attacker.get(world.connect_link("oidc-demo", user), allow_redirects=False,
                             timeout=30).headers["Location"]  # fmt: skip
    # (Signed in as the link's user, so the last step shows the right browser can finish.)
    callback = world.consent("oidc-demo", authorize, user)
    victim = requests.Session()
    refused = victim.get(callback, allow_redirects=False, timeout=30)
    assert refused.status_code == 400
    assert "text/html" in refused.headers["Content-Type"]
    assert "wrong_browser" in refused.text
    assert "the browser that opened the connect link" in refused.text
    assert "Set-Cookie" not in refused.headers
    assert stored(world, "oidc-demo", user) is None
    assert "wrong_browser" in audit_reasons(world, f"oidc-demo/{user}")
    # A forged cookie of the right name does not pass either.
    guess = {f"ks_bind_{digest(state_of(authorize))[:16]}": "guess"}
    forged = requests.get(callback, allow_redirects=False, timeout=30, cookies=guess)
    assert forged.status_code == 400
    assert stored(world, "oidc-demo", user) is None
    # The state was not spent: the browser that opened the link can still finish.
    finished = attacker.get(callback, allow_redirects=False, timeout=30)
    assert finished.status_code == 200, finished.text
    assert stored(world, "oidc-demo", user) is not None
    assert "Max-Age=0" in finished.headers["Set-Cookie"]  # the binding is forgotten


def test_a_code_the_provider_refuses_stores_nothing(world: World) -> None:
    authorize = world.authorize_url(world.connect_link("pagerduty-incidents", "slow@contoso.com"))
    callback = world.consent("pagerduty-incidents", authorize, "slow@contoso.com")
    world.pagerduty.advance(31)  # PagerDuty codes live 30 seconds
    assert_refused(world, callback, 502, "code_exchange_failed", app="pagerduty-incidents",
                   user="slow@contoso.com")  # fmt: skip


def test_a_narrower_grant_than_requested_stores_nothing(world: World) -> None:
    authorize = world.authorize_url(world.connect_link("pagerduty-bad-scope", "narrow@contoso.com"))
    callback = world.consent("pagerduty-bad-scope", authorize, "narrow")
    assert_refused(world, callback, 403, "insufficient_scope", app="pagerduty-bad-scope",
                   user="narrow@contoso.com")  # fmt: skip


def test_consenting_again_after_needs_reauth_recovers(world: World) -> None:
    assert world.connect("oidc-demo", "again@contoso.com").status_code == 200
    connection = stored(world, "oidc-demo", "again@contoso.com")
    assert connection is not None
    connection.status = "needs_reauth"  # type: ignore[assignment]
    world.store.save(connection)
    assert world.connect("oidc-demo", "again@contoso.com").status_code == 200
    entries = AuditLog(world.store, SystemClock()).read(
        datetime.now(UTC) - timedelta(hours=1), subject="oidc-demo/again@contoso.com"
    )
    events = [e.detail.get("event") for e in entries if e.action == "connection.connected"]
    assert events == ["keysteward.connection.created", "keysteward.connection.recovered"]


def test_connect_sessions_check_the_keys_globs(world: World) -> None:
    key = world.key(["connections:write"], ["pagerduty-*/*"])
    body = {"app": "pagerduty-incidents", "user_id": "g@contoso.com"}
    allowed = world.call("POST", "connect-sessions", key, json=body)
    assert allowed.status_code == 201
    refused = world.call("POST", "connect-sessions", key,
                         json={"app": "oidc-demo", "user_id": "g@contoso.com"})  # fmt: skip
    assert refused.status_code == 403
    bad = world.call("POST", "connect-sessions", json={"app": "nope", "user_id": "x"})
    assert bad.status_code == 400
    assert bad.json()["error"] == "invalid_request"


@pytest.mark.parametrize(
    ("user_id", "message"),
    [("a/b@contoso.com", "cannot contain '/'"), ("é" * 200, "too long"), ("", "user_id")],
)
def test_a_user_id_that_could_not_be_stored_or_addressed_is_refused_up_front(
    world: World, user_id: str, message: str
) -> None:
    response = world.call("POST", "connect-sessions", json={"app": "oidc-demo", "user_id": user_id})
    assert response.status_code == 400
    assert message in response.json()["message"]
