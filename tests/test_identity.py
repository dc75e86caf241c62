"""Who signed in: every driver records the provider-side identity of a grant, an app's identity
policy refuses a grant made by another account than the link names, and a reconnect keeps the
account the connection was made with unless the link allows a change (issue 13, points 2-4)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from shared.config.apps import IdentityPolicy, parse
from shared.foundation.errors import SettingsError
from shared.storage.tables.connections import Connection
from tests.peers.world import World

GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
APPS = ["oidc-demo", "entra-demo", "pagerduty-incidents", "ado-legacy"]


def metadata(world: World, app: str, user: str) -> dict[str, Any]:
    response = world.call("GET", f"connections/{app}/{user}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def upstream_revocations(world: World, app: str) -> int:
    if app == "oidc-demo":
        return int(world.oidc.stats()["revocations"])
    if app == "pagerduty-incidents":
        return len(world.pagerduty.requests_to("/oauth/revoke"))
    return 0  # Entra and legacy Azure DevOps have no revocation endpoint (providers.md §2, §3)


@pytest.mark.parametrize("app", APPS)
def test_every_driver_records_who_signed_in(world: World, app: str) -> None:
    user = f"Recorded.{app}@Contoso.com"
    assert world.connect(app, user, account=user.lower()).status_code == 200
    identity = metadata(world, app, user)["identity"]
    assert identity["login"] == user.lower()
    subject = identity["subject"]
    if app == "entra-demo":  # the object id, not the pairwise sub; and the tenant
        assert GUID.match(subject), identity
        assert GUID.match(identity["tenant"]), identity
    elif app == "pagerduty-incidents":  # the PagerDuty user id from its ID token
        assert re.fullmatch(r"P[0-9A-F]{6}", subject), identity
    elif app == "ado-legacy":  # the profile id from the profile API
        assert GUID.match(subject), identity
        assert world.ado.requests_to("/_apis/profile/profiles/me")
    else:
        assert subject == user.lower()
    assert not {"access_token", "refresh_token", "id_token"} & set(identity)


def test_a_spec_conforming_server_is_asked_through_userinfo(world: World) -> None:
    # oidc-provider keeps email out of the ID token of a code flow (OIDC Core §5.4): the
    # driver completes the identity from userinfo, whose subject must be the same.
    user = "userinfo@contoso.com"
    assert world.connect("oidc-open", user).status_code == 200
    assert metadata(world, "oidc-open", user)["identity"] == {"subject": user, "login": user}


@pytest.mark.parametrize("app", APPS)
def test_a_sign_in_with_another_account_is_refused(world: World, app: str) -> None:
    user, other = f"alice.{app}@contoso.com", f"mallory.{app}@contoso.com"
    revoked_before = upstream_revocations(world, app)
    response = world.connect(app, user, account=other)
    assert response.status_code == 403, response.text
    assert "identity_mismatch" in response.text
    assert f"as {other}, but this link is for {user}" in response.text
    assert f"sign in as {user}" in response.text
    assert world.store.read(Connection, app, user) is None
    assert world.token(app, user).status_code == 404
    (entry,) = world.audit(f"{app}/{user}", "connect.identity_mismatch")
    assert entry.outcome == "failure"
    assert entry.detail["signed_in"] == other
    assert entry.detail["expected"] == user
    if app in ("oidc-demo", "pagerduty-incidents"):  # the refused grant is revoked upstream
        assert upstream_revocations(world, app) > revoked_before


def test_the_policy_compares_as_configured(world: World) -> None:
    # casefold: the same person, whatever the case the provider gives.
    assert world.connect("oidc-demo", "Casey@Contoso.com", account="casey@contoso.com").ok
    exact = IdentityPolicy("email", "exact")
    assert exact.accepts("casey@contoso.com", "casey@contoso.com")
    assert not exact.accepts("Casey@contoso.com", "casey@contoso.com")
    assert not IdentityPolicy("email").accepts(None, "casey@contoso.com")


@pytest.mark.parametrize(
    "policy",
    [{"claim": "nickname"}, {"claim": "email", "match": "fuzzy"}, "email", {"match": "exact"}],
)
def test_a_malformed_policy_is_refused_at_start_up(policy: Any) -> None:
    spec = {"provider": "pagerduty", "client_id": "x", "client_secret": "${S}",
            "scopes": ["incidents.read"], "identity": policy}  # fmt: skip
    with pytest.raises(SettingsError, match=re.escape("'identity' is {claim: email")):
        parse({"apps": {"pd": spec}}, {"S": "secret"})


def test_a_reconnect_keeps_the_account_unless_the_link_allows_a_change(world: World) -> None:
    user, first, second = "shared-desk@contoso.com", "desk-one@contoso.com", "desk-two@contoso.com"
    assert world.connect("oidc-open", user, account=first).status_code == 200
    before = world.connection("oidc-open", user)
    # Another account on an ordinary link: refused, the connection untouched.
    refused = world.connect("oidc-open", user, account=second)
    assert refused.status_code == 403, refused.text
    assert f"made with the oidc-open account {first}" in refused.text
    after = world.connection("oidc-open", user)
    assert after.identity == before.identity
    assert after.access_token is not None
    assert before.access_token is not None
    assert after.access_token.reveal() == before.access_token.reveal()
    (entry,) = world.audit(f"oidc-open/{user}", "connect.identity_mismatch")
    assert entry.detail["reason"] == "changed"
    # The same account again: a reconnect, and its event says nothing changed.
    assert world.connect("oidc-open", user, account=first).status_code == 200
    # A link that allows the change.
    link = world.call("POST", "connect-sessions", json={
        "app": "oidc-open", "user_id": user, "allow_identity_change": True})  # fmt: skip
    assert link.status_code == 201, link.text
    callback = world.consent("oidc-open", world.authorize_url(link.json()["url"]), second)
    assert world.http.get(callback, allow_redirects=False, timeout=30).status_code == 200
    assert metadata(world, "oidc-open", user)["identity"]["login"] == second
    reconnects = world.events(f"oidc-open/{user}", "keysteward.connection.reconnected")
    assert [e["data"]["identity_changed"] for e in reconnects] == [False, True]
    assert reconnects[-1]["data"]["identity"]["login"] == second
