"""The provider fakes answer as the documented providers do (providers.md §2, §4, §7).

Each test drives a fake over real HTTP with plain ``requests``, once as a correct client and once
as a wrong one, and checks both the documented answer and the violation the fake recorded.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests

from tests.fakes import (
    AzureDevOpsApp,
    AzureDevOpsOAuthFake,
    PagerDutyApp,
    PagerDutyFake,
    TokenState,
    pkce_pair,
)
from tests.peers.processes import wait_until

T0 = 1_750_000_000.0  # a fixed start: the fakes' time moves only with advance()
PD_ACCEPT = "application/vnd.pagerduty+json;version=2"
PD_APP = PagerDutyApp("pd-client", "pd-secret-" + "s" * 32, "https://ks.example/cb/pagerduty")
PD_SCOPE = "incidents.read users.read"
ADO_APP = AzureDevOpsApp(
    "0c1b7a52-3f0e-4c55-9a51-2b9c3e0f6d11", "eyJ0eXAiOiJKV1Qi." + "x" * 120, "https://localhost/cb"
)
ADO_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ADO_CODE_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"


def query_of(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.trust_env = False  # no proxy between us and 127.0.0.1
        yield session


# -- PagerDuty ---------------------------------------------------------------------------------


@pytest.fixture
def pd() -> Iterator[PagerDutyFake]:
    with PagerDutyFake(PD_APP, now=lambda: T0) as fake:
        yield fake


def pd_authorize_url(fake: PagerDutyFake, challenge: str | None, **overrides: str | None) -> str:
    params: dict[str, str | None] = {
        "client_id": PD_APP.client_id,
        "redirect_uri": PD_APP.redirect_uri,
        "response_type": "code",
        "scope": PD_SCOPE,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": "st-123",
        **overrides,
    }
    return f"{fake.url}/oauth/authorize?" + urlencode(
        {k: v for k, v in params.items() if v is not None}
    )


def pd_code(fake: PagerDutyFake, scope: str = PD_SCOPE) -> tuple[str, str]:
    """Authorize as the consenting user; the code and its PKCE verifier."""
    verifier, challenge = pkce_pair()
    location = fake.authorize_redirect(pd_authorize_url(fake, challenge, scope=scope))
    assert location.startswith(PD_APP.redirect_uri + "?")
    return query_of(location)["code"], verifier


def pd_exchange(http: requests.Session, fake: PagerDutyFake, **form: str | None) -> Any:
    body = {
        "grant_type": "authorization_code",
        "client_id": PD_APP.client_id,
        "client_secret": PD_APP.client_secret,
        "redirect_uri": PD_APP.redirect_uri,
        **form,
    }
    return http.post(f"{fake.url}/oauth/token", data={k: v for k, v in body.items() if v})


def pd_refresh(
    http: requests.Session, fake: PagerDutyFake, refresh_token: str
) -> requests.Response:
    form = {
        "grant_type": "refresh_token",
        "client_id": PD_APP.client_id,
        "client_secret": PD_APP.client_secret,
        "refresh_token": refresh_token,
    }
    return http.post(f"{fake.url}/oauth/token", data=form)


def pd_connect(http: requests.Session, fake: PagerDutyFake, scope: str = PD_SCOPE) -> Any:
    code, verifier = pd_code(fake, scope)
    response = pd_exchange(http, fake, code=code, code_verifier=verifier)
    assert response.status_code == 200, response.text
    return response.json()


def users_me(http: requests.Session, fake: PagerDutyFake, token: str) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}", "Accept": PD_ACCEPT}
    return http.get(f"{fake.url}/users/me", headers=headers)


def test_pagerduty_connect_flow_as_documented(pd: PagerDutyFake, http: requests.Session) -> None:
    verifier, challenge = pkce_pair()
    location = pd.authorize_redirect(pd_authorize_url(pd, challenge))
    callback = query_of(location)
    assert location.startswith(PD_APP.redirect_uri)
    assert callback["state"] == "st-123"

    response = pd_exchange(http, pd, code=callback["code"], code_verifier=verifier)

    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    tokens = response.json()
    assert set(tokens) == {
        "client_info",
        "id_token",
        "token_type",
        "access_token",
        "refresh_token",
        "scope",
        "expires_in",
    }
    assert tokens["token_type"] == "bearer"
    assert tokens["access_token"].startswith("pdus+_0")
    assert tokens["refresh_token"].startswith("pdus+_1")
    assert tokens["scope"] == "openid incidents.read users.read"  # §4: openid is attached
    assert tokens["expires_in"] == 86400
    me = users_me(http, pd, tokens["access_token"])
    assert me.status_code == 200
    assert me.json()["user"]["email"] == "alice@contoso.com"
    assert pd.is_active(tokens["access_token"])
    assert pd.is_active(tokens["refresh_token"])
    assert pd.grants["authorization_code"] == 1
    [token_request] = pd.requests_to("/oauth/token")
    assert token_request.form["code_verifier"] == verifier
    assert token_request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert pd.violations == []


@pytest.mark.parametrize(
    ("form", "answer", "reason"),
    [
        ({"code_verifier": None}, (400, "invalid_request"), "missing code_verifier"),
        ({"code_verifier": "w" * 43}, (400, "invalid_grant"), "does not match challenge"),
        ({"client_secret": None}, (401, "invalid_client"), "client_secret missing"),
        ({"client_secret": "wrong"}, (401, "invalid_client"), "client_secret is wrong"),
        ({"redirect_uri": "https://ks.example/other"}, (400, "invalid_grant"), "redirect_uri"),
        ({"grant_type": "password"}, (400, "unsupported_grant_type"), "password"),
    ],
)
def test_pagerduty_rejects_a_wrong_code_exchange(
    pd: PagerDutyFake,
    http: requests.Session,
    form: dict[str, str | None],
    answer: tuple[int, str],
    reason: str,
) -> None:
    code, verifier = pd_code(pd)

    response = pd_exchange(http, pd, **{"code": code, "code_verifier": verifier, **form})

    assert (response.status_code, response.json()["error"]) == answer
    [violation] = pd.violations
    assert reason in violation
    assert violation.startswith("POST /oauth/token: ")
    assert pd.requests_to("/oauth/token")[0].reason == violation
    assert pd.grants["authorization_code"] == 0


def test_pagerduty_token_endpoint_wants_a_form_not_json(
    pd: PagerDutyFake, http: requests.Session
) -> None:
    code, verifier = pd_code(pd)
    body = {
        "grant_type": "authorization_code",
        "client_id": PD_APP.client_id,
        "client_secret": PD_APP.client_secret,
        "redirect_uri": PD_APP.redirect_uri,
        "code": code,
        "code_verifier": verifier,
    }

    response = http.post(f"{pd.url}/oauth/token", json=body)

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert "Content-Type must be application/x-www-form-urlencoded" in pd.violations[0]
    assert pd_exchange(http, pd, code=code, code_verifier=verifier).status_code == 200


def test_pagerduty_codes_are_single_use_and_live_30_seconds(
    pd: PagerDutyFake, http: requests.Session
) -> None:
    code, verifier = pd_code(pd)
    pd.advance(29)
    assert pd_exchange(http, pd, code=code, code_verifier=verifier).status_code == 200

    again = pd_exchange(http, pd, code=code, code_verifier=verifier)
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"
    assert "single use" in pd.violations[-1]

    late, late_verifier = pd_code(pd)
    pd.advance(31)
    expired = pd_exchange(http, pd, code=late, code_verifier=late_verifier)
    assert expired.status_code == 400
    assert expired.json()["error"] == "invalid_grant"
    assert "codes live 30 seconds" in pd.violations[-1]
    assert len(pd.violations) == 2


def test_pagerduty_authorize_refuses_bad_requests_per_rfc_6749(
    pd: PagerDutyFake, http: requests.Session
) -> None:
    _, challenge = pkce_pair()

    no_pkce = query_of(pd.authorize_redirect(pd_authorize_url(pd, None)))
    plain = query_of(
        pd.authorize_redirect(pd_authorize_url(pd, challenge, code_challenge_method="plain"))
    )
    token_flow = query_of(pd.authorize_redirect(pd_authorize_url(pd, challenge, response_type="t")))
    # A wrong redirect_uri or client never gets a redirect (RFC 6749 §4.1.2.1).
    wrong_uri = http.get(
        pd_authorize_url(pd, challenge, redirect_uri="https://evil.example/cb"),
        allow_redirects=False,
    )
    wrong_client = http.get(pd_authorize_url(pd, challenge, client_id="nobody"))

    assert no_pkce == {
        "error": "invalid_request",
        "error_description": "code_challenge missing: PKCE is required (§4)",
        "state": "st-123",
    }
    assert plain["error"] == "invalid_request"
    assert "code" not in plain
    assert token_flow["error"] == "unsupported_response_type"
    assert wrong_uri.status_code == 400
    assert "Location" not in wrong_uri.headers
    assert wrong_client.status_code == 400
    assert len(pd.violations) == 5
    assert "not the registered one exactly" in pd.violations[3]
    assert "unknown client_id 'nobody'" in pd.violations[4]


def test_pagerduty_user_denial_redirects_without_a_code(pd: PagerDutyFake) -> None:
    _, challenge = pkce_pair()
    pd.deny_next()

    denied = query_of(pd.authorize_redirect(pd_authorize_url(pd, challenge)))
    allowed = query_of(pd.authorize_redirect(pd_authorize_url(pd, challenge)))

    assert denied == {"error": "access_denied", "state": "st-123"}
    assert "code" in allowed
    assert pd.violations == []  # the user's choice, not the client's fault


def test_pagerduty_invalid_scope_silently_grants_only_openid(
    pd: PagerDutyFake, http: requests.Session
) -> None:
    tokens = pd_connect(http, pd, scope="users.read incidents.delete_everything")

    assert tokens["scope"] == "openid"  # §4: no error, just openid
    assert pd.granted_scopes() == ["openid"]
    assert "invalid scopes ['incidents.delete_everything']" in pd.violations[0]
    missing_scope = users_me(http, pd, tokens["access_token"])
    assert missing_scope.status_code == 403
    assert missing_scope.json()["error"]["message"] == "Token missing required scopes"


def test_pagerduty_refresh_rotates_and_the_old_refresh_token_dies(
    pd: PagerDutyFake, http: requests.Session
) -> None:
    first = pd_connect(http, pd)

    refreshed = pd_refresh(http, pd, first["refresh_token"])

    assert refreshed.status_code == 200
    second = refreshed.json()
    assert second["access_token"] != first["access_token"]
    assert second["refresh_token"] != first["refresh_token"]
    assert second["scope"] == first["scope"]  # RFC 6749 §6: same scope
    assert pd.token_state(first["refresh_token"]) is TokenState.ROTATED
    assert pd.is_active(first["access_token"])  # the old AT lives until it expires
    reused = pd_refresh(http, pd, first["refresh_token"])
    assert reused.status_code == 400
    assert reused.json()["error"] == "invalid_grant"
    assert "already rotated" in pd.violations[0]
    assert pd_refresh(http, pd, second["refresh_token"]).status_code == 200
    assert pd.grants == {"authorization_code": 1, "refresh_token": 2}


def test_pagerduty_old_refresh_token_grace_is_a_constructor_option(
    http: requests.Session,
) -> None:
    with PagerDutyFake(PD_APP, now=lambda: T0, old_refresh_token_valid_for=60) as fake:
        first = pd_connect(http, fake)
        assert pd_refresh(http, fake, first["refresh_token"]).status_code == 200
        fake.advance(59)
        assert pd_refresh(http, fake, first["refresh_token"]).status_code == 200
        fake.advance(2)
        assert pd_refresh(http, fake, first["refresh_token"]).status_code == 400
        assert len(fake.violations) == 1


def test_pagerduty_reuse_detection_revokes_the_grant_when_enabled(
    http: requests.Session,
) -> None:
    with PagerDutyFake(PD_APP, now=lambda: T0, reuse_revokes_grant=True) as fake:
        first = pd_connect(http, fake)
        second = pd_refresh(http, fake, first["refresh_token"]).json()

        assert pd_refresh(http, fake, first["refresh_token"]).status_code == 400

        assert not fake.is_active(second["refresh_token"])
        assert not fake.is_active(second["access_token"])


def test_pagerduty_a_lost_refresh_response_leaves_the_client_with_a_dead_token(
    pd: PagerDutyFake, http: requests.Session
) -> None:
    first = pd_connect(http, pd)
    pd.fail_next("/oauth/token", None, delay=0.5)  # processed, answered too late

    with pytest.raises(requests.exceptions.ReadTimeout):
        http.post(
            f"{pd.url}/oauth/token",
            data={
                "grant_type": "refresh_token",
                "client_id": PD_APP.client_id,
                "client_secret": PD_APP.client_secret,
                "refresh_token": first["refresh_token"],
            },
            timeout=0.1,
        )
    wait_until(lambda: pd.grants["refresh_token"] == 1, timeout=5, what="the late refresh")

    assert pd_refresh(http, pd, first["refresh_token"]).json()["error"] == "invalid_grant"


def test_pagerduty_injected_503_with_retry_after(pd: PagerDutyFake, http: requests.Session) -> None:
    first = pd_connect(http, pd)
    pd.fail_next("/oauth/token", 503, count=2, retry_after=7)

    answers = [pd_refresh(http, pd, first["refresh_token"]) for _ in range(3)]

    assert [a.status_code for a in answers] == [503, 503, 200]
    assert answers[0].headers["Retry-After"] == "7"
    assert pd.token_state(first["refresh_token"]) is TokenState.ROTATED
    assert [r.status for r in pd.requests_to("/oauth/token")] == [200, 503, 503, 200]
    assert pd.violations == []


def test_pagerduty_injected_429_with_a_json_body(pd: PagerDutyFake, http: requests.Session) -> None:
    pd.fail_next("/users/me", 429, body={"error": {"message": "Rate Limit Exceeded"}})
    tokens = pd_connect(http, pd)

    limited = users_me(http, pd, tokens["access_token"])

    assert limited.status_code == 429
    assert limited.json()["error"]["message"]
    assert users_me(http, pd, tokens["access_token"]).status_code == 200


def test_pagerduty_revoke_endpoint_and_revoke_all(
    pd: PagerDutyFake, http: requests.Session
) -> None:
    one, two = pd_connect(http, pd), pd_connect(http, pd)
    revoke = f"{pd.url}/oauth/revoke"

    answer = http.post(revoke, data={"client_id": PD_APP.client_id, "token": one["refresh_token"]})
    unknown = http.post(revoke, data={"client_id": PD_APP.client_id, "token": "pdus+_1nope"})

    assert answer.status_code == 200
    assert unknown.status_code == 200
    # RFC 7009 §2.1: revoking the refresh token takes the grant's access tokens along.
    assert not pd.is_active(one["refresh_token"])
    assert not pd.is_active(one["access_token"])
    dead = users_me(http, pd, one["access_token"])
    assert dead.status_code == 401
    assert dead.json()["error"]["code"] == 2006
    assert pd_refresh(http, pd, one["refresh_token"]).json()["error"] == "invalid_grant"
    assert pd.is_active(two["access_token"])

    assert pd.revoke_all() == 2  # "Revoke All Tokens" in the app UI (§4)
    assert not pd.is_active(two["access_token"])
    assert not pd.is_active(two["refresh_token"])
    assert pd.violations == []


def test_pagerduty_revoke_can_be_switched_off(http: requests.Session) -> None:
    with PagerDutyFake(PD_APP, now=lambda: T0, revoke_supported=False) as fake:
        tokens = pd_connect(http, fake)
        form = {"client_id": PD_APP.client_id, "token": tokens["refresh_token"]}

        assert http.post(f"{fake.url}/oauth/revoke", data=form).status_code == 404
        assert fake.is_active(tokens["refresh_token"])


def test_pagerduty_users_me_needs_a_live_token_and_the_v2_accept_header(
    pd: PagerDutyFake, http: requests.Session
) -> None:
    tokens = pd_connect(http, pd)
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}

    no_accept = http.get(f"{pd.url}/users/me", headers=bearer)
    unknown = users_me(http, pd, "pdus+_0never-issued")
    pd.expire_access_tokens()
    expired = users_me(http, pd, tokens["access_token"])

    assert no_accept.status_code == 406
    assert unknown.status_code == 401
    assert expired.status_code == 401
    assert expired.json() == {
        "error": {"message": "Authentication failed: token expired", "code": 2006, "errors": []}
    }
    assert pd.token_state(tokens["access_token"]) is TokenState.EXPIRED
    assert pd_refresh(http, pd, tokens["refresh_token"]).status_code == 200  # RT unaffected
    assert len(pd.violations) == 2
    assert "Accept must be" in pd.violations[0]
    assert "no Bearer" in pd.violations[1]


def test_pagerduty_repeated_parameters_are_invalid(
    pd: PagerDutyFake, http: requests.Session
) -> None:
    code, verifier = pd_code(pd)
    body = urlencode(
        [
            ("grant_type", "authorization_code"),
            ("client_id", PD_APP.client_id),
            ("client_secret", PD_APP.client_secret),
            ("redirect_uri", PD_APP.redirect_uri),
            ("code", code),
            ("code", code),
            ("code_verifier", verifier),
        ]
    )
    headers = {"Content-Type": "application/x-www-form-urlencoded"}

    response = http.post(f"{pd.url}/oauth/token", data=body, headers=headers)

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert "repeated parameters: ['code']" in pd.violations[0]


# -- legacy Azure DevOps OAuth -----------------------------------------------------------------


@pytest.fixture
def ado() -> Iterator[AzureDevOpsOAuthFake]:
    with AzureDevOpsOAuthFake(ADO_APP, now=lambda: T0) as fake:
        yield fake


def ado_authorize_url(fake: AzureDevOpsOAuthFake, **overrides: str) -> str:
    params = {
        "client_id": ADO_APP.client_id,
        "response_type": "Assertion",
        "state": "st-ado",
        "scope": "vso.code vso.work",
        "redirect_uri": ADO_APP.redirect_uri,
        **overrides,
    }
    return f"{fake.url}/oauth2/authorize?" + urlencode(params)


def ado_code(fake: AzureDevOpsOAuthFake) -> str:
    callback = query_of(fake.authorize_redirect(ado_authorize_url(fake)))
    assert callback["state"] == "st-ado"
    return callback["code"]


def ado_token(
    http: requests.Session, fake: AzureDevOpsOAuthFake, assertion: str, **form: str | None
) -> requests.Response:
    body: dict[str, str | None] = {
        "client_assertion_type": ADO_ASSERTION_TYPE,
        "client_assertion": ADO_APP.client_secret,
        "grant_type": ADO_CODE_GRANT,
        "assertion": assertion,
        "redirect_uri": ADO_APP.redirect_uri,
        **form,
    }
    return http.post(f"{fake.url}/oauth2/token", data={k: v for k, v in body.items() if v})


def ado_refresh(
    http: requests.Session, fake: AzureDevOpsOAuthFake, refresh_token: str, secret: str
) -> requests.Response:
    return ado_token(http, fake, refresh_token, grant_type="refresh_token", client_assertion=secret)


def ado_connect(http: requests.Session, fake: AzureDevOpsOAuthFake) -> Any:
    response = ado_token(http, fake, ado_code(fake))
    assert response.status_code == 200, response.text
    return response.json()


def profile(http: requests.Session, fake: AzureDevOpsOAuthFake, token: str) -> requests.Response:
    return http.get(
        f"{fake.url}/_apis/profile/profiles/me", headers={"Authorization": f"Bearer {token}"}
    )


def test_ado_connect_flow_as_documented(ado: AzureDevOpsOAuthFake, http: requests.Session) -> None:
    tokens = ado_connect(http, ado)

    assert set(tokens) == {"access_token", "token_type", "expires_in", "refresh_token", "scope"}
    assert tokens["token_type"] == "jwt-bearer"
    assert tokens["expires_in"] == "3599"  # a string, as the real service sends it
    assert tokens["scope"] == "vso.code vso.work"
    assert tokens["access_token"].startswith("eyJ")
    me = profile(http, ado, tokens["access_token"])
    assert me.status_code == 200
    assert me.json()["emailAddress"] == "alice@contoso.com"
    assert ado.grants[ADO_CODE_GRANT] == 1
    assert ado.violations == []


def test_ado_answers_the_reported_bodies_when_asked(
    ado: AzureDevOpsOAuthFake, http: requests.Session
) -> None:
    """providers.md §8: what users report (azure-devops-docs#8583, coder/coder#6886, TF400813),
    beside the spec-shaped answers the switches leave alone when off."""
    tokens = ado_connect(http, ado)
    ado.revoke_all()
    spec = ado_refresh(http, ado, tokens["refresh_token"], ADO_APP.client_secret)
    assert (spec.status_code, spec.json()["Error"]) == (400, "invalid_grant")
    ado.reported_errors = True
    dead = ado_refresh(http, ado, tokens["refresh_token"], ADO_APP.client_secret)
    assert dead.status_code == 400
    assert dead.json() == {"Error": "invalid_request",
                           "ErrorDescription": "The access token is not valid"}  # fmt: skip
    ado.wrong_secret = True
    wrong = ado_token(http, ado, ado_code(ado))
    assert (wrong.status_code, wrong.json()["ErrorDescription"]) == (
        400, "Failed to deserialize the JsonWebToken object.")  # fmt: skip
    ado.reported_errors = False
    assert ado_token(http, ado, ado_code(ado)).status_code == 401  # RFC 6749 §5.2 invalid_client
    ado.wrong_secret = False
    fresh = ado_connect(http, ado)
    ado.oauth_disabled_by_org = True
    for response in (
        profile(http, ado, fresh["access_token"]),
        ado_refresh(http, ado, fresh["refresh_token"], ADO_APP.client_secret),
    ):
        assert response.status_code == 401
        assert response.json()["message"].startswith("TF400813: ")
        assert response.json()["typeKey"] == "UnauthorizedRequestException"  # fmt: skip
    ado.oauth_disabled_by_org = False
    assert profile(http, ado, fresh["access_token"]).status_code == 200


def test_ado_expires_in_type_is_configurable(http: requests.Session) -> None:
    with AzureDevOpsOAuthFake(ADO_APP, expires_in_as_string=False, expires_in=60) as fake:
        assert ado_connect(http, fake)["expires_in"] == 60


@pytest.mark.parametrize(
    ("form", "answer", "reason"),
    [
        ({"client_assertion_type": "client_secret"}, (400, "invalid_request"), "assertion_type"),
        ({"grant_type": "authorization_code"}, (400, "invalid_request"), "grant_type must be"),
        ({"redirect_uri": "https://localhost/other"}, (400, "invalid_request"), "redirect_uri"),
        ({"redirect_uri": None}, (400, "invalid_request"), "missing redirect_uri"),
        ({"client_assertion": "not-the-secret"}, (401, "invalid_client"), "secret unknown"),
        ({"client_id": ADO_APP.client_id}, (400, "invalid_request"), "unexpected fields"),
    ],
)
def test_ado_rejects_a_wrong_code_exchange(
    ado: AzureDevOpsOAuthFake,
    http: requests.Session,
    form: dict[str, str | None],
    answer: tuple[int, str],
    reason: str,
) -> None:
    code = ado_code(ado)

    response = ado_token(http, ado, code, **form)

    assert (response.status_code, response.json()["Error"]) == answer
    assert set(response.json()) == {"Error", "ErrorDescription"}  # §2: capitalised keys
    [violation] = ado.violations
    assert reason in violation
    assert ado_token(http, ado, code).status_code == 200  # a failed attempt does not burn it


def test_ado_token_endpoint_wants_a_form(ado: AzureDevOpsOAuthFake, http: requests.Session) -> None:
    body = {
        "client_assertion_type": ADO_ASSERTION_TYPE,
        "client_assertion": ADO_APP.client_secret,
        "grant_type": ADO_CODE_GRANT,
        "assertion": ado_code(ado),
        "redirect_uri": ADO_APP.redirect_uri,
    }

    response = http.post(f"{ado.url}/oauth2/token", json=body)

    assert response.status_code == 400
    assert response.json()["Error"] == "invalid_request"
    assert "Content-Type must be" in ado.violations[0]


def test_ado_codes_are_single_use(ado: AzureDevOpsOAuthFake, http: requests.Session) -> None:
    code = ado_code(ado)
    assert ado_token(http, ado, code).status_code == 200

    again = ado_token(http, ado, code)

    assert again.status_code == 400
    assert again.json()["Error"] == "invalid_grant"
    assert "code already used" in ado.violations[0]


def test_ado_authorize_validates_response_type_redirect_and_denial(
    ado: AzureDevOpsOAuthFake, http: requests.Session
) -> None:
    wrong_type = query_of(ado.authorize_redirect(ado_authorize_url(ado, response_type="code")))
    wrong_uri = http.get(
        ado_authorize_url(ado, redirect_uri="https://localhost/cb/"), allow_redirects=False
    )
    ado.deny_next()
    denied = query_of(ado.authorize_redirect(ado_authorize_url(ado)))

    assert wrong_type["error"] == "unsupported_response_type"
    assert "code" not in wrong_type
    assert wrong_uri.status_code == 400
    assert "Location" not in wrong_uri.headers
    assert denied == {"error": "access_denied", "state": "st-ado"}  # §2: no code comes back
    assert len(ado.violations) == 2
    assert "exactly 'Assertion'" in ado.violations[0]


def test_ado_refresh_issues_a_new_refresh_token_and_kills_the_old(
    ado: AzureDevOpsOAuthFake, http: requests.Session
) -> None:
    first = ado_connect(http, ado)

    refreshed = ado_refresh(http, ado, first["refresh_token"], ADO_APP.client_secret)

    assert refreshed.status_code == 200
    second = refreshed.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert not ado.is_active(first["refresh_token"])
    reused = ado_refresh(http, ado, first["refresh_token"], ADO_APP.client_secret)
    assert reused.status_code == 400
    assert reused.json()["Error"] == "invalid_grant"
    assert "already used" in ado.violations[0]
    assert ado.grants == {ADO_CODE_GRANT: 1, "refresh_token": 1}


def test_ado_regenerating_the_secret_kills_it_and_its_tokens(
    ado: AzureDevOpsOAuthFake, http: requests.Session
) -> None:
    tokens = ado_connect(http, ado)

    new_secret = ado.regenerate_secret(ADO_APP.client_id)

    assert not ado.is_active(tokens["access_token"])
    assert not ado.is_active(tokens["refresh_token"])
    assert profile(http, ado, tokens["access_token"]).status_code == 401
    old = ado_refresh(http, ado, tokens["refresh_token"], ADO_APP.client_secret)
    assert old.status_code == 401
    assert old.json()["Error"] == "invalid_client"
    assert "regenerated" in ado.violations[0]
    with_new = ado_refresh(http, ado, tokens["refresh_token"], new_secret)
    assert with_new.status_code == 400
    assert with_new.json()["Error"] == "invalid_grant"
    assert len(ado.violations) == 1  # a revoked token is the provider's doing
    fresh = ado_token(http, ado, ado_code(ado), client_assertion=new_secret)
    assert fresh.status_code == 200


def test_ado_injected_503_and_expired_access_tokens(
    ado: AzureDevOpsOAuthFake, http: requests.Session
) -> None:
    tokens = ado_connect(http, ado)
    ado.fail_next("/oauth2/token", 503, retry_after=3)

    unavailable = ado_refresh(http, ado, tokens["refresh_token"], ADO_APP.client_secret)
    ado.expire_access_tokens()

    assert unavailable.status_code == 503
    assert unavailable.headers["Retry-After"] == "3"
    assert profile(http, ado, tokens["access_token"]).status_code == 401
    assert ado.is_active(tokens["refresh_token"])
    assert ado_refresh(http, ado, tokens["refresh_token"], ADO_APP.client_secret).ok
    assert profile(http, ado, "eyJunknown").status_code == 401
    assert ado.violations == [
        "GET /_apis/profile/profiles/me: no Bearer access token issued by this fake"
    ]


def test_ado_app_registration_is_checked() -> None:
    with pytest.raises(ValueError, match="HTTPS"):
        AzureDevOpsApp(str(uuid.uuid4()), "secret", "http://localhost/cb")
    with pytest.raises(ValueError, match="badly formed"):
        AzureDevOpsApp("not-a-guid", "secret", "https://localhost/cb")
