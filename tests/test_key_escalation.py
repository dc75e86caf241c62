"""No escalation through keys (issue 16, point 1), as the attack was made: a ``keys:admin`` key
whose globs cover only Alice minted a ``*`` key that read Bob's token, widened its own globs, and
regenerated the bootstrap key. A key now creates, sees, changes, regenerates and deletes only keys
that grant nothing it does not hold; ``audit:read`` shows only rows about the key's own resources,
and key-management rows only to a ``*`` key. Over real HTTP through devhost."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from shared.access.key_requests import NewKey
from tests.peers.world import World

APP = "oidc-demo"
ALICE = "alice.keys@contoso.com"
BOB = "bob.keys@contoso.com"


def key(world: World, scopes: list[str], resources: list[str]) -> tuple[str, str]:
    made, raw = world.keys.create(NewKey(name="t", scopes=scopes, resources=resources), actor="t")
    return made.id, raw


def as_key(world: World, raw: str, method: str, path: str, **kwargs: Any) -> requests.Response:
    return world.call(method, path, headers={"Authorization": f"Bearer {raw}"}, **kwargs)


def body(scopes: list[str], resources: list[str]) -> dict[str, Any]:
    return {"name": "minted", "scopes": scopes, "resources": resources, "expires_in_days": 1}


@pytest.fixture(scope="module")
def users(world: World) -> None:
    for user in (ALICE, BOB):
        assert world.connect(APP, user).status_code == 200


@pytest.fixture
def alice_admin(world: World, users: None) -> tuple[str, str]:
    return key(world, ["keys:admin", "tokens:read"], [f"{APP}/{ALICE}"])


def test_a_narrow_admin_key_cannot_mint_a_wider_key(
    world: World, alice_admin: tuple[str, str]
) -> None:
    _, raw = alice_admin
    before = {k.id for k in world.keys.list()}
    for scopes, resources in (
        (["tokens:read"], ["*"]),  # the attack: a '*' key that reads Bob's token
        (["tokens:read"], [f"{APP}/*"]),
        (["tokens:read"], [f"{APP}/{BOB}"]),
        (["tokens:read"], [f"{APP}/alice*"]),  # wider than one user, by a wildcard
        (["connections:revoke"], [f"{APP}/{ALICE}"]),  # a scope it does not hold
    ):
        refused = as_key(world, raw, "POST", "keys", json=body(scopes, resources))
        assert refused.status_code == 403, (scopes, resources, refused.text)
        assert refused.json()["error"] == "forbidden"
        assert "cannot grant" in refused.json()["message"]
    assert {k.id for k in world.keys.list()} == before  # nothing was written


def test_a_narrow_admin_key_can_hand_on_what_it_holds(
    world: World, alice_admin: tuple[str, str]
) -> None:
    _, raw = alice_admin
    # The user part of a glob is one identity whatever its case, as user ids are.
    made = as_key(
        world, raw, "POST", "keys", json=body(["tokens:read"], [f"{APP}/ALICE.keys@contoso.com"])
    )
    assert made.status_code == 201, made.text
    child = made.json()["key"]
    assert as_key(world, child, "GET", f"connections/{APP}/{ALICE}/token").status_code == 200
    assert as_key(world, child, "GET", f"connections/{APP}/{BOB}/token").status_code == 403


def test_a_narrow_admin_key_cannot_widen_its_own_globs(
    world: World, alice_admin: tuple[str, str]
) -> None:
    key_id, raw = alice_admin
    widened = as_key(world, raw, "PATCH", f"keys/{key_id}", json={"resources": ["*"]})
    assert widened.status_code == 403, widened.text
    assert world.keys.get(key_id).resources == [f"{APP}/{ALICE}"]
    assert as_key(world, raw, "GET", f"connections/{APP}/{BOB}/token").status_code == 403
    # Narrowing stays allowed.
    narrowed = as_key(world, raw, "PATCH", f"keys/{key_id}", json={"name": "still alice"})
    assert narrowed.status_code == 200, narrowed.text


def test_a_wider_key_is_unknown_to_a_narrow_admin_key(
    world: World, alice_admin: tuple[str, str]
) -> None:
    _, raw = alice_admin
    bootstrap, _ = key(world, ["keys:admin", "tokens:read", "audit:read"], ["*"])
    same_scope_wider_glob, _ = key(world, ["tokens:read"], [f"{APP}/*"])
    for wider in (bootstrap, same_scope_wider_glob):
        for method, path in (
            ("GET", f"keys/{wider}"),
            ("POST", f"keys/{wider}/regenerate"),
            ("PATCH", f"keys/{wider}"),
            ("DELETE", f"keys/{wider}"),
        ):
            kwargs = {"json": {"name": "x"}} if method == "PATCH" else {}
            answer = as_key(world, raw, method, path, **kwargs)
            # As an unknown id answers: that the key exists is not the caller's to know.
            assert answer.status_code == 404, (method, path, answer.text)
            assert answer.json()["message"] == f"no API key with id '{wider}'"
    listed = {k["id"] for k in as_key(world, raw, "GET", "keys").json()["keys"]}
    assert bootstrap not in listed
    assert same_scope_wider_glob not in listed
    assert world.keys.get(bootstrap).regenerated_at is None
    # The world's own '*' admin key still sees and manages every key.
    everything = {k["id"] for k in world.call("GET", "keys").json()["keys"]}
    assert {bootstrap, same_scope_wider_glob} <= everything


def test_audit_reads_show_only_the_keys_own_resources(world: World, users: None) -> None:
    _, alice_auditor = key(world, ["audit:read"], [f"{APP}/{ALICE}"])
    _, auditor = key(world, ["audit:read"], ["*"])
    key(world, ["tokens:read"], [f"{APP}/{ALICE}"])  # a key-management row now exists

    def subjects(raw: str) -> set[str]:
        answer = as_key(world, raw, "GET", "audit?limit=1000")
        assert answer.status_code == 200, answer.text
        return {entry["subject"] for entry in answer.json()["entries"]}

    narrow, wide = subjects(alice_auditor), subjects(auditor)
    assert f"{APP}/{ALICE}" in narrow
    assert f"{APP}/{BOB}" in wide
    assert f"{APP}/{BOB}" not in narrow
    assert any(s.startswith("key:") for s in wide)
    assert not [s for s in narrow if s.startswith("key:")]
    # A filter by subject is no way around it.
    bob = as_key(world, alice_auditor, "GET", f"audit?subject={APP}/{BOB}")
    assert bob.status_code == 200
    assert bob.json()["entries"] == []
