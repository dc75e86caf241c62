"""Managed Azure DevOps PATs against the PAT API fake, with bearers from a real Entra-like OIDC
server (MSAL) validated by the fake through introspection."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from azure.storage.queue import QueueServiceClient

from shared.foundation.errors import KeystewardError, PatError
from shared.lifecycle.pats.rotation import ROTATION_QUEUE
from shared.providers.pat_api import ALL_ERRORS, PatApi
from shared.storage.clients import encode_message
from shared.storage.tables.pats import ManagedPat, RotationStep
from tests.fakes.ado_pats import PAT_TOKEN_ERRORS
from tests.peers.processes import ROOT, spawn, wait_until
from tests.peers.world import World

APP = "entra-demo"


def connect(world: World, user: str) -> None:
    assert world.connect(APP, user).status_code == 200


def create(world: World, user: str, **body: Any) -> requests.Response:
    payload = {"display_name": "pipeline", "scope": "vso.packaging", "lifetime_days": 30, **body}
    return world.call("POST", f"connections/{APP}/{user}/pats", json=payload)


def made(world: World, user: str, **body: Any) -> dict[str, Any]:
    response = create(world, user, **body)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def stored(world: World, pat_id: str) -> ManagedPat:
    pat = world.store.read(ManagedPat, pat_id, "pat")
    assert pat is not None
    return pat


def test_create_returns_the_secret_once_and_it_works(world: World) -> None:
    connect(world, "p-create")
    pat = made(world, "p-create")
    secret = pat.pop("secret")
    assert world.ado_pats.secret_active(secret)
    assert "secret" not in world.call("GET", f"pats/{pat['id']}").json()
    raw = world.store.get("Pats", pat["id"], "pat")
    assert raw is not None
    assert secret not in repr(raw.data)
    read = world.key(["pats:read"], ["*"])
    assert world.call("GET", f"pats/{pat['id']}/secret", read).status_code == 403
    reader = world.key(["pats:read-secret"], [f"{APP}/p-create"])
    again = world.call("GET", f"pats/{pat['id']}/secret", reader)
    assert again.status_code == 200
    assert again.json()["secret"] == secret
    assert again.headers["Cache-Control"] == "no-store"
    other = world.key(["pats:read-secret"], [f"{APP}/someone-else"])
    assert world.call("GET", f"pats/{pat['id']}/secret", other).status_code == 403


def test_the_lifetime_is_read_back_when_a_policy_clamps_it(world: World) -> None:
    connect(world, "p-clamp")
    world.ado_pats.max_lifespan_days = 7
    try:
        pat = made(world, "p-clamp", lifetime_days=90, rotate_before_days=3)
        valid_to = datetime.fromisoformat(pat["valid_to"])
        assert valid_to - datetime.now(UTC) < timedelta(days=7, minutes=5)
        extended = world.call("PATCH", f"pats/{pat['id']}", json={"extend_days": 60})
        assert extended.status_code == 200
        assert datetime.fromisoformat(extended.json()["valid_to"]) - datetime.now(UTC) < timedelta(
            days=7, minutes=5
        )
    finally:
        world.ado_pats.max_lifespan_days = None


def test_inventory_lists_every_page_with_managed_ones_marked(world: World) -> None:
    connect(world, "p-list")
    mine = made(world, "p-list")
    for i in range(3):  # page_size is 2: the list spans pages
        world.ado_pats.seed("p-list", f"made in the UI {i}", scope="vso.code",
                            valid_to=(datetime.now(UTC) + timedelta(days=20)).timestamp(),
                            organization="contoso")  # fmt: skip
    listed = world.call("GET", f"connections/{APP}/p-list/pats").json()["pats"]
    assert len(listed) == 4
    managed = [p for p in listed if p["managed"]]
    assert [p["managed_id"] for p in managed] == [mine["id"]]
    assert all(p["managed_id"] is None for p in listed if not p["managed"])


def test_delete_revokes_it_at_azure_devops_and_locally(world: World) -> None:
    connect(world, "p-delete")
    pat = made(world, "p-delete")
    response = world.call("DELETE", f"pats/{pat['id']}")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "revoked"
    assert not world.ado_pats.secret_active(pat["secret"])
    assert world.call("GET", f"pats/{pat['id']}/secret").status_code == 410


def test_create_needs_an_entra_connection_and_valid_input(world: World) -> None:
    connect(world, "p-input")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"display_name": ""}, "display_name"),
        ({"lifetime_days": 0}, "lifetime_days"),
        ({"lifetime_days": 400}, "lifetime_days"),
        ({"organization": "no spaces allowed"}, "organization"),
        ({"all_orgs": "yes"}, "all_orgs"),
    ]
    for body, message in cases:
        response = create(world, "p-input", **body)
        assert response.status_code == 400, body
        assert message in response.json()["message"]
    assert create(world, "nobody").status_code == 404
    wrong = world.call("POST", "connections/oidc-demo/x/pats",
                       json={"display_name": "d", "scope": "s"})  # fmt: skip
    assert wrong.status_code in (400, 404)


@pytest.fixture(scope="module")
def bearer(world: World) -> str:
    connect(world, "p-errors")
    return str(world.token(APP, "p-errors").json()["access_token"])


@pytest.mark.parametrize("status", [200, 400])
@pytest.mark.parametrize("enum", PAT_TOKEN_ERRORS[1:])
def test_every_pat_token_error_becomes_a_clear_domain_error(
    world: World, bearer: str, enum: str, status: int
) -> None:
    """The status that comes with patTokenError is unconfirmed: both are read."""
    assert enum in ALL_ERRORS
    world.ado_pats.error_status = status
    world.ado_pats.inject_error(enum)
    try:
        api = PatApi(requests.Session(), api_url=world.ado_pats.url, org_url=world.ado_pats.url)
        with pytest.raises(KeystewardError) as caught:
            api.create(bearer, "contoso", display_name="d", scope="vso.code",
                       valid_to=datetime.now(UTC) + timedelta(days=1), all_orgs=False)  # fmt: skip
        error = caught.value
        assert enum in str(error)
        assert getattr(error, "status", 0) >= 400
        if isinstance(error, PatError):
            assert error.pat_error == enum
    finally:
        world.ado_pats.error_status = 400


def wait_rotated(world: World, pat_id: str, rotations: int = 1) -> ManagedPat:
    def done() -> ManagedPat | None:
        pat = stored(world, pat_id)
        return pat if pat.rotations >= rotations and pat.rotation_id is None else None

    found = wait_until(done, timeout=60, what="the rotation to finish")
    assert found is not None
    return found


def active_managed(world: World, user: str) -> list[dict[str, Any]]:
    return [p for p in world.ado_pats.active(user) if "[ks " in p["display_name"]]


def test_a_rotation_runs_create_test_promote_revoke(world: World) -> None:
    connect(world, "p-rotate")
    pat = made(world, "p-rotate", lifetime_days=30)
    response = world.call("POST", f"pats/{pat['id']}/rotate")
    assert response.status_code == 202
    assert response.json()["started"] is True
    again = world.call("POST", f"pats/{pat['id']}/rotate")  # merged, never a second rotation
    assert again.status_code == 202
    assert again.json()["rotation_id"] == response.json()["rotation_id"]
    done = wait_rotated(world, pat["id"])
    active = active_managed(world, "p-rotate")
    assert len(active) == 1
    assert done.secret is not None
    assert active[0]["token"] == done.secret.reveal()
    assert not world.ado_pats.secret_active(pat["secret"])  # the previous one, after the grace
    assert world.call("GET", f"pats/{pat['id']}/secret").json()["secret"] == done.secret.reveal()
    assert len(world.events(f"pat:{pat['id']}", "keysteward.credential.rotated")) == 1


def test_every_audit_row_about_a_pat_is_seen_by_an_auditor_of_its_user(world: World) -> None:
    """``audit:read`` is glob-filtered (issue 16, point 1): each row about a PAT names its app
    and user, so an auditor of that user sees the PAT's whole story and nobody else's."""
    connect(world, "p-audit")
    pat = made(world, "p-audit")
    assert world.call("POST", f"pats/{pat['id']}/rotate").status_code == 202
    wait_rotated(world, pat["id"])
    every = {e.action for e in world.audit(f"pat:{pat['id']}")}
    assert {"pat.created", "pat.rotation_started", "pat.rotated", "pat.previous_revoked"} <= every
    auditor = world.key(["audit:read"], [f"{APP}/p-audit"])
    entries = world.call("GET", "audit?limit=1000", key=auditor).json()["entries"]
    assert {e["action"] for e in entries if e["subject"] == f"pat:{pat['id']}"} == every
    stranger = world.key(["audit:read"], [f"{APP}/p-someone-else"])
    others = world.call("GET", "audit?limit=1000", key=stranger).json()["entries"]
    assert not [e for e in others if e["subject"] == f"pat:{pat['id']}"]


WORKER = """
import os, sys, time
from shared.runtime import Runtime
from shared.config.settings import Settings
runtime = Runtime.build(Settings.from_env(os.environ))
wait = runtime.pat_rotations.run(sys.argv[1], sys.argv[2])
while wait is not None:  # what the queue's delayed redelivery does, in one process
    time.sleep(wait)
    wait = runtime.pat_rotations.run(sys.argv[1], sys.argv[2])
"""

BOUNDARIES = ["before-create", "created", "after-create", "after-test", "promoted",
              "after-promote", "after-revoke"]  # fmt: skip


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_a_rotation_killed_at_each_step_boundary_completes(
    world: World, boundary: str, tmp_path: Path
) -> None:
    user = f"p-crash-{boundary}"
    connect(world, user)
    pat = made(world, user)
    # A rotation started without a queue message, so the worker below (the queue function's own
    # code, in a process we can kill) is the only one to run it.
    row = stored(world, pat["id"])
    rotation = "rot-crash-" + boundary
    row.rotation_id, row.rotation_step = rotation, RotationStep.CREATE
    row.rotation_started_at = datetime.now(UTC)
    world.store.save(row)
    env = {**world.env, "KEYSTEWARD_TEST_FAULT": boundary}
    worker = spawn([sys.executable, "-c", WORKER, pat["id"], rotation], env=env, cwd=ROOT,
                   log=tmp_path / "worker.log")  # fmt: skip
    code = worker.wait(timeout=60)
    assert code == -9, (tmp_path / "worker.log").read_text()  # SIGKILL at the boundary
    # The killed worker's lease on the row would expire on its own; expire it now.
    crashed = stored(world, pat["id"])
    crashed.lease_expires_at = datetime.now(UTC) - timedelta(seconds=1)
    world.store.save(crashed)
    # Restart: the message redelivered, to the devhost's queue function.
    queue = QueueServiceClient.from_connection_string(world.env["AzureWebJobsStorage"])
    queue.get_queue_client(ROTATION_QUEUE).send_message(
        encode_message(json.dumps({"pat_id": pat["id"], "rotation_id": rotation}))
    )
    done = wait_rotated(world, pat["id"])
    active = active_managed(world, user)
    assert len(active) == 1, [a["display_name"] for a in active]
    assert done.secret is not None
    assert active[0]["token"] == done.secret.reveal()
    assert not world.ado_pats.secret_active(pat["secret"])
    assert len(world.events(f"pat:{pat['id']}", "keysteward.credential.rotated")) == 1


def quiet(world: World) -> None:
    """No rotation in flight: an injected PAT API failure then reaches the call under test, not a
    delayed step of an earlier test's rotation."""
    wait_until(lambda: not [p for p in world.store.select(ManagedPat, "RowKey eq @k", {"k": "pat"})
                            if p.rotation_id], timeout=60, what="rotations to finish")  # fmt: skip


def nightly(world: World) -> None:
    response = requests.post(f"{world.devhost.url}/admin/functions/expiry_sweep", json={},
                             timeout=120)  # fmt: skip
    assert response.status_code == 202, response.text


def test_the_nightly_sweep_rotates_due_pats_and_warns_once_for_the_rest(world: World) -> None:
    connect(world, "p-sweep")
    due = made(world, "p-sweep", lifetime_days=5, rotate_before_days=5)
    manual = made(world, "p-sweep", lifetime_days=5, rotate_before_days=1, auto_rotate=False)
    unmanaged = world.ado_pats.seed("p-sweep", "made by hand", scope="vso.code",
                                    valid_to=(datetime.now(UTC) + timedelta(days=5)).timestamp(),
                                    organization="contoso")  # fmt: skip
    nightly(world)
    nightly(world)  # a second night warns nobody twice
    wait_rotated(world, due["id"])
    warned = world.events(f"pat:{manual['id']}", "keysteward.credential.expiring")
    assert [e["data"]["threshold_days"] for e in warned] == [10]
    assert warned[0]["data"]["managed"] is True
    found = world.events(f"pat:{unmanaged['authorization_id']}", "keysteward.credential.expiring")
    assert len(found) == 1
    assert found[0]["data"]["managed"] is False
    assert found[0]["data"]["user_id"] == "p-sweep"
    secret = world.events("app:entra-demo", "keysteward.credential.expiring")
    assert len(secret) == 1
    assert secret[0]["data"]["type"] == "app_client_secret"


def test_revoking_a_user_revokes_their_managed_pats(world: World) -> None:
    connect(world, "p-revoke")
    pat = made(world, "p-revoke")
    accepted = world.call("POST", "revocations", json={"user_id": "p-revoke", "reason": "left"})
    assert accepted.status_code == 202

    def finished() -> dict[str, Any] | None:
        body: dict[str, Any] = requests.get(
            accepted.json()["status_url"], timeout=30,
            headers={"Authorization": f"Bearer {world.admin_key}"},
        ).json()  # fmt: skip
        return body if body["status"].startswith("completed") else None

    result = wait_until(finished, timeout=60, what="the revocation")
    assert result is not None
    assert result["status"] == "completed"
    pats = [o for o in result["outcomes"] if o["type"] == "managed_pat"]
    assert [(o["credential"], o["upstream"]) for o in pats] == [(f"pat:{pat['id']}", "revoked")]
    assert not world.ado_pats.secret_active(pat["secret"])
    assert world.call("GET", f"pats/{pat['id']}/secret").status_code == 410


def test_a_pat_whose_delete_fails_is_listed_and_retried_by_the_nightly_sweep(
    world: World,
) -> None:
    connect(world, "p-stuck")
    pat = made(world, "p-stuck")
    quiet(world)
    world.ado_pats.fail_next("/_apis/tokens/pats", 503)
    response = world.call("DELETE", f"connections/{APP}/p-stuck")
    assert response.status_code == 200, response.text
    assert [p["upstream"] for p in response.json()["pats"]] == ["revoke_failed"]
    assert world.ado_pats.secret_active(pat["secret"])  # still alive at Azure DevOps
    assert stored(world, pat["id"]).status == "revoke_failed"
    assert world.call("GET", f"pats/{pat['id']}/secret").status_code == 410  # never served again
    failures = world.call("GET", "revocation-failures").json()["failures"]
    assert f"{APP}/p-stuck" in {f["credential"] for f in failures}
    nightly(world)
    assert not world.ado_pats.secret_active(pat["secret"])
    assert stored(world, pat["id"]).status == "revoked"
    failures = world.call("GET", "revocation-failures").json()["failures"]
    assert f"{APP}/p-stuck" not in {f["credential"] for f in failures}


def test_revoke_accepts_200_as_well_as_204(world: World) -> None:
    """providers.md §1: the spec says 200, the example shows 204 with no body."""
    connect(world, "p-200")
    pat = made(world, "p-200")
    world.ado_pats.revoke_status = 200
    try:
        response = world.call("DELETE", f"pats/{pat['id']}")
    finally:
        world.ado_pats.revoke_status = 204
    assert response.status_code == 200
    assert response.json()["status"] == "revoked"
    assert not world.ado_pats.secret_active(pat["secret"])


def test_a_pat_delete_that_fails_is_listed_and_retried_nightly(world: World) -> None:
    connect(world, "p-delete-fails")
    pat = made(world, "p-delete-fails")
    quiet(world)
    world.ado_pats.fail_next("/_apis/tokens/pats", 503)
    response = world.call("DELETE", f"pats/{pat['id']}")
    assert response.json()["status"] == "revoke_failed"
    assert world.call("GET", f"pats/{pat['id']}/secret").status_code == 410
    listed = world.call("GET", "revocation-failures").json()["failures"]
    assert f"pat:{pat['id']}" in {f["credential"] for f in listed}
    nightly(world)
    assert not world.ado_pats.secret_active(pat["secret"])
    assert stored(world, pat["id"]).status == "revoked"
