"""The token endpoint, single-flight refresh across devhost processes, and failure handling,
against a real oidc-provider (rotating refresh tokens with reuse detection), MSAL, and fakes."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from shared.foundation.secret import Secret
from shared.storage.tables.connections import Connection, Status
from shared.trail.events import CONNECTION_NEEDS_REAUTH
from tests.peers.devhost import DevHost
from tests.peers.processes import kill, wait_until
from tests.peers.world import LEASE_SECONDS, SECRETS, World

OIDC_CLIENT = ("oidc-demo-client", SECRETS["OIDC_DEMO_SECRET"])


@pytest.fixture(scope="module")
def more_devhosts(
    world: World, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[DevHost]]:
    directory = tmp_path_factory.mktemp("devhosts")
    hosts = [world.another_devhost(directory / f"devhost-{i}.log") for i in range(2)]
    try:
        yield hosts
    finally:
        for host in hosts:
            host.stop()


def connect(world: World, app: str, user: str, *, access_ttl: int | None = None) -> None:
    if access_ttl is not None:
        server = world.oidc if app == "oidc-demo" else world.entra_op
        server.set_access_token_ttl(access_ttl)
    try:
        response = world.connect(app, user)
    finally:
        if access_ttl is not None:
            server.set_access_token_ttl(3600)
    assert response.status_code == 200, response.text


def refreshes(world: World) -> int:
    return int(world.oidc.stats()["grants"].get("refresh_token", 0))


def active_at_server(world: World, token: str) -> bool:
    return bool(world.oidc.introspect(token, *OIDC_CLIENT).get("active"))


def test_the_endpoint_returns_a_valid_token_and_is_not_cached(world: World) -> None:
    connect(world, "oidc-demo", "t-basic@contoso.com")
    response = world.token("oidc-demo", "t-basic@contoso.com")
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_at", "scope"}
    assert "api.read" in body["scope"].split()
    expires = datetime.fromisoformat(body["expires_at"])
    assert expires - datetime.now(UTC) > timedelta(minutes=5)
    assert response.headers["Cache-Control"] == "no-store"
    assert active_at_server(world, body["access_token"])


def test_unknown_revoked_and_dead_connections(world: World) -> None:
    assert world.token("oidc-demo", "nobody@contoso.com").status_code == 404
    assert world.token("no-such-app", "nobody@contoso.com").status_code == 404
    connect(world, "oidc-demo", "t-revoked@contoso.com")
    connection = world.connection("oidc-demo", "t-revoked@contoso.com")
    connection.status = Status.REVOKED
    world.store.save(connection)
    gone = world.token("oidc-demo", "t-revoked@contoso.com")
    assert gone.status_code == 410
    assert gone.json()["error"] == "gone"
    connect(world, "oidc-demo", "t-dead@contoso.com")
    connection = world.connection("oidc-demo", "t-dead@contoso.com")
    connection.status = Status.NEEDS_REAUTH
    world.store.save(connection)
    dead = world.token("oidc-demo", "t-dead@contoso.com")
    assert dead.status_code == 424
    assert dead.json()["error"] == "needs_reauth"


def test_the_key_must_cover_the_connection(world: World) -> None:
    connect(world, "oidc-demo", "t-glob@contoso.com")
    narrow = world.key(["tokens:read"], ["pagerduty-*/*"])
    url = world.api("connections/oidc-demo/t-glob@contoso.com/token")
    refused = requests.get(url, headers={"Authorization": f"Bearer {narrow}"}, timeout=30)
    assert refused.status_code == 403
    no_scope = world.key(["connections:read"], ["*"])
    refused = requests.get(url, headers={"Authorization": f"Bearer {no_scope}"}, timeout=30)
    assert refused.status_code == 403


def test_force_refresh_rotates_and_stores_the_new_refresh_token_first(world: World) -> None:
    connect(world, "oidc-demo", "t-force@contoso.com")
    before = world.connection("oidc-demo", "t-force@contoso.com")
    assert before.refresh_token is not None
    old_refresh = before.refresh_token.reveal()
    first = world.token("oidc-demo", "t-force@contoso.com").json()["access_token"]
    counted = refreshes(world)
    response = world.token("oidc-demo", "t-force@contoso.com", force_refresh="true")
    assert response.status_code == 200
    assert response.json()["access_token"] != first
    assert refreshes(world) == counted + 1
    after = world.connection("oidc-demo", "t-force@contoso.com")
    assert after.refresh_token is not None
    new_refresh = after.refresh_token.reveal()
    assert new_refresh != old_refresh
    assert active_at_server(world, new_refresh)
    assert not active_at_server(world, old_refresh)  # rotated: only the stored one lives


def test_min_ttl_decides_when_to_refresh(world: World) -> None:
    connect(world, "oidc-demo", "t-ttl@contoso.com")
    counted = refreshes(world)
    assert world.token("oidc-demo", "t-ttl@contoso.com", min_ttl="600").status_code == 200
    assert refreshes(world) == counted
    # Tokens live an hour: asking for two is answered by one fresh refresh, not a storm.
    long = world.token("oidc-demo", "t-ttl@contoso.com", min_ttl="7200")
    assert long.status_code == 200
    assert refreshes(world) == counted + 1
    assert world.token("oidc-demo", "t-ttl@contoso.com", min_ttl="abc").status_code == 400
    assert world.token("oidc-demo", "t-ttl@contoso.com", force_refresh="maybe").status_code == 400


def concurrent_tokens(
    world: World, hosts: list[DevHost], user: str, callers: int
) -> list[requests.Response]:
    barrier = threading.Barrier(callers)

    def call(i: int) -> requests.Response:
        host = hosts[i % len(hosts)]
        barrier.wait()
        return requests.get(host.api(f"connections/oidc-demo/{user}/token"), timeout=60,
                            headers={"Authorization": f"Bearer {world.admin_key}"})  # fmt: skip

    with ThreadPoolExecutor(callers) as pool:
        return list(pool.map(call, range(callers)))


def test_concurrent_requests_across_processes_make_exactly_one_refresh(
    world: World, more_devhosts: list[DevHost]
) -> None:
    # 60-second tokens are always inside the 5-minute margin: every request finds them due.
    connect(world, "oidc-demo", "t-flight@contoso.com", access_ttl=60)
    counted = refreshes(world)
    responses = concurrent_tokens(
        world, [world.devhost, *more_devhosts], "t-flight@contoso.com", 30
    )
    assert [r.status_code for r in responses] == [200] * 30
    tokens = {r.json()["access_token"] for r in responses}
    assert len(tokens) == 1
    # One refresh at the server; a second would have tripped reuse detection and killed the grant.
    assert refreshes(world) == counted + 1
    assert active_at_server(world, tokens.pop())
    assert world.connection("oidc-demo", "t-flight@contoso.com").status == Status.ACTIVE


def test_fifty_callers_with_short_lived_tokens_cause_no_refresh_storm(world: World) -> None:
    connect(world, "oidc-demo", "t-storm@contoso.com", access_ttl=60)
    counted = refreshes(world)
    responses = concurrent_tokens(world, [world.devhost], "t-storm@contoso.com", 50)
    assert [r.status_code for r in responses] == [200] * 50
    assert len({r.json()["access_token"] for r in responses}) == 1
    assert refreshes(world) == counted + 1


def test_a_holder_killed_mid_refresh_blocks_no_longer_than_the_lease(
    world: World, tmp_path: Path
) -> None:
    connect(world, "oidc-demo", "t-crash@contoso.com", access_ttl=60)
    victim = world.another_devhost(tmp_path / "victim.log")
    try:
        # The provider holds the victim's refresh long enough to kill it mid-call.
        world.oidc.fail_next("token", 503, delay_ms=20_000)

        def doomed() -> None:
            with contextlib.suppress(requests.ConnectionError):  # its server dies under it
                world.token("oidc-demo", "t-crash@contoso.com", host=victim)

        threading.Thread(target=doomed, daemon=True).start()
        wait_until(lambda: world.connection("oidc-demo", "t-crash@contoso.com").lease_owner,
                   what="the victim to take the lease")  # fmt: skip
        held = world.connection("oidc-demo", "t-crash@contoso.com")
        assert victim.proc is not None
        kill(victim.proc)
    finally:
        victim.stop()
    world.oidc.clear_failures()
    started = time.monotonic()
    response = world.token("oidc-demo", "t-crash@contoso.com")
    waited = time.monotonic() - started
    assert response.status_code == 200, response.text
    assert held.lease_expires_at is not None
    assert datetime.now(UTC) >= held.lease_expires_at  # it waited for the lease, not around it
    assert waited <= LEASE_SECONDS + 5
    assert world.connection("oidc-demo", "t-crash@contoso.com").status == Status.ACTIVE


def test_entra_connections_refresh_through_msal(world: World) -> None:
    connect(world, "entra-demo", "t-entra@contoso.com")
    before = world.connection("entra-demo", "t-entra@contoso.com")
    counted = int(world.entra_op.stats()["grants"].get("refresh_token", 0))
    response = world.token("entra-demo", "t-entra@contoso.com", force_refresh="true")
    assert response.status_code == 200, response.text
    assert int(world.entra_op.stats()["grants"].get("refresh_token", 0)) == counted + 1
    after = world.connection("entra-demo", "t-entra@contoso.com")
    assert before.msal_cache is not None
    assert after.msal_cache is not None
    assert after.msal_cache.reveal() != before.msal_cache.reveal()  # MSAL's cache was written back
    assert after.msal_account == before.msal_account


def test_a_response_without_a_refresh_token_keeps_the_old_one(world: World) -> None:
    connect(world, "pagerduty-incidents", "t-keep@contoso.com")
    before = world.connection("pagerduty-incidents", "t-keep@contoso.com")
    assert before.refresh_token is not None
    world.pagerduty.fail_next("/oauth/token", 200, body={
        "access_token": "pdus+_0_no_refresh_token_in_this_answer", "token_type": "bearer",
        "expires_in": 86400, "scope": "openid incidents.read services.read",
    })  # fmt: skip
    response = world.token("pagerduty-incidents", "t-keep@contoso.com", force_refresh="true")
    assert response.status_code == 200, response.text
    assert response.json()["access_token"] == "pdus+_0_no_refresh_token_in_this_answer"
    after = world.connection("pagerduty-incidents", "t-keep@contoso.com")
    assert after.refresh_token is not None
    assert after.refresh_token.reveal() == before.refresh_token.reveal()


@pytest.mark.parametrize(
    ("app", "error"),
    [("oidc-demo", "invalid_grant"), ("oidc-demo", "consent_required"),
     ("entra-demo", "invalid_grant")],
)  # fmt: skip
def test_a_dead_grant_needs_reauth_once(world: World, app: str, error: str) -> None:
    user = f"t-dead-{error}-{app}@contoso.com"
    connect(world, app, user)
    server = world.oidc if app == "oidc-demo" else world.entra_op
    server.fail_next("token", 400, error=error)
    responses = [world.token(app, user, force_refresh="true") for _ in range(2)]
    assert [r.status_code for r in responses] == [424, 424]
    assert responses[0].json()["error"] == "needs_reauth"
    connection = world.connection(app, user)
    assert connection.status == Status.NEEDS_REAUTH
    assert connection.last_error == error
    events = world.events(f"{app}/{user}", CONNECTION_NEEDS_REAUTH)
    assert len(events) == 1
    assert events[0]["data"]["error"] == error
    assert [e.outcome for e in world.audit(f"{app}/{user}", "connection.needs_reauth")] == [
        "failure"
    ]


def test_a_connection_without_a_refresh_token_is_a_dead_grant(world: World) -> None:
    """Nothing can refresh it: 424 and needs_reauth once, not a transient failure retried."""
    app, user = "oidc-demo", "t-no-refresh@contoso.com"
    connect(world, app, user)
    connection = world.connection(app, user)
    connection.refresh_token = None
    world.store.save(connection)
    responses = [world.token(app, user, force_refresh="true") for _ in range(2)]
    assert [r.status_code for r in responses] == [424, 424]
    assert responses[0].json()["error"] == "needs_reauth"
    assert world.connection(app, user).status == Status.NEEDS_REAUTH
    assert len(world.events(f"{app}/{user}", CONNECTION_NEEDS_REAUTH)) == 1


@pytest.mark.parametrize(("status", "retry_after"), [(503, 120), (429, 90), (500, None)])
def test_a_transient_failure_keeps_the_connection_and_backs_off(
    world: World, status: int, retry_after: int | None
) -> None:
    user = f"t-transient-{status}@contoso.com"
    connect(world, "oidc-demo", user)
    world.oidc.fail_next("token", status, retry_after=retry_after)
    # A forced refresh that fails says so (never the old token as if refreshed)...
    forced = world.token("oidc-demo", user, force_refresh="true", min_ttl="60")
    assert forced.status_code == 503, forced.text
    assert "last error: provider_unavailable: " in forced.json()["message"]
    # ... and the stored token, which still lives an hour, answers whoever does not force.
    served = world.token("oidc-demo", user, min_ttl="60")
    assert served.status_code == 200, served.text
    connection = world.connection("oidc-demo", user)
    assert connection.status == Status.ACTIVE
    assert connection.refresh_failures == 1
    assert connection.last_error is not None
    assert connection.next_attempt_at is not None
    delay = (connection.next_attempt_at - datetime.now(UTC)).total_seconds()
    assert delay >= (retry_after or 0) - 5
    assert delay > 0
    counted = world.oidc.stats()["injected_failures"].get("token", 0)
    # Asking for more than the stored token has: 503 with Retry-After, and no call upstream.
    refused = world.token("oidc-demo", user, min_ttl="7200")
    assert refused.status_code == 503
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.json()["error"] == "refresh_unavailable"
    assert world.oidc.stats()["injected_failures"].get("token", 0) == counted


def test_a_provider_that_times_out_is_a_transient_failure(world: World) -> None:
    connect(world, "pagerduty-incidents", "t-timeout@contoso.com")
    world.pagerduty.fail_next("/oauth/token", None, delay=8.0)  # longer than the timeout
    response = world.token("pagerduty-incidents", "t-timeout@contoso.com",
                           force_refresh="true", min_ttl="60")  # fmt: skip
    assert response.status_code == 503
    assert "last error: provider_unavailable" in response.json()["message"]
    connection = world.connection("pagerduty-incidents", "t-timeout@contoso.com")
    assert connection.status == Status.ACTIVE
    assert connection.refresh_failures == 1
    assert "provider_unavailable" in (connection.last_error or "")


def test_a_refused_connection_is_a_transient_failure(world: World) -> None:
    user = "t-refused@contoso.com"
    now = datetime.now(UTC)
    world.store.save(Connection(
        app="pagerduty-down", user_id=user, provider="pagerduty", status=Status.ACTIVE,
        scopes=["incidents.read"], created_at=now, updated_at=now, connected_at=now,
        redirect_uri="https://k/cb", access_token=Secret("pdus+_0_still_good"),
        access_expires_at=now + timedelta(hours=1), refresh_token=Secret("pdus+_1_rt"),
    ))  # fmt: skip
    forced = world.token("pagerduty-down", user, force_refresh="true", min_ttl="60")
    assert forced.status_code == 503
    served = world.token("pagerduty-down", user, min_ttl="60")
    assert served.status_code == 200
    assert served.json()["access_token"] == "pdus+_0_still_good"
    connection = world.connection("pagerduty-down", user)
    assert connection.status == Status.ACTIVE
    assert connection.refresh_failures == 1
    refused = world.token("pagerduty-down", user, min_ttl="7200")
    assert refused.status_code == 503
    assert "Retry-After" in refused.headers


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        ({"error": "invalid_grant", "error_codes": [700082]}, "GrantInvalid"),
        ({"error": "invalid_request", "error_codes": [70008]}, "GrantInvalid"),
        ({"error": "invalid_grant", "error_codes": [50173]}, "GrantInvalid"),
        ({"error": "interaction_required", "error_codes": [50076]}, "GrantInvalid"),
        ({"error": "temporarily_unavailable", "error_codes": []}, "ProviderUnavailable"),
        ({"error": "invalid_client", "error_codes": [7000222]}, "ClientInvalid"),
        ({"error": "invalid_request", "error_codes": [90014]}, "RefusalUnrecognised"),
    ],
)
def test_msal_error_data_is_classified(result: dict[str, object], expected: str) -> None:
    """What MSAL returns for Entra's AADSTS errors (providers.md §3) decides the class."""
    from shared.providers.drivers.entra import _classify

    assert type(_classify(result)).__name__ == expected


@pytest.mark.parametrize("value", ["²", "-1", "1.5", "x"])
def test_min_ttl_must_be_ascii_digits(world: World, value: str) -> None:
    assert world.token("oidc-demo", "t-basic@contoso.com", min_ttl=value).status_code == 400


@pytest.mark.parametrize(
    ("app", "written"),
    [("ado-legacy", "jwt-bearer"), ("pagerduty-incidents", "bearer"), ("oidc-demo", "Bearer")],
)
def test_callers_always_get_bearer_and_the_metadata_keeps_what_was_written(
    world: World, app: str, written: str
) -> None:
    # Legacy Azure DevOps writes jwt-bearer and PagerDuty bearer (providers.md §8); all three
    # are sent as Authorization: Bearer, which is what RFC 6750 names "Bearer".
    user = f"token-type-{app}@contoso.com"
    connect(world, app, user)
    response = world.token(app, user)
    assert response.status_code == 200, response.text
    assert response.json()["token_type"] == "Bearer"
    metadata = world.call("GET", f"connections/{app}/{user}").json()
    assert metadata["provider_token_type"] == written
