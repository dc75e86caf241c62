"""Scoped API keys over real HTTP through devhost: who gets 401 or 403 on which endpoint, the
``/api/keys`` management endpoints, bad input, and the audit trail of key actions.

Expectations are computed from the rules (401 for a dead key, then 403 for a missing scope, then
403 for a resource outside the globs) with a matcher written here, not the product's.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any

import pytest
import requests

from shared.access import api_keys as apikeys
from shared.access import key_requests
from shared.access.api_keys import ApiKeys, parse
from shared.access.key_requests import NewKey
from shared.foundation.clock import FixedClock
from shared.trail.audit import AuditLog
from tests.peers.world import World

USER = "matrix@contoso.com"
OTHER = "other@contoso.com"
PD = "pagerduty-incidents"
OIDC = "oidc-demo"

# --- helpers ---------------------------------------------------------------------------------


def call(world: World, method: str, path: str, key: str | None, **kwargs: Any) -> requests.Response:
    """A request with ``Authorization: Bearer <key>``, or with no Authorization header at all.

    ``Connection: close``: devhost writes a response's headers and body separately, which costs a
    kept-alive connection ~40 ms (Nagle's algorithm meets delayed ACKs); a fresh one costs ~2 ms.
    """
    headers = {"Authorization": f"Bearer {key}" if key is not None else None, "Connection": "close"}
    headers.update(kwargs.pop("headers", {}))
    return world.call(method, path, headers=headers, **kwargs)


def admin(world: World, method: str, path: str, **kwargs: Any) -> requests.Response:
    return call(world, method, path, world.admin_key, **kwargs)


def new_key(
    world: World, scopes: list[str], resources: list[str], name: str = "t"
) -> tuple[str, str]:
    """(id, raw key) of a fresh key."""
    key, raw = world.keys.create(
        NewKey(name=name, scopes=scopes, resources=resources), actor="test"
    )
    return key.id, raw


def expired_key(world: World, scopes: list[str], resources: list[str]) -> str:
    """A key created two days ago for one day."""
    past = FixedClock(datetime.now(UTC) - timedelta(days=2))
    keys = ApiKeys(world.store, AuditLog(world.store, past), past)
    request = NewKey(name="expired", scopes=scopes, resources=resources, expires_in_days=1)
    return keys.create(request, actor="test")[1]


def key_ids(world: World) -> set[str]:
    response = admin(world, "GET", "keys")
    assert response.status_code == 200, response.text
    return {k["id"] for k in response.json()["keys"]}


def secret_of(raw: str) -> str:
    parsed = parse(raw)
    assert parsed is not None
    return parsed[1]


def id_of(raw: str) -> str:
    parsed = parse(raw)
    assert parsed is not None
    return parsed[0]


def covers(glob: str, app: str, user: str) -> bool:
    """The documented glob rule, independently: '*' or '<app glob>/<user glob>'."""
    if glob == "*":
        return True
    app_glob, _, user_glob = glob.partition("/")
    return fnmatchcase(app, app_glob) and fnmatchcase(user, user_glob)


@pytest.fixture(scope="module")
def unauthorized(world: World) -> dict[str, str]:
    """The one 401 body, as answered to a call without a key."""
    response = call(world, "GET", "keys", None)
    assert response.status_code == 401
    body = response.json()
    assert set(body) == {"error", "message"}
    assert body["error"] == "unauthorized"
    assert "API key" in body["message"]
    return dict(body)


@pytest.fixture(scope="module")
def connections(world: World) -> None:
    for app in (PD, OIDC):
        response = world.connect(app, USER)
        assert response.status_code == 200, response.text


# --- the matrix ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    name: str
    method: str
    path: str
    scope: str
    ok: int
    resource: tuple[str, str] | None = None
    body: dict[str, str] | None = None

    def send(self, world: World, key: str) -> requests.Response:
        return call(world, self.method, self.path, key, json=self.body)


PROBES = (
    Probe("list-keys", "GET", "keys", "keys:admin", 200),
    Probe("read-audit", "GET", "audit?limit=1", "audit:read", 200),
    Probe("read-pd", "GET", f"connections/{PD}/{USER}", "connections:read", 200, (PD, USER)),
    Probe("read-oidc", "GET", f"connections/{OIDC}/{USER}", "connections:read", 200, (OIDC, USER)),
    # No such connection: 404 when the key may look, 403 (not 404) when it may not.
    Probe("read-missing", "GET", f"connections/{OIDC}/{OTHER}", "connections:read", 404,
          (OIDC, OTHER)),
    Probe("link-pd", "POST", "connect-sessions", "connections:write", 201, (PD, USER),
          {"app": PD, "user_id": USER}),
    Probe("link-oidc-other", "POST", "connect-sessions", "connections:write", 201, (OIDC, OTHER),
          {"app": OIDC, "user_id": OTHER}),
)  # fmt: skip
SCOPES = ("keys:admin", "audit:read", "connections:read", "connections:write", "tokens:read")
GLOBS = ("*", "pagerduty-*/*", f"*/{USER}", f"{OIDC}/{OTHER}")
STATES = ("valid", "expired", "deleted", "regenerated-old", "regenerated-new")
DEAD = {"expired", "deleted", "regenerated-old"}
Cell = tuple[str, str, str]  # (state, scope, glob)
CELLS: list[Cell] = list(itertools.product(STATES, SCOPES, GLOBS))


def expected(probe: Probe, state: str, scope: str, glob: str) -> str:
    if state in DEAD:
        return "401"
    if scope != probe.scope:
        return "403 scope"
    if probe.resource and not covers(glob, *probe.resource):
        return "403 resources"
    return str(probe.ok)


def outcome(response: requests.Response, probe: Probe, unauthorized: dict[str, str]) -> str:
    """The status, and for 401/403 whether the body is the right one: a short comparable text."""
    status = response.status_code
    if status not in (401, 403):
        return str(status)
    body = response.json()
    if status == 401:
        return "401" if body == unauthorized else f"401 {body}"
    message = body.get("message", "") if set(body) == {"error", "message"} else ""
    if body.get("error") == "forbidden" and f"scope '{probe.scope}'" in message:
        return "403 scope"
    resource = "/".join(probe.resource or ())
    if (
        body.get("error") == "forbidden"
        and resource
        and f"resources do not cover '{resource}'" in message
    ):
        return "403 resources"
    return f"403 {body}"


@pytest.fixture(scope="module")
def matrix_keys(world: World, connections: None) -> dict[Cell, str]:
    """A raw key per cell. Deleted and regenerated keys are used over HTTP first (so devhost has
    them cached), then deleted or regenerated over HTTP: the old secret must fail at once."""
    raws: dict[Cell, str] = {}
    for scope, glob in itertools.product(SCOPES, GLOBS):
        raws["valid", scope, glob] = new_key(world, [scope], [glob])[1]
        raws["expired", scope, glob] = expired_key(world, [scope], [glob])
        deleted_id, deleted = new_key(world, [scope], [glob])
        regenerated_id, old = new_key(world, [scope], [glob])
        for raw in (deleted, old):
            assert call(world, "GET", "keys", raw).status_code in (200, 403)  # verified, cached
        assert admin(world, "DELETE", f"keys/{deleted_id}").status_code == 204
        response = admin(world, "POST", f"keys/{regenerated_id}/regenerate")
        assert response.status_code == 200, response.text
        raws["deleted", scope, glob] = deleted
        raws["regenerated-old", scope, glob] = old
        raws["regenerated-new", scope, glob] = response.json()["key"]
    return raws


@pytest.mark.parametrize("cell", CELLS, ids=[f"{st}-{sc}-on-{gl}" for st, sc, gl in CELLS])
def test_matrix_of_scopes_globs_and_key_states(
    world: World, matrix_keys: dict[Cell, str], unauthorized: dict[str, str], cell: Cell
) -> None:
    raw = matrix_keys[cell]
    actual = {p.name: outcome(p.send(world, raw), p, unauthorized) for p in PROBES}
    assert actual == {p.name: expected(p, *cell) for p in PROBES}


def test_the_matrix_reaches_every_outcome() -> None:
    seen = {
        expected(p, *cell) for p in PROBES for cell in CELLS
    }  # guards the matrix itself against silently testing only one branch
    assert seen == {"200", "201", "404", "401", "403 scope", "403 resources"}


# --- 401 and 403 -----------------------------------------------------------------------------


def _tampered(world: World) -> str:
    raw = new_key(world, ["keys:admin"], ["*"])[1]
    return raw[:-1] + ("A" if raw[-1] != "A" else "B")


def _wrong_secret(world: World) -> str:
    key_id = new_key(world, ["keys:admin"], ["*"])[0]
    return apikeys._format(key_id, "y" * 43)


def _deleted(world: World) -> str:
    key_id, raw = new_key(world, ["keys:admin"], ["*"])
    assert call(world, "GET", "keys", raw).status_code == 200
    assert admin(world, "DELETE", f"keys/{key_id}").status_code == 204
    return raw


def _regenerated_away(world: World) -> str:
    key_id, raw = new_key(world, ["keys:admin"], ["*"])
    assert call(world, "GET", "keys", raw).status_code == 200
    assert admin(world, "POST", f"keys/{key_id}/regenerate").status_code == 200
    return raw


HEADERS: dict[str, Callable[[World], str | None]] = {
    "missing": lambda w: None,
    "empty": lambda w: "",
    "bearer-without-key": lambda w: "Bearer",
    "basic-scheme": lambda w: f"Basic {new_key(w, ['keys:admin'], ['*'])[1]}",
    "key-without-scheme": lambda w: new_key(w, ["keys:admin"], ["*"])[1],
    "malformed": lambda w: "Bearer not-a-key",
    "prefix-only": lambda w: "Bearer ks_",
    "wrong-checksum": lambda w: f"Bearer {_tampered(w)}",
    "unknown-id": lambda w: f"Bearer {apikeys._format('abcdefghijkl', 'x' * 43)}",
    "wrong-secret": lambda w: f"Bearer {_wrong_secret(w)}",
    "expired": lambda w: f"Bearer {expired_key(w, ['keys:admin'], ['*'])}",
    "deleted": lambda w: f"Bearer {_deleted(w)}",
    "regenerated-away": lambda w: f"Bearer {_regenerated_away(w)}",
}


@pytest.mark.parametrize("cause", HEADERS)
def test_every_401_cause_gets_the_same_body(
    world: World, unauthorized: dict[str, str], cause: str
) -> None:
    for path in ("keys", f"connections/{PD}/{USER}"):
        response = call(world, "GET", path, None, headers={"Authorization": HEADERS[cause](world)})
        assert response.status_code == 401
        assert response.json() == unauthorized  # never says which part of the key was wrong
        assert response.headers["Content-Type"].startswith("application/json")


KEY_ENDPOINTS = (
    ("GET", "keys"),
    ("POST", "keys"),
    ("GET", "keys/abcdefghijkl"),
    ("POST", "keys/abcdefghijkl/regenerate"),
    ("PATCH", "keys/abcdefghijkl"),
    ("DELETE", "keys/abcdefghijkl"),
)


@pytest.mark.parametrize(
    ("method", "path"), KEY_ENDPOINTS, ids=[" ".join(e) for e in KEY_ENDPOINTS]
)
def test_every_key_endpoint_needs_keys_admin(
    world: World, unauthorized: dict[str, str], method: str, path: str
) -> None:
    everything_but_admin = [s for s in key_requests.SCOPES if s != "keys:admin"]
    raw = new_key(world, everything_but_admin, ["*"])[1]
    body = {"name": "x", "scopes": ["tokens:read"], "resources": ["*"], "expires_in_days": 1}
    response = call(world, method, path, raw, json=body)
    assert response.status_code == 403
    assert response.json() == {
        "error": "forbidden",
        "message": "this API key does not have the scope 'keys:admin'",
    }
    response = call(world, method, path, None, json=body)
    assert (response.status_code, response.json()) == (401, unauthorized)


def test_a_valid_key_outside_its_globs_is_403_about_resources(
    world: World, connections: None
) -> None:
    raw = new_key(world, ["connections:read"], [f"{OIDC}/*", f"*/{OTHER}"])[1]
    response = call(world, "GET", f"connections/{PD}/{USER}", raw)
    assert response.status_code == 403
    body = response.json()
    assert body["error"] == "forbidden"
    assert "resources" in body["message"]
    assert f"{PD}/{USER}" in body["message"]
    assert call(world, "GET", f"connections/{OIDC}/{USER}", raw).status_code == 200


@pytest.mark.parametrize("glob", [*GLOBS, f"{OIDC}/*"])
def test_listing_connections_shows_only_those_within_the_globs(
    world: World, connections: None, glob: str
) -> None:
    everything = admin(world, "GET", "connections").json()["connections"]
    raw = new_key(world, ["connections:read"], [glob])[1]
    response = call(world, "GET", "connections", raw)
    assert response.status_code == 200
    listed = {(c["app"], c["user_id"]) for c in response.json()["connections"]}
    assert listed == {
        (c["app"], c["user_id"]) for c in everything if covers(glob, c["app"], c["user_id"])
    }
    mine = {(a, USER) for a in (PD, OIDC) if covers(glob, a, USER)}
    assert mine <= listed
    for app in (PD, OIDC):  # the filters narrow within the globs; never widen past them
        filtered = call(world, "GET", f"connections?app={app}&user_id={USER}", raw).json()
        assert [(c["app"], c["user_id"]) for c in filtered["connections"]] == (
            [(app, USER)] if covers(glob, app, USER) else []
        )


# --- managing keys over HTTP -----------------------------------------------------------------


def test_create_returns_the_key_once_and_it_works_at_once(world: World) -> None:
    before = datetime.now(UTC)
    response = admin(
        world,
        "POST",
        "keys",
        json={
            "name": "deploy bot",
            "owner": "platform team",
            "scopes": ["connections:read", "audit:read"],
            "resources": ["pagerduty-*/*", f"*/{USER}"],
            "expires_in_days": 30,
        },
    )
    after = datetime.now(UTC)
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["name"] == "deploy bot"
    assert created["owner"] == "platform team"
    assert created["scopes"] == ["connections:read", "audit:read"]
    assert created["resources"] == ["pagerduty-*/*", f"*/{USER}"]
    expires = datetime.fromisoformat(created["expires_at"])
    assert before + timedelta(days=30) <= expires <= after + timedelta(days=30)
    assert parse(created["key"]) == (created["id"], secret_of(created["key"]))
    assert "secret_hash" not in created

    assert call(world, "GET", "audit?limit=1", created["key"]).status_code == 200
    assert call(world, "GET", "keys", created["key"]).status_code == 403

    shown = admin(world, "GET", f"keys/{created['id']}")
    assert shown.status_code == 200
    public = {k: v for k, v in created.items() if k not in ("key", "last_used_at")}
    assert {k: v for k, v in shown.json().items() if k != "last_used_at"} == public
    assert "key" not in shown.json()
    assert secret_of(created["key"]) not in shown.text


def test_list_shows_keys_without_secrets_or_hashes(world: World) -> None:
    raws = [
        admin(
            world,
            "POST",
            "keys",
            json={"name": f"listed {n}", "scopes": ["tokens:read"], "resources": ["*"],
                  "expires_in_days": 7},
        ).json()["key"]
        for n in range(3)
    ]  # fmt: skip
    response = admin(world, "GET", "keys")
    assert response.status_code == 200
    keys = response.json()["keys"]
    assert {id_of(raw) for raw in raws} <= {k["id"] for k in keys}
    for key in keys:
        assert {"id", "name", "scopes", "resources", "expires_at"} <= set(key)
        assert "key" not in key
        assert "secret_hash" not in key
    assert "secret_hash" not in response.text
    for raw in raws:
        assert secret_of(raw) not in response.text
    assert secret_of(world.admin_key) not in response.text


def test_regenerate_keeps_scopes_globs_and_expiry_and_kills_the_old_secret(
    world: World, unauthorized: dict[str, str]
) -> None:
    created = admin(
        world,
        "POST",
        "keys",
        json={"name": "rotating", "scopes": ["connections:read"], "resources": [f"{PD}/*"],
              "expires_in_days": 10},
    ).json()  # fmt: skip
    old = created["key"]
    assert call(world, "GET", "connections", old).status_code == 200  # now cached by devhost
    response = admin(world, "POST", f"keys/{created['id']}/regenerate")
    assert response.status_code == 200, response.text
    again = response.json()
    new = again["key"]
    assert new != old
    assert secret_of(new) != secret_of(old)
    assert (again["id"], again["scopes"], again["resources"], again["expires_at"]) == (
        created["id"], created["scopes"], created["resources"], created["expires_at"],
    )  # fmt: skip
    assert again["regenerated_at"] is not None
    old_call = call(world, "GET", "connections", old)
    assert (old_call.status_code, old_call.json()) == (401, unauthorized)
    assert call(world, "GET", "connections", new).status_code == 200
    shown = admin(world, "GET", f"keys/{created['id']}").json()
    assert "key" not in shown
    assert secret_of(new) not in str(shown)


def test_update_changes_name_and_globs_at_once_but_refuses_scopes(
    world: World, connections: None
) -> None:
    key_id, raw = new_key(world, ["connections:read"], [f"{OIDC}/*"], name="before")
    assert call(world, "GET", f"connections/{PD}/{USER}", raw).status_code == 403  # cached
    response = admin(
        world, "PATCH", f"keys/{key_id}", json={"name": "after", "resources": ["pagerduty-*/*"]}
    )
    assert response.status_code == 200, response.text
    assert (response.json()["name"], response.json()["resources"]) == ("after", ["pagerduty-*/*"])
    assert "key" not in response.json()
    assert call(world, "GET", f"connections/{PD}/{USER}", raw).status_code == 200
    assert call(world, "GET", f"connections/{OIDC}/{USER}", raw).status_code == 403

    refused = admin(
        world, "PATCH", f"keys/{key_id}", json={"name": "sneaky", "scopes": ["keys:admin"]}
    )
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_request"
    assert "scopes of a key cannot be changed" in refused.json()["message"]
    shown = admin(world, "GET", f"keys/{key_id}").json()
    assert (shown["name"], shown["scopes"]) == ("after", ["connections:read"])
    assert call(world, "GET", "keys", raw).status_code == 403


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"expires_in_days": 365}, "only 'name' and 'resources'"),
        ({}, "nothing to change"),
        ({"resources": ["no-slash"]}, "malformed resource glob"),
        ({"resources": []}, "resources"),
        ({"name": "x" * 101}, "name"),
        ({"name": ""}, "name"),
    ],
    ids=["expiry", "empty", "malformed-glob", "no-globs", "oversized-name", "empty-name"],
)
def test_update_refuses_bad_changes(world: World, body: dict[str, Any], message: str) -> None:
    key_id = new_key(world, ["tokens:read"], ["*"], name="unchanged")[0]
    response = admin(world, "PATCH", f"keys/{key_id}", json=body)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert message in response.json()["message"]
    shown = admin(world, "GET", f"keys/{key_id}").json()
    assert (shown["name"], shown["resources"]) == ("unchanged", ["*"])


def test_update_refuses_a_body_that_is_not_json(world: World) -> None:
    key_id = new_key(world, ["tokens:read"], ["*"])[0]
    headers = {"Content-Type": "application/json"}
    response = admin(world, "PATCH", f"keys/{key_id}", data="name=x", headers=headers)
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_request", "message": "the body is not valid JSON"}


def test_delete_stops_the_key_at_once_then_the_id_is_gone(
    world: World, unauthorized: dict[str, str]
) -> None:
    key_id, raw = new_key(world, ["keys:admin"], ["*"])
    assert call(world, "GET", "keys", raw).status_code == 200  # cached by devhost
    response = admin(world, "DELETE", f"keys/{key_id}")
    assert response.status_code == 204
    assert response.content == b""
    after = call(world, "GET", "keys", raw)
    assert (after.status_code, after.json()) == (401, unauthorized)
    assert key_id not in key_ids(world)
    for method, path in (
        ("GET", f"keys/{key_id}"),
        ("DELETE", f"keys/{key_id}"),
        ("POST", f"keys/{key_id}/regenerate"),
        ("PATCH", f"keys/{key_id}"),
    ):
        gone = admin(world, method, path, json={"name": "again"})
        assert gone.status_code == 404, (method, path, gone.text)
        assert gone.json()["error"] == "not_found"
        assert key_id in gone.json()["message"]


def test_a_key_used_while_it_is_deleted_stays_deleted(world: World) -> None:
    """A first use records ``last_used_at``; racing a deletion it must not write a row back
    (a partial row made every later ``GET /api/keys`` a 500 and could not be deleted)."""
    with ThreadPoolExecutor(2) as pool:
        for _ in range(20):
            key_id, raw = new_key(world, ["tokens:read"], ["*"], name="raced")
            used = pool.submit(call, world, "GET", "keys", raw)
            deleted = pool.submit(admin, world, "DELETE", f"keys/{key_id}")
            assert used.result().status_code in (401, 403)
            assert deleted.result().status_code == 204
            assert world.store.get("ApiKeys", "apikey", key_id) is None
    assert admin(world, "GET", "keys").status_code == 200


@pytest.mark.parametrize("key_id", ["abcdefghijkl", "NOT-AN-ID", "a" * 200])
def test_an_unknown_id_is_404(world: World, key_id: str) -> None:
    for method, path in (("GET", f"keys/{key_id}"), ("POST", f"keys/{key_id}/regenerate")):
        response = admin(world, method, path)
        assert response.status_code == 404, response.text
        assert response.json()["error"] == "not_found"


GOOD = {"name": "bad-input", "scopes": ["tokens:read"], "resources": ["*"], "expires_in_days": 30}
BAD_BODIES: dict[str, tuple[dict[str, Any], str]] = {
    "unknown-scope": ({"scopes": ["tokens:write"]}, "unknown scope"),
    "no-scopes": ({"scopes": []}, "scopes"),
    "scope-not-a-list": ({"scopes": "tokens:read"}, "scopes"),
    "0-days": ({"expires_in_days": 0}, "expires_in_days"),
    "366-days": ({"expires_in_days": 366}, "expires_in_days"),
    "negative-days": ({"expires_in_days": -1}, "expires_in_days"),
    "days-as-text": ({"expires_in_days": "30"}, "expires_in_days"),
    "fractional-days": ({"expires_in_days": 1.5}, "expires_in_days"),
    "malformed-glob": ({"resources": ["no-slash"]}, "malformed resource glob"),
    "uppercase-app-glob": ({"resources": ["PagerDuty/*"]}, "malformed resource glob"),
    "empty-user-glob": ({"resources": ["app/"]}, "malformed resource glob"),
    "no-globs": ({"resources": []}, "resources"),
    "too-many-globs": ({"resources": [f"app{n}/*" for n in range(51)]}, "at most 50"),
    "oversized-name": ({"name": "x" * 101}, "name"),
    "missing-name": ({"name": None}, "'name' is required"),
    "unprintable-name": ({"name": "tab\there"}, "name"),
    "oversized-owner": ({"owner": "o" * 201}, "owner"),
    "unknown-field": ({"secret_hash": "0" * 64}, "unknown field"),
}


@pytest.mark.parametrize("case", BAD_BODIES)
def test_create_refuses_bad_input_with_a_clear_400(world: World, case: str) -> None:
    changes, message = BAD_BODIES[case]
    body = {k: v for k, v in {**GOOD, **changes}.items() if v is not None}
    before = key_ids(world)
    response = admin(world, "POST", "keys", json=body)
    assert response.status_code == 400, response.text
    assert response.json() == {"error": "invalid_request", "message": response.json()["message"]}
    assert message in response.json()["message"]
    assert key_ids(world) == before  # nothing half-made


@pytest.mark.parametrize(
    ("data", "content_type", "message"),
    [
        ("not json", "application/json", "not valid JSON"),
        ('{"name": "x",', "application/json", "not valid JSON"),
        ('["a", "list"]', "application/json", "JSON object"),
        ('{"name": "x"}', "text/plain", "must be JSON"),
        (b"\xff\xfe", "application/json", "not valid JSON"),
    ],
    ids=["not-json", "truncated", "array", "wrong-content-type", "not-utf8"],
)
def test_create_refuses_a_body_that_is_not_a_json_object(
    world: World, data: str | bytes, content_type: str, message: str
) -> None:
    before = key_ids(world)
    response = admin(world, "POST", "keys", data=data, headers={"Content-Type": content_type})
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"
    assert message in response.json()["message"]
    assert key_ids(world) == before


# --- the audit trail -------------------------------------------------------------------------


def test_every_key_action_is_audited_with_the_acting_key_id_never_a_secret(world: World) -> None:
    admin, admin_raw = world.keys.create(
        NewKey(name="auditing admin", scopes=["keys:admin", "tokens:read"], resources=["*"]),
        actor="test",
    )
    reader = new_key(world, ["audit:read"], ["*"])[1]
    created = call(
        world,
        "POST",
        "keys",
        admin_raw,
        json={"name": "audited", "scopes": ["tokens:read"], "resources": ["*"],
              "expires_in_days": 5},
    ).json()  # fmt: skip
    key_id = created["id"]
    regenerated = call(world, "POST", f"keys/{key_id}/regenerate", admin_raw).json()["key"]
    assert call(world, "PATCH", f"keys/{key_id}", admin_raw, json={"name": "n2"}).ok
    assert call(world, "DELETE", f"keys/{key_id}", admin_raw).status_code == 204

    response = call(world, "GET", f"audit?subject=key:{key_id}", reader)
    assert response.status_code == 200, response.text
    entries = response.json()["entries"]
    assert [e["action"] for e in entries] == [
        "apikey.created",
        "apikey.regenerated",
        "apikey.updated",
        "apikey.deleted",
    ]
    assert {e["actor"] for e in entries} == {f"key:{admin.id}"}
    assert {e["subject"] for e in entries} == {f"key:{key_id}"}

    everything = call(world, "GET", "audit", reader)
    assert everything.status_code == 200
    for raw in (admin_raw, reader, created["key"], regenerated, world.admin_key):
        for text in (response.text, everything.text):
            assert raw not in text
            assert secret_of(raw) not in text
