"""No refresh storms, and a way to say a token was refused (issue 14, points 4 and 5): at most
one refresh per connection per cooldown through the token endpoint, ``force_refresh`` and
rejection reports together; a forced refresh that cannot happen is a 503, never the old token as
if refreshed; ``POST .../token/rejected`` refreshes the current token once and answers the
current one for a token already replaced or never served. Against a real oidc-provider."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import requests

from shared.storage.tables.connections import Status
from tests.peers.world import World

APP = "oidc-demo"


def refreshes(world: World) -> int:
    return int(world.oidc.stats()["grants"].get("refresh_token", 0))


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def connected(world: World, user: str) -> str:
    assert world.connect(APP, user).status_code == 200
    response = world.token(APP, user)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def reject(world: World, user: str, token_sha256: str, key: str | None = None) -> requests.Response:
    return world.call("POST", f"connections/{APP}/{user}/token/rejected", key=key,
                      json={"access_token_sha256": token_sha256})  # fmt: skip


def test_a_min_ttl_longer_than_the_tokens_refreshes_once_per_cooldown(world: World) -> None:
    # oidc-provider's tokens live an hour; asking two hours used to refresh on every call.
    user = "storm-ttl@contoso.com"
    connected(world, user)
    before = refreshes(world)
    answers = [world.token(APP, user, min_ttl="7200") for _ in range(6)]
    assert [a.status_code for a in answers] == [200] * 6
    assert refreshes(world) - before == 1
    assert len({a.json()["access_token"] for a in answers}) == 1
    # The answer says how long the token really lives: less than asked.
    expires = datetime.fromisoformat(answers[-1].json()["expires_at"])
    assert expires - datetime.now(UTC) < timedelta(seconds=7200)


def test_forced_refreshes_in_a_burst_make_one_refresh(world: World) -> None:
    user = "storm-force@contoso.com"
    first = connected(world, user)
    before = refreshes(world)
    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda _: world.token(APP, user, force_refresh="true"), range(10)))
    answers += [world.token(APP, user, force_refresh="true") for _ in range(20)]
    assert [a.status_code for a in answers] == [200] * 30
    assert refreshes(world) - before == 1
    tokens = {a.json()["access_token"] for a in answers}
    assert len(tokens) == 1
    assert first not in tokens


def test_a_forced_refresh_that_fails_is_a_503_not_the_old_token(world: World) -> None:
    user = "storm-fail@contoso.com"
    connected(world, user)
    world.oidc.fail_next("token", 503, retry_after=60)
    failed = world.token(APP, user, force_refresh="true")
    assert failed.status_code == 503, failed.text
    assert int(failed.headers["Retry-After"]) >= 59
    assert failed.json()["error"] == "refresh_unavailable"
    assert "last error: provider_unavailable: temporarily_unavailable" in failed.json()["message"]
    # Backing off now: forced again, no call upstream, the same clear answer.
    injected = world.oidc.stats()["injected_failures"].get("token", 0)
    again = world.token(APP, user, force_refresh="true")
    assert again.status_code == 503
    assert "temporarily_unavailable" in again.json()["message"]
    assert world.oidc.stats()["injected_failures"].get("token", 0) == injected
    # A caller who does not force still gets the stored token, which lives long enough.
    assert world.token(APP, user).status_code == 200


def test_a_rejected_current_token_is_refreshed_once(world: World) -> None:
    user = "rejected-current@contoso.com"
    refused = connected(world, user)
    before = refreshes(world)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: reject(world, user, sha(refused)), range(8)))
    assert [a.status_code for a in answers] == [200] * 8, answers[0].text
    assert refreshes(world) - before == 1
    fresh = {a.json()["access_token"] for a in answers}
    assert len(fresh) == 1
    assert refused not in fresh
    assert set(answers[0].json()) == {"access_token", "token_type", "expires_at", "scope"}
    # The old token again (a slow caller), or one Keysteward never served: the current one.
    late = reject(world, user, sha(refused).upper())
    unknown = reject(world, user, sha("never-served"))
    assert late.json()["access_token"] == unknown.json()["access_token"] == fresh.pop()
    assert refreshes(world) - before == 1
    rows = world.audit(f"{APP}/{user}", "token.rejected")
    assert sorted(bool(r.detail["current"]) for r in rows) == [False, False] + [True] * 8


def test_the_new_token_refused_within_the_cooldown_is_not_refreshed_again(world: World) -> None:
    user = "rejected-twice@contoso.com"
    first = connected(world, user)
    second = reject(world, user, sha(first)).json()["access_token"]
    before = refreshes(world)
    again = reject(world, user, sha(second))
    # As the issue asks: within the cooldown the token just refreshed answers, and says when it
    # expires; the provider is not asked again.
    assert again.status_code == 200, again.text
    assert again.json()["access_token"] == second
    assert datetime.fromisoformat(again.json()["expires_at"]) > datetime.now(UTC)
    assert refreshes(world) == before
    rows = world.audit(f"{APP}/{user}", "token.rejected")
    assert [r.detail["replaced"] for r in rows if r.detail["current"]].count(False) == 1


def test_a_refused_refresh_after_a_rejection_is_needs_reauth(world: World) -> None:
    # The legacy Azure DevOps case: the user revoked the app, calls fail with 401, and the
    # refresh is refused too. Keysteward now knows.
    user = "rejected-dead@contoso.com"
    refused = connected(world, user)
    world.oidc.fail_next("token", 400, error="invalid_grant")
    answer = reject(world, user, sha(refused))
    assert answer.status_code == 424, answer.text
    assert answer.json()["error"] == "needs_reauth"
    assert world.connection(APP, user).status == Status.NEEDS_REAUTH


def test_a_rejection_is_checked_like_a_token_request(world: World) -> None:
    user = "rejected-guarded@contoso.com"
    token = connected(world, user)
    other = world.key(["tokens:read"], [f"{APP}/someone-else@contoso.com"])
    assert reject(world, user, sha(token), key=other).status_code == 403
    no_scope = world.key(["connections:read"], [f"{APP}/*"])
    assert reject(world, user, sha(token), key=no_scope).status_code == 403
    # The token itself instead of its hash: refused, and never echoed.
    sent_token = reject(world, user, token)
    assert sent_token.status_code == 400
    assert token not in sent_token.text
    extra = world.call("POST", f"connections/{APP}/{user}/token/rejected",
                       json={"access_token_sha256": sha(token), "access_token": token})  # fmt: skip
    assert extra.status_code == 400
    assert token not in extra.text
    assert reject(world, "nobody@contoso.com", sha(token)).status_code == 404
