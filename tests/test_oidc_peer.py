"""The oidc-provider peer behaves as docs/test-peers say: the facts product tests rely on.

Two servers for the module: plain http mounted at "/", and https (self-signed) mounted at
"/op", which is what MSAL needs. Each test starts from zeroed counters and no queued failures.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

import msal
import pytest
import requests

from devhost.oidc import OidcClient, OidcServer, free_port
from tests.peers.processes import ROOT, wait_until

pytestmark = pytest.mark.slow

REDIRECT_URI = f"http://127.0.0.1:{free_port()}/callback"  # never requested
APP = OidcClient("app", "app-secret", [REDIRECT_URI])
POST_APP = OidcClient(
    "post-app", "post-secret", [REDIRECT_URI], token_endpoint_auth_method="client_secret_post"
)
SCOPE = "openid offline_access api.read"


def _start(tmp: Path, *, https: bool, mount_path: str) -> OidcServer:
    return OidcServer(
        state_dir=tmp, clients=[APP, POST_APP], https=https, mount_path=mount_path
    ).start()


@pytest.fixture(scope="module")
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcServer]:
    server = _start(tmp_path_factory.mktemp("oidc-http"), https=False, mount_path="/")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def https_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcServer]:
    server = _start(tmp_path_factory.mktemp("oidc-https"), https=True, mount_path="/op")
    try:
        yield server
    finally:
        server.stop()


def _fresh(server: OidcServer) -> Iterator[OidcServer]:
    server.reset_stats()
    try:
        yield server
    finally:
        server.clear_failures()
        server.set_access_token_ttl(3600)


@pytest.fixture(params=["http_server", "https_server"])
def server(request: pytest.FixtureRequest) -> Iterator[OidcServer]:
    yield from _fresh(request.getfixturevalue(request.param))


@pytest.fixture
def tls_server(https_server: OidcServer) -> Iterator[OidcServer]:
    yield from _fresh(https_server)


# -- the client side of the flow, written out with requests --------------------------------


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def authorize_url(
    server: OidcServer,
    *,
    challenge: str | None,
    prompt: str | None = "consent",
    client: OidcClient = APP,
    state: str = "xyz",
) -> str:
    params = {
        "client_id": client.client_id,
        "response_type": "code",
        "redirect_uri": REDIRECT_URI,
        "scope": SCOPE,
        "state": state,
    }
    if challenge is not None:
        params |= {"code_challenge": challenge, "code_challenge_method": "S256"}
    if prompt is not None:
        params["prompt"] = prompt
    return f"{server.endpoint('authorization_endpoint')}?{urlencode(params)}"


def token_request(
    server: OidcServer, data: dict[str, str], client: OidcClient = APP
) -> requests.Response:
    if client.token_endpoint_auth_method == "client_secret_post":
        data = {**data, "client_id": client.client_id, "client_secret": client.client_secret}
        auth = None
    else:
        auth = (client.client_id, client.client_secret)
    with server.http_session() as http:
        return http.post(server.endpoint("token_endpoint"), data=data, auth=auth, timeout=10)


def query(url: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}


def connect(
    server: OidcServer, client: OidcClient = APP, prompt: str | None = "consent"
) -> dict[str, Any]:
    """Authorization code + PKCE S256 from authorize to the token response."""
    verifier, challenge = pkce_pair()
    redirect = server.login_and_consent(
        authorize_url(server, challenge=challenge, prompt=prompt, client=client)
    )
    params = query(redirect)
    assert params["state"] == "xyz"
    assert params["iss"] == server.issuer
    response = token_request(
        server,
        {
            "grant_type": "authorization_code",
            "code": params["code"],
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
        },
        client,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def refresh(server: OidcServer, refresh_token: str) -> requests.Response:
    return token_request(server, {"grant_type": "refresh_token", "refresh_token": refresh_token})


def introspect(server: OidcServer, token: str) -> dict[str, Any]:
    return server.introspect(token, APP.client_id, APP.client_secret)


# -- discovery and the authorization code flow ---------------------------------------------


def test_discovery_issuer_matches_the_mount(server: OidcServer) -> None:
    meta = server.discovery()
    assert meta["issuer"] == server.issuer
    assert meta["token_endpoint"] == f"{server.issuer}/token"
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert {"api.read", "api.write", "offline_access"} <= set(meta["scopes_supported"])
    assert meta["revocation_endpoint"].startswith(server.issuer)
    assert meta["introspection_endpoint"].startswith(server.issuer)


def test_code_flow_with_pkce_and_consent_gives_refresh_token(server: OidcServer) -> None:
    tokens = connect(server)
    assert tokens["token_type"] == "Bearer"
    assert tokens["access_token"]
    assert tokens["refresh_token"]
    assert 0 < tokens["expires_in"] <= 3600
    assert set(tokens["scope"].split()) == {"openid", "offline_access", "api.read"}
    assert server.stats()["grants"] == {"authorization_code": 1, "refresh_token": 0}


def test_client_secret_post_client(server: OidcServer) -> None:
    assert connect(server, client=POST_APP)["refresh_token"]


def test_offline_access_without_prompt_consent_gives_no_refresh_token(
    server: OidcServer,
) -> None:
    tokens = connect(server, prompt=None)
    assert "refresh_token" not in tokens
    assert "offline_access" not in tokens["scope"].split()


def test_authorize_without_pkce_is_refused(server: OidcServer) -> None:
    redirect = server.login_and_consent(authorize_url(server, challenge=None))
    params = query(redirect)
    assert params["error"] == "invalid_request"
    assert "PKCE" in params["error_description"]
    assert "code" not in params


def test_replayed_authorization_code_is_rejected(server: OidcServer) -> None:
    verifier, challenge = pkce_pair()
    code = query(server.login_and_consent(authorize_url(server, challenge=challenge)))["code"]
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": verifier,
    }
    first = token_request(server, data)
    assert first.status_code == 200
    second = token_request(server, data)
    assert second.status_code == 400
    assert second.json()["error"] == "invalid_grant"
    # Replay revokes what the code produced, like refresh token reuse.
    assert introspect(server, first.json()["refresh_token"]) == {"active": False}


# -- refresh token rotation and reuse detection --------------------------------------------


def test_refresh_rotates_the_refresh_token(server: OidcServer) -> None:
    old = connect(server)
    response = refresh(server, old["refresh_token"])
    assert response.status_code == 200, response.text
    new = response.json()
    assert new["refresh_token"] != old["refresh_token"]
    assert new["access_token"] != old["access_token"]
    assert set(new["scope"].split()) == {"openid", "offline_access", "api.read"}
    assert introspect(server, old["refresh_token"]) == {"active": False}
    assert introspect(server, new["refresh_token"])["active"] is True


def test_reusing_a_rotated_refresh_token_kills_the_grant(server: OidcServer) -> None:
    old = connect(server)["refresh_token"]
    new = refresh(server, old).json()["refresh_token"]

    reuse = refresh(server, old)
    assert reuse.status_code == 400
    assert reuse.json()["error"] == "invalid_grant"
    after = refresh(server, new)
    assert after.status_code == 400
    assert after.json()["error"] == "invalid_grant"

    stats = server.stats()
    assert stats["grants"]["refresh_token"] == 1
    assert stats["grant_errors"] == {"invalid_grant": 2}
    assert stats["grants_revoked"] == 1


def test_stats_count_refresh_grants_exactly(server: OidcServer) -> None:
    token = connect(server)["refresh_token"]
    for _ in range(3):
        token = refresh(server, token).json()["refresh_token"]
    assert refresh(server, "not-a-token").status_code == 400
    stats = server.stats()
    assert stats["grants"] == {"authorization_code": 1, "refresh_token": 3}
    assert stats["grant_errors"] == {"invalid_grant": 1}
    server.reset_stats()
    assert server.stats()["grants"] == {"authorization_code": 0, "refresh_token": 0}


# -- revocation and introspection ----------------------------------------------------------


def test_revocation_makes_introspection_inactive(server: OidcServer) -> None:
    tokens = connect(server)
    active = introspect(server, tokens["access_token"])
    assert active["active"] is True
    assert active["client_id"] == APP.client_id
    assert active["sub"] == "alice"
    assert set(active["scope"].split()) == {"openid", "offline_access", "api.read"}

    server.revoke(tokens["refresh_token"], APP.client_id, APP.client_secret, "refresh_token")
    assert introspect(server, tokens["refresh_token"]) == {"active": False}
    # Revoking the refresh token revokes its grant, and so the access tokens too.
    assert introspect(server, tokens["access_token"]) == {"active": False}
    assert refresh(server, tokens["refresh_token"]).json()["error"] == "invalid_grant"
    server.revoke("unknown-token", APP.client_id, APP.client_secret)  # 200 (RFC 7009)
    with pytest.raises(requests.HTTPError, match="401"):
        server.revoke(tokens["access_token"], APP.client_id, "wrong-secret")

    stats = server.stats()
    assert stats["revocations"] == 2
    assert stats["revocation_errors"] == {"invalid_client": 1}
    assert stats["introspections"] == 3


# -- the control API: injected failures and TTLs --------------------------------------------


def test_injected_503_with_retry_after_then_success(server: OidcServer) -> None:
    token = connect(server)["refresh_token"]
    server.fail_next("token", 503, retry_after=7)

    failed = refresh(server, token)
    assert failed.status_code == 503
    assert failed.headers["Retry-After"] == "7"
    assert failed.json()["error"] == "temporarily_unavailable"
    # The failure never reached the provider: the same refresh token still works.
    assert refresh(server, token).status_code == 200

    stats = server.stats()
    assert stats["grants"]["refresh_token"] == 1
    assert stats["injected_failures"] == {"token": 1}


def test_injected_failures_count_and_error_code(server: OidcServer) -> None:
    token = connect(server)["refresh_token"]
    server.fail_next("token", 400, count=2, error="invalid_grant")
    server.fail_next("revocation", 500)
    for _ in range(2):
        response = refresh(server, token)
        assert (response.status_code, response.json()["error"]) == (400, "invalid_grant")
        assert "Retry-After" not in response.headers
    with pytest.raises(requests.HTTPError, match="500"):
        server.revoke(token, APP.client_id, APP.client_secret)
    assert refresh(server, token).status_code == 200


def test_injected_failures_answer_as_entra_with_error_codes(server: OidcServer) -> None:
    """learn.microsoft.com "Microsoft Entra authentication and authorization error codes": the
    AADSTS code leads the description, and error_codes, trace_id, correlation_id follow."""
    token = connect(server)["refresh_token"]
    expired = "The refresh token has expired due to inactivity."
    server.fail_next("token", 400, error="invalid_grant", error_codes=[70008],
                     error_description=expired)  # fmt: skip
    body = refresh(server, token).json()
    assert body["error"] == "invalid_grant"
    assert body["error_codes"] == [70008]
    assert body["error_description"].startswith("AADSTS70008: The refresh token has expired")
    assert "\r\nTrace ID: " in body["error_description"]
    assert {"timestamp", "trace_id", "correlation_id", "error_uri"} <= set(body)
    assert refresh(server, token).status_code == 200


def test_injected_delay_only(server: OidcServer) -> None:
    token = connect(server)["refresh_token"]
    server.fail_next("token", None, delay_ms=300)
    started = time.monotonic()
    assert refresh(server, token).status_code == 200
    assert time.monotonic() - started >= 0.3


def test_access_token_ttl_can_be_shortened(server: OidcServer) -> None:
    token = connect(server)["refresh_token"]
    server.set_access_token_ttl(60)
    tokens = refresh(server, token).json()
    assert 0 < tokens["expires_in"] <= 60
    details = introspect(server, tokens["access_token"])
    assert details["exp"] - details["iat"] <= 60


# -- MSAL Python against the https server --------------------------------------------------


# MSAL recommends response_mode=form_post; the query mode is what our redirect handler reads.
@pytest.mark.filterwarnings("ignore:response_mode='form_post' is recommended:UserWarning")
def test_msal_confidential_client_connects_and_refreshes(tls_server: OidcServer) -> None:
    cache = msal.SerializableTokenCache()
    app = msal.ConfidentialClientApplication(
        APP.client_id,
        client_credential=APP.client_secret,
        oidc_authority=tls_server.issuer,
        http_client=tls_server.http_session(),
        token_cache=cache,
    )
    flow = app.initiate_auth_code_flow(["api.read"], redirect_uri=REDIRECT_URI, prompt="consent")
    redirect = tls_server.login_and_consent(flow["auth_uri"])
    result = app.acquire_token_by_auth_code_flow(flow, dict(parse_qsl(urlsplit(redirect).query)))
    assert "access_token" in result, result
    assert "api.read" in result["scope"]
    first_rt = _cached_refresh_token(cache)

    (account,) = app.get_accounts()
    refreshed = app.acquire_token_silent(["api.read"], account, force_refresh=True)
    assert refreshed is not None
    assert "access_token" in refreshed, refreshed
    assert refreshed["access_token"] != result["access_token"]
    assert _cached_refresh_token(cache) != first_rt  # MSAL kept the rotated one
    assert cache.has_state_changed
    assert tls_server.stats()["grants"] == {"authorization_code": 1, "refresh_token": 1}


def _cached_refresh_token(cache: msal.SerializableTokenCache) -> str:
    (item,) = cache.search(msal.TokenCache.CredentialType.REFRESH_TOKEN)
    secret: str = item["secret"]
    return secret


# -- process lifecycle ---------------------------------------------------------------------


def _alive(pid: int) -> bool:
    """Running, not merely a zombie waiting for its new parent to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in {"Z", "X"}


def test_stop_leaves_no_process(tmp_path: Path) -> None:
    server = OidcServer(state_dir=tmp_path, clients=[APP]).start()
    pid = server.pid
    assert pid is not None
    assert _alive(pid)
    server.stop()
    assert server.last_exit_code == 0  # SIGTERM is a clean shutdown
    assert not _alive(pid)
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)
    assert server.pid is None
    server.stop()  # idempotent


def test_server_dies_with_its_python_parent(tmp_path: Path) -> None:
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from devhost.oidc import OidcServer\n"
        "server = OidcServer(state_dir=Path(sys.argv[1])).start()\n"
        "print(server.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        assert _alive(pid)
        parent.kill()
        parent.wait(timeout=10)
        wait_until(lambda: not _alive(pid), timeout=10, what="node to die with its parent")
    finally:
        parent.kill()
        parent.wait(timeout=10)


def test_demo_server_keeps_its_client_secret(tmp_path: Path) -> None:
    demo = OidcServer.demo(tmp_path, free_port(), REDIRECT_URI)
    (client,) = demo.clients
    assert client.client_id == "keysteward-demo"
    assert OidcServer.demo(tmp_path, free_port(), REDIRECT_URI).clients == [client]
    with demo:
        assert demo.issuer == f"http://127.0.0.1:{demo.port}"
        assert demo.discovery()["issuer"] == demo.issuer
        tokens = connect(demo, client=client)
        assert set(tokens["scope"].split()) == {"openid", "offline_access", "api.read"}
        assert tokens["refresh_token"]
