"""Managed PATs follow what Azure DevOps holds (providers.md §1, §8): a PAT revoked, expired or
changed out of band is found on ``GET /api/pats/{id}`` and by the nightly sweep; an organisation
policy that refuses a create or a rotation is named, and leaves nothing behind."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.foundation.secret import Secret
from shared.storage.tables.pats import ManagedPat, PatOfConnection, PatStatus, RotationStep
from tests.peers.processes import ROOT, wait_until
from tests.peers.world import World
from tests.test_pats import APP, connect, create, made, nightly, quiet, stored, wait_rotated

REVOKED = "keysteward.credential.revoked"


@pytest.fixture
def fake(world: World) -> Iterator[Any]:
    """The PAT fake, its unconfirmed answers and policies put back after each test."""
    pats = world.ado_pats
    yield pats
    pats.revoked_get, pats.stale_in_active_list, pats.revoked_shows_past_valid_to = (
        "entry", False, False,
    )  # fmt: skip
    pats.pat_creation_disabled = pats.full_scope_forbidden = pats.global_pats_forbidden = False
    pats.lifespan_refuses, pats.max_lifespan_days, pats.error_status = False, None, 400


def status_cli(world: World) -> dict[str, Any]:
    done = subprocess.run([str(ROOT / "keysteward"), "status", "--json"], env=world.env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def assert_revoked_upstream(world: World, pat: dict[str, Any], state: str) -> None:
    row = stored(world, pat["id"])
    assert row.status == PatStatus.REVOKED_UPSTREAM
    assert row.secret is None
    assert row.pending_secret is None
    raw = world.store.get("Pats", pat["id"], "pat")
    assert raw is not None
    assert "secret" not in json.dumps(raw.data, default=str).lower()
    gone = world.call("GET", f"pats/{pat['id']}/secret")
    assert gone.status_code == 410
    assert gone.json()["error"] == "gone"
    assert "Azure DevOps" in gone.json()["message"]
    assert pat["secret"] not in gone.text
    [event] = world.events(f"pat:{pat['id']}", REVOKED)
    assert event["data"]["reason"] == "upstream"
    assert event["data"]["upstream_state"] == state
    [audited] = world.audit(f"pat:{pat['id']}", "pat.revoked_upstream")
    assert audited.detail["upstream_state"] == state


# -- found on GET /api/pats/{id} --------------------------------------------------------------


@pytest.mark.parametrize("answer", ["authorizationNotFound", "http404", "null", "past_valid_to"])
def test_a_pat_revoked_in_the_ado_ui_is_found_on_get(world: World, fake: Any, answer: str) -> None:
    """However Azure DevOps reads a revoked PAT back (UNCONFIRMED, §1), GET finds it."""
    user = f"u-get-{answer.lower()}"
    connect(world, user)
    pat = made(world, user)
    fake.revoked_get = "entry" if answer == "past_valid_to" else answer
    fake.revoked_shows_past_valid_to = answer == "past_valid_to"
    fake.revoke_outside(pat["authorization_id"])
    response = world.call("GET", f"pats/{pat['id']}")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "revoked_upstream"
    # A revocation Azure DevOps shows as a past validTo cannot be told from an expiry.
    assert_revoked_upstream(world, pat, "expired" if answer == "past_valid_to" else "revoked")
    assert world.call("GET", f"pats/{pat['id']}").json()["status"] == "revoked_upstream"
    assert len(world.events(f"pat:{pat['id']}", REVOKED)) == 1  # announced once


def test_an_expired_pat_is_found_on_get(world: World, fake: Any) -> None:
    connect(world, "u-expired")
    pat = made(world, "u-expired")
    fake.expire(pat["authorization_id"])
    assert world.call("GET", f"pats/{pat['id']}").json()["status"] == "revoked_upstream"
    assert_revoked_upstream(world, pat, "expired")
    # Azure DevOps already ended it: a later revocation reports nothing more for it.
    deleted = world.call("DELETE", f"pats/{pat['id']}")
    assert deleted.json() == {"id": pat["id"], "status": "revoked_upstream", "upstream": {}}
    assert world.call("DELETE", f"connections/{APP}/u-expired").json()["pats"] == []
    assert len(world.events(f"pat:{pat['id']}", REVOKED)) == 1


def test_a_changed_valid_to_or_scope_is_recorded_and_announced_on_get(
    world: World, fake: Any
) -> None:
    connect(world, "u-changed")
    pat = made(world, "u-changed", scope="vso.packaging")
    sooner = datetime.now(UTC) + timedelta(days=12)
    fake.change_outside(pat["authorization_id"], valid_to=sooner.timestamp(), scope="vso.code")
    body = world.call("GET", f"pats/{pat['id']}").json()
    assert body["status"] == "active"
    assert body["scope"] == "vso.code"
    assert abs(datetime.fromisoformat(body["valid_to"]) - sooner) < timedelta(seconds=1)
    [event] = world.events(f"pat:{pat['id']}", "keysteward.pat.changed")
    assert set(event["data"]["changes"]) == {"valid_to", "scope"}
    assert event["data"]["changes"]["scope"] == {"from": "vso.packaging", "to": "vso.code"}
    assert world.audit(f"pat:{pat['id']}", "pat.changed_upstream")
    world.call("GET", f"pats/{pat['id']}")
    assert len(world.events(f"pat:{pat['id']}", "keysteward.pat.changed")) == 1
    assert world.call("GET", f"pats/{pat['id']}/secret").json()["secret"] == pat["secret"]


def test_the_previous_pat_a_rotation_revoked_is_not_revoked_upstream(
    world: World, fake: Any
) -> None:
    connect(world, "u-rotated")
    pat = made(world, "u-rotated")
    fake.revoked_get = "authorizationNotFound"
    assert world.call("POST", f"pats/{pat['id']}/rotate").status_code == 202
    wait_rotated(world, pat["id"])
    assert world.call("GET", f"pats/{pat['id']}").json()["status"] == "active"
    nightly(world)
    assert stored(world, pat["id"]).status == PatStatus.ACTIVE
    assert world.events(f"pat:{pat['id']}", REVOKED) == []


def test_a_pat_revoked_upstream_mid_rotation_gives_back_the_rotations_new_pat(
    world: World, fake: Any
) -> None:
    connect(world, "u-mid-rotation")
    pat = made(world, "u-mid-rotation")
    quiet(world)
    # A rotation between its create and test steps: its pending PAT exists at Azure DevOps. No
    # queue message is sent, so no worker moves it on while the test looks.
    pending = fake.seed("u-mid-rotation", "pipeline [ks pending]", scope="vso.packaging",
                        organization="contoso")  # fmt: skip
    row = stored(world, pat["id"])
    row.rotation_id, row.rotation_step = "rot-mid-rotation", RotationStep.TEST
    row.pending_authorization_id, row.pending_secret = (
        pending["authorization_id"],
        Secret(pending["token"]),
    )
    row.lease_owner, row.lease_expires_at = "a-worker", datetime.now(UTC) + timedelta(minutes=2)
    world.store.save(row)
    fake.revoked_get = "authorizationNotFound"
    fake.revoke_outside(pat["authorization_id"])
    # A worker holds the row: it is not judged now.
    assert world.call("GET", f"pats/{pat['id']}").json()["status"] == "active"
    row = stored(world, pat["id"])
    row.lease_owner, row.lease_expires_at = None, None  # the worker let go
    world.store.save(row)
    assert world.call("GET", f"pats/{pat['id']}").json()["status"] == "revoked_upstream"
    assert_revoked_upstream(world, pat, "revoked")
    assert not fake.secret_active(pending["token"])  # ours, and no longer wanted
    [event] = world.events(f"pat:{pat['id']}", REVOKED)
    assert event["data"]["outcomes"] == {pending["authorization_id"]: "revoked"}
    assert stored(world, pat["id"]).rotation_id is None


# -- found by the nightly sweep, one list per user -------------------------------------------


@pytest.mark.parametrize("listing", ["absent", "stale"])
def test_the_nightly_sweep_finds_revoked_expired_and_changed_pats_from_the_list(
    world: World, fake: Any, listing: str
) -> None:
    """Get still answers as if nothing happened ("entry"): the list is the way to notice (§8)."""
    user = f"u-night-{listing}"
    connect(world, user)
    revoked, expired, changed, kept = (
        made(world, user, display_name=name, auto_rotate=False)
        for name in ("revoked", "expired", "changed", "kept")
    )
    fake.stale_in_active_list = fake.revoked_shows_past_valid_to = listing == "stale"
    fake.revoke_outside(revoked["authorization_id"])
    fake.expire(expired["authorization_id"])
    later = datetime.now(UTC) + timedelta(days=20)
    fake.change_outside(changed["authorization_id"], valid_to=later.timestamp())
    quiet(world)
    gets = fake.calls[("GET", "get")]
    nightly(world)
    assert fake.calls[("GET", "get")] == gets  # no Get per PAT: the user's list, once
    assert_revoked_upstream(world, revoked, "expired" if listing == "stale" else "revoked")
    assert_revoked_upstream(world, expired, "expired" if listing == "stale" else "revoked")
    row = stored(world, changed["id"])
    assert row.status == PatStatus.ACTIVE
    assert row.valid_to is not None
    assert abs(row.valid_to - later) < timedelta(seconds=1)
    [event] = world.events(f"pat:{changed['id']}", "keysteward.pat.changed")
    assert set(event["data"]["changes"]) == {"valid_to"}
    assert stored(world, kept["id"]).status == PatStatus.ACTIVE
    kept_row = world.store.get("Pats", kept["id"], "pat")
    assert kept_row is not None
    assert "secret" in kept_row.data  # what assert_revoked_upstream finds gone from the others
    assert world.events(f"pat:{kept['id']}") == []
    nightly(world)  # a second night announces nothing again
    assert len(world.events(f"pat:{revoked['id']}", REVOKED)) == 1
    assert len(world.events(f"pat:{changed['id']}", "keysteward.pat.changed")) == 1


# -- organisation policies --------------------------------------------------------------------

POLICIES = [
    ("full_scope_forbidden", {"scope": "app_token"}, "fullScopePatPolicyViolation"),
    ("global_pats_forbidden", {"all_orgs": True}, "globalPatPolicyViolation"),
    ("lifespan_refuses", {"lifetime_days": 90}, "patLifespanPolicyViolation"),
    ("pat_creation_disabled", {}, "disablePatCreationPolicyViolation"),
]


@pytest.mark.parametrize("error_status", [200, 400])
@pytest.mark.parametrize("case", POLICIES, ids=[p[2] for p in POLICIES])
def test_a_create_refused_by_a_policy_names_it_and_leaves_nothing_behind(
    world: World, fake: Any, case: tuple[str, dict[str, Any], str], error_status: int
) -> None:
    policy, body, error = case
    user = f"u-policy-{error[:12].lower()}-{error_status}"
    connect(world, user)
    fake.error_status, fake.max_lifespan_days = error_status, 30
    setattr(fake, policy, True)
    response = create(world, user, **body)
    assert response.status_code == 409, response.text
    assert [p for p in status_cli(world)["managed_pats"] if p["resource"] == f"{APP}/{user}"] == []
    assert [p for p in world.store.select(ManagedPat, "RowKey eq @k", {"k": "pat"})
            if p.user_id == user] == []  # fmt: skip
    assert list(world.store.entities_in(PatOfConnection, f"{APP}/{user}")) == []
    assert response.json()["error"] == "pat_policy_violation"
    assert error in response.json()["message"]
    revoked = world.call("DELETE", f"connections/{APP}/{user}")
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["pats"] == []  # nothing for a later revocation to report
    world.events("drain")
    assert [e for e in world.seen_events if e["subject"].startswith("pat:")
            and e["data"].get("user_id") == user] == []  # fmt: skip


def test_a_rotation_refused_by_a_policy_keeps_the_current_pat_and_says_why(
    world: World, fake: Any
) -> None:
    connect(world, "u-rotation-policy")
    pat = made(world, "u-rotation-policy")
    quiet(world)
    fake.pat_creation_disabled = True
    assert world.call("POST", f"pats/{pat['id']}/rotate").status_code == 202

    def refused() -> ManagedPat | None:
        row = stored(world, pat["id"])
        return row if row.rotation_id is None and row.rotation_refused else None

    row = wait_until(refused, timeout=30, what="the rotation to be refused")
    assert row is not None
    assert row.status == PatStatus.ACTIVE
    assert row.authorization_id == pat["authorization_id"]
    assert fake.secret_active(pat["secret"])
    body = world.call("GET", f"pats/{pat['id']}").json()
    assert body["status"] == "active"
    assert body["rotation"] is None
    assert body["rotation_refused"]["policy"] == "disablePatCreationPolicyViolation"
    assert "disablePatCreationPolicyViolation" in body["rotation_refused"]["message"]
    assert world.call("GET", f"pats/{pat['id']}/secret").json()["secret"] == pat["secret"]
    [event] = world.events(f"pat:{pat['id']}", "keysteward.pat.rotation_refused")
    assert event["data"]["policy"] == "disablePatCreationPolicyViolation"
    assert world.audit(f"pat:{pat['id']}", "pat.rotation_refused")
    [listed] = [p for p in status_cli(world)["managed_pats"] if p["id"] == pat["id"]]
    assert listed["status"] == "active"
    assert "disablePatCreationPolicyViolation" in listed["rotation_refused"]
    assert not [p for p in fake.active("u-rotation-policy") if p["authorization_id"] !=
                pat["authorization_id"]]  # fmt: skip
