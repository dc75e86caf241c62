"""Refresh failures end in a visible state, never a silent loop (issue 14, point 2): what the
providers really answer (the legacy Azure DevOps fake's reported bodies, the Entra peer's AADSTS
errors, oidc-provider's spec-shaped ones) through the token endpoint and the refresh sweep."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from shared.providers.refusals import UNRECOGNISED_RETRIES, Kind, judge
from shared.storage.tables.connections import Connection, Status
from shared.trail.events import APP_MISCONFIGURED, CONNECTION_NEEDS_REAUTH
from tests.peers.processes import wait_until
from tests.peers.world import ADO_CLIENT_ID, World


def connect(world: World, app: str, user: str) -> None:
    response = world.connect(app, user)
    assert response.status_code == 200, response.text


def due_now(world: World, app: str, user: str) -> None:
    """Time passes: the back-off after a failure is over (the row says when it is)."""
    connection = world.connection(app, user)
    connection.next_attempt_at = None
    world.store.save(connection)


def public(world: World, app: str, user: str) -> dict[str, Any]:
    response = world.call("GET", f"connections/{app}/{user}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def misconfigured(world: World) -> dict[str, dict[str, Any]]:
    response = requests.get(world.api("health"), timeout=30)
    assert response.status_code == 200, response.text
    return {m["app"]: m for m in response.json()["misconfigured_apps"]}


def assert_needs_reauth_once(
    world: World, app: str, user: str, error: str, provider_code: str | None
) -> None:
    connection = world.connection(app, user)
    assert connection.status == Status.NEEDS_REAUTH
    reason = public(world, app, user)["reauth_reason"]
    assert reason == {"error": error, "provider_code": provider_code}
    events = world.events(f"{app}/{user}", CONNECTION_NEEDS_REAUTH)
    assert len(events) == 1
    assert events[0]["data"]["error"] == error
    assert events[0]["data"]["provider_code"] == provider_code
    assert len(world.audit(f"{app}/{user}", "connection.needs_reauth")) == 1


@pytest.fixture
def ado(world: World) -> Iterator[World]:
    """The legacy Azure DevOps fake with its switches put back afterwards."""
    try:
        yield world
    finally:
        world.ado.reported_errors = False
        world.ado.wrong_secret = False
        world.ado.oauth_disabled_by_org = False


def recover(world: World, app: str, users: list[str]) -> None:
    """A later successful refresh clears the app's mark (audited once)."""
    before = len(world.audit(f"app:{app}", "app.recovered"))
    for user in users:
        due_now(world, app, user)
    response = world.token(app, users[0], force_refresh="true")
    assert response.status_code == 200, response.text
    assert app not in misconfigured(world)
    assert len(world.audit(f"app:{app}", "app.recovered")) == before + 1


def app_events(world: World, app: str) -> int:
    return len(world.events(f"app:{app}", APP_MISCONFIGURED))


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        # (status, error, description, AADSTS codes, driver) -> (kind, error, provider code)
        ((400, "invalid_request", "The access token is not valid", [], "azure-devops-oauth"),
         (Kind.GRANT, "invalid_request", None)),
        ((400, "invalid_client", "Failed to deserialize the JsonWebToken object.", [],
          "azure-devops-oauth"), (Kind.CLIENT, "invalid_client", None)),
        ((401, "", "TF400813: The user 'a@b.c' is not authorized to access this resource.", [],
          "azure-devops-oauth"), (Kind.CLIENT, "unauthorized_client", "TF400813")),
        ((400, "invalid_request", "Some other text", [], "azure-devops-oauth"),
         (Kind.UNRECOGNISED, "invalid_request", None)),
        ((0, "invalid_grant", "", [70008], "msal"), (Kind.GRANT, "invalid_grant", "AADSTS70008")),
        ((0, "invalid_request", "", [70008], "msal"),
         (Kind.GRANT, "invalid_request", "AADSTS70008")),
        ((0, "invalid_client", "", [7000215], "msal"),
         (Kind.CLIENT, "invalid_client", "AADSTS7000215")),
        ((0, "unauthorized_client", "", [700016], "msal"),
         (Kind.CLIENT, "unauthorized_client", "AADSTS700016")),
        ((0, "interaction_required", "", [50076], "msal"),
         (Kind.GRANT, "interaction_required", "AADSTS50076")),
        ((0, "invalid_request", "", [90014], "msal"),
         (Kind.UNRECOGNISED, "invalid_request", "AADSTS90014")),
        ((0, "temporarily_unavailable", "", [], "msal"),
         (Kind.TRANSIENT, "temporarily_unavailable", None)),
        ((429, "", "", [], "oauth2"), (Kind.TRANSIENT, "temporarily_unavailable", None)),
        ((502, "", "", [], "oauth2"), (Kind.TRANSIENT, "temporarily_unavailable", None)),
        ((400, "invalid_grant", "", [], "oauth2"), (Kind.GRANT, "invalid_grant", None)),
        ((400, "unauthorized_client", "", [], "oauth2"),
         (Kind.CLIENT, "unauthorized_client", None)),
        ((403, "", "", [], "oauth2"), (Kind.UNRECOGNISED, "invalid_response", None)),
    ],
)  # fmt: skip
def test_every_refusal_has_one_meaning(answer: tuple[Any, ...], expected: tuple[Any, ...]) -> None:
    """The classification docs/providers.md tabulates, per provider."""
    status, error, description, codes, driver = answer
    refusal = judge(status, error, description=description, codes=codes, driver=driver)
    assert (refusal.kind, refusal.error, refusal.provider_code) == expected


# -- legacy Azure DevOps: what users report ------------------------------------------------------


def test_ado_reported_dead_refresh_token_needs_reauth(ado: World) -> None:
    """400 {"Error": "invalid_request", "ErrorDescription": "The access token is not valid"}
    (MicrosoftDocs/azure-devops-docs#8583) is a dead grant, not a failure retried for ever."""
    user = "rf-ado-dead@contoso.com"
    connect(ado, "ado-legacy", user)
    ado.ado.reported_errors = True
    ado.ado.revoke_all(ADO_CLIENT_ID)  # the user revoked the app: its refresh token is dead
    responses = [ado.token("ado-legacy", user, force_refresh="true") for _ in range(2)]
    assert [r.status_code for r in responses] == [424, 424], responses[0].text
    assert responses[0].json()["error"] == "needs_reauth"
    assert_needs_reauth_once(ado, "ado-legacy", user, "invalid_request", None)


@pytest.mark.parametrize("reported", [True, False], ids=["reported-400", "spec-401"])
def test_ado_wrong_client_secret_marks_the_app_not_the_connections(
    ado: World, reported: bool
) -> None:
    """invalid_client ("Failed to deserialize the JsonWebToken object.", coder/coder#6886, or
    RFC 6749's 401): the app is misconfigured once; every connection stays active, backing off."""
    users = [f"rf-ado-secret-{reported}-{i}@contoso.com" for i in range(2)]
    for user in users:
        connect(ado, "ado-legacy", user)
    events_before = app_events(ado, "ado-legacy")
    audits_before = len(ado.audit("app:ado-legacy", "app.misconfigured"))
    ado.ado.reported_errors = reported
    ado.ado.wrong_secret = True
    for user in users:
        response = ado.token("ado-legacy", user, force_refresh="true")
        assert response.status_code == 503, response.text
        assert response.json()["error"] == "refresh_unavailable"
        assert "app_misconfigured" in response.json()["message"]
        connection = ado.connection("ado-legacy", user)
        assert connection.status == Status.ACTIVE
        assert connection.refresh_token is not None
        assert connection.next_attempt_at is not None
        assert ado.events(f"ado-legacy/{user}", CONNECTION_NEEDS_REAUTH) == []
    mark = misconfigured(ado)["ado-legacy"]
    assert mark["error"] == "invalid_client"
    assert mark["provider_code"] is None
    assert mark["since"]
    events = ado.events("app:ado-legacy", APP_MISCONFIGURED)
    assert len(events) == events_before + 1  # once for the app, not once per connection
    assert events[-1]["data"] == {"app": "ado-legacy", "error": "invalid_client",
                                  "provider_code": None}  # fmt: skip
    assert len(ado.audit("app:ado-legacy", "app.misconfigured")) == audits_before + 1
    # The stored token still lives an hour: callers who do not force are served meanwhile.
    assert ado.token("ado-legacy", users[1], min_ttl="60").status_code == 200
    ado.ado.wrong_secret = False
    recover(ado, "ado-legacy", users)


def test_ado_org_policy_tf400813_marks_the_app(ado: World) -> None:
    """TF400813 in a 401: the organisation turned off third-party OAuth; no grant is at fault."""
    user = "rf-ado-policy@contoso.com"
    connect(ado, "ado-legacy", user)
    ado.ado.oauth_disabled_by_org = True
    response = ado.token("ado-legacy", user, force_refresh="true")
    assert response.status_code == 503, response.text
    assert ado.connection("ado-legacy", user).status == Status.ACTIVE
    mark = misconfigured(ado)["ado-legacy"]
    assert (mark["error"], mark["provider_code"]) == ("unauthorized_client", "TF400813")
    ado.ado.oauth_disabled_by_org = False
    recover(ado, "ado-legacy", [user])


def test_ado_org_policy_at_sign_in_marks_the_app_and_a_sign_in_clears_it(ado: World) -> None:
    """The code exchange meets TF400813: nothing is stored, the app is marked; the next sign-in
    that works clears the mark."""
    user = "rf-ado-policy-connect@contoso.com"
    ado.ado.oauth_disabled_by_org = True
    response = ado.connect("ado-legacy", user)
    assert response.status_code == 502, response.text
    assert ado.store.read(Connection, "ado-legacy", user) is None
    assert misconfigured(ado)["ado-legacy"]["provider_code"] == "TF400813"
    ado.ado.oauth_disabled_by_org = False
    before = len(ado.audit("app:ado-legacy", "app.recovered"))
    connect(ado, "ado-legacy", user)
    assert "ado-legacy" not in misconfigured(ado)
    assert len(ado.audit("app:ado-legacy", "app.recovered")) == before + 1


# -- Entra: AADSTS codes -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "code"),
    [("invalid_grant", 70008), ("invalid_grant", 700082), ("invalid_grant", 50173),
     ("interaction_required", 50076), ("interaction_required", 50079),
     ("invalid_grant", 65001), ("consent_required", 65001)],
)  # fmt: skip
def test_entra_dead_grants_keep_the_aadsts_code(world: World, error: str, code: int) -> None:
    user = f"rf-entra-{error}-{code}@contoso.com"
    connect(world, "entra-demo", user)
    world.entra_op.fail_next("token", 400, error=error, error_codes=[code],
                             error_description="the grant is no longer valid")  # fmt: skip
    response = world.token("entra-demo", user, force_refresh="true")
    assert response.status_code == 424, response.text
    assert_needs_reauth_once(world, "entra-demo", user, error, f"AADSTS{code}")


def test_entra_invalid_client_secret_marks_the_app(world: World) -> None:
    """AADSTS7000215 (invalid client secret) in a 401 invalid_client: an operator's fix."""
    user = "rf-entra-secret@contoso.com"
    connect(world, "entra-demo", user)
    before = app_events(world, "entra-demo")
    world.entra_op.fail_next("token", 401, error="invalid_client", error_codes=[7000215],
                             error_description="Invalid client secret provided.")  # fmt: skip
    response = world.token("entra-demo", user, force_refresh="true")
    assert response.status_code == 503, response.text
    assert world.connection("entra-demo", user).status == Status.ACTIVE
    mark = misconfigured(world)["entra-demo"]
    assert (mark["error"], mark["provider_code"]) == ("invalid_client", "AADSTS7000215")
    assert app_events(world, "entra-demo") == before + 1
    recover(world, "entra-demo", [user])


# -- any OAuth server: the spec-shaped answers ---------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error"), [(401, "invalid_client"), (400, "unauthorized_client")]
)
def test_oidc_client_refusals_mark_the_app(world: World, status: int, error: str) -> None:
    user = f"rf-oidc-{error}@contoso.com"
    connect(world, "oidc-demo", user)
    world.oidc.fail_next("token", status, error=error)
    response = world.token("oidc-demo", user, force_refresh="true")
    assert response.status_code == 503, response.text
    assert world.connection("oidc-demo", user).status == Status.ACTIVE
    assert misconfigured(world)["oidc-demo"]["error"] == error
    assert world.events(f"oidc-demo/{user}", CONNECTION_NEEDS_REAUTH) == []
    recover(world, "oidc-demo", [user])


def test_an_unrecognised_refusal_is_retried_a_bounded_number_of_times(world: World) -> None:
    """A 4xx neither transient nor known: back-off for UNRECOGNISED_RETRIES retries, then the
    grant is treated as dead (needs_reauth once, the code kept)."""
    user = "rf-oidc-unknown@contoso.com"
    connect(world, "oidc-demo", user)
    world.oidc.fail_next("token", 400, UNRECOGNISED_RETRIES + 1, error="invalid_request")
    for attempt in range(UNRECOGNISED_RETRIES):
        response = world.token("oidc-demo", user, force_refresh="true")
        assert response.status_code == 503, (attempt, response.text)
        connection = world.connection("oidc-demo", user)
        assert connection.status == Status.ACTIVE
        assert connection.refresh_failures == attempt + 1
        due_now(world, "oidc-demo", user)
    response = world.token("oidc-demo", user, force_refresh="true")
    assert response.status_code == 424, response.text
    assert_needs_reauth_once(world, "oidc-demo", user, "invalid_request", None)
    assert "oidc-demo" not in misconfigured(world)


def test_transient_failures_keep_their_back_off(world: World) -> None:
    """429 and 5xx never count as refusals, however many come."""
    user = "rf-oidc-transient@contoso.com"
    connect(world, "oidc-demo", user)
    world.oidc.fail_next("token", 503, UNRECOGNISED_RETRIES + 2)
    for _ in range(UNRECOGNISED_RETRIES + 2):
        assert world.token("oidc-demo", user, force_refresh="true").status_code == 503
        due_now(world, "oidc-demo", user)
    connection = world.connection("oidc-demo", user)
    assert connection.status == Status.ACTIVE
    assert connection.refresh_failures == UNRECOGNISED_RETRIES + 2
    world.oidc.clear_failures()


# -- the refresh sweep ---------------------------------------------------------------------------


def run_sweep(world: World) -> None:
    response = requests.post(f"{world.devhost.url}/admin/functions/refresh_sweep", json={},
                             timeout=60)  # fmt: skip
    assert response.status_code == 202, response.text


def test_the_sweep_marks_dead_grants_and_misconfigured_apps(ado: World) -> None:
    dead, held = "rf-sweep-dead@contoso.com", "rf-sweep-held@contoso.com"
    # Access tokens inside the refresh margin: both connections are due at once.
    ado.entra_op.set_access_token_ttl(60)
    ado.ado.expires_in = 60
    try:
        connect(ado, "entra-demo", dead)
        connect(ado, "ado-legacy", held)
    finally:
        ado.entra_op.set_access_token_ttl(3600)
        ado.ado.expires_in = 3599
    ado.entra_op.fail_next("token", 400, error="invalid_grant", error_codes=[700082],
                           error_description="the refresh token expired (inactivity)")  # fmt: skip
    ado.ado.reported_errors = True
    ado.ado.wrong_secret = True
    run_sweep(ado)
    wait_until(lambda: ado.connection("entra-demo", dead).status == Status.NEEDS_REAUTH,
               timeout=30, what="the sweep's refresh of the dead Entra grant")  # fmt: skip
    wait_until(lambda: "ado-legacy" in misconfigured(ado), timeout=30,
               what="the sweep's refresh with a wrong secret")  # fmt: skip
    assert_needs_reauth_once(ado, "entra-demo", dead, "invalid_grant", "AADSTS700082")
    connection = ado.connection("ado-legacy", held)
    assert connection.status == Status.ACTIVE
    assert connection.refresh_failures == 1
    ado.ado.wrong_secret = False
    recover(ado, "ado-legacy", [held])
