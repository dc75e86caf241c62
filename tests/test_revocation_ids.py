"""Revocation request ids belong to whoever chose them (issue 16, points 2 and 6), against the
same world as tests/test_revocation.py: the queue worker on devhost, with the host's retries and
poison queue, and a real oidc-provider."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import requests

from shared.lifecycle.revocation_requests import QUEUE
from shared.storage.clients import decode_message, encode_message
from shared.storage.store import Row
from shared.storage.tables.revocations import QUEUE_OWNER, Revocation, storage_key
from tests.peers.processes import wait_until
from tests.peers.world import World
from tests.test_revocation import connected, finished, queue, request

APP = "oidc-demo"


def send(world: World, message: dict[str, Any]) -> None:
    queue(world).send_message(encode_message(json.dumps(message)))


def get(world: World, request_id: str, key: str | None = None) -> requests.Response:
    return world.call("GET", f"revocations/{request_id}", key)


def parked(world: World, needle: str) -> list[str]:
    poison = queue(world, f"{QUEUE}-poison")
    found = [decode_message(m.content).decode() for m in poison.peek_messages(max_messages=32)]
    return [body for body in found if needle in body]


def narrow_key(world: World, user: str) -> str:
    return world.key(["connections:revoke"], [f"{APP}/{user}"])


def test_a_narrow_key_taking_hrs_id_first_does_not_stop_hr_revoking_bob(world: World) -> None:
    alice, bob = "ids-alice@x", "ids-bob@x"
    connected(world, APP, alice)
    connected(world, APP, bob)
    attacker = narrow_key(world, alice)
    taken = request(world, attacker, app=APP, user_id=alice, request_id="hr-offboard-bob")
    assert taken.status_code == 202, taken.text
    send(world, {"request_id": "hr-offboard-bob", "user_id": bob, "reason": "left",
                 "requested_by": "hr-offboarding"})  # fmt: skip
    # The operator's `*` key follows HR's request by the id HR chose.
    hr = finished(world, world.api("revocations/hr-offboard-bob"))
    assert [o["user_id"] for o in hr["outcomes"]] == [bob]
    assert world.token(APP, bob).status_code == 410
    assert (hr["user_id"], hr["owner"], hr["status"]) == (bob, "queue", "completed")
    assert parked(world, "hr-offboard-bob") == []
    # The narrow key still sees only its own request under that id.
    own = finished_as(world, attacker, "hr-offboard-bob")
    assert (own["user_id"], own["owner"]) == (alice, f"key:{key_id(attacker)}")


def finished_as(world: World, key: str, request_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        body: dict[str, Any] = get(world, request_id, key).json()
        return body if body.get("status") in ("completed", "completed_with_failures") else None

    found = wait_until(done, timeout=60, what=f"the revocation {request_id} to finish")
    assert found is not None
    return found


def key_id(key: str) -> str:
    return key.split("_")[1]


def test_a_second_key_reusing_an_id_gets_no_conflict_and_learns_nothing(world: World) -> None:
    first, second = "ids-first@x", "ids-second@x"
    connected(world, APP, first)
    connected(world, APP, second)
    one, two = narrow_key(world, first), narrow_key(world, second)
    assert request(world, one, app=APP, user_id=first, request_id="ids-shared").status_code == 202
    # The second key's answer for a used id is the answer for a fresh one: 202, its own id.
    used = request(world, two, app=APP, user_id=second, request_id="ids-shared")
    fresh = request(world, two, app=APP, user_id=second, request_id="ids-fresh")
    assert used.status_code == fresh.status_code == 202, used.text
    assert used.json()["id"] == "ids-shared"
    assert set(used.json()) == set(fresh.json()) == {"id", "status_url"}
    mine = finished_as(world, two, "ids-shared")
    assert (mine["user_id"], mine["requested_by"]) == (second, f"key:{key_id(two)}")
    assert [o["user_id"] for o in mine["outcomes"]] == [second]
    theirs = finished_as(world, one, "ids-shared")
    assert [o["user_id"] for o in theirs["outcomes"]] == [first]
    assert world.token(APP, first).status_code == world.token(APP, second).status_code == 410


def test_the_same_key_repeating_an_id_is_idempotent_and_another_target_is_409(
    world: World,
) -> None:
    user = "ids-repeat@x"
    connected(world, APP, user)
    key = narrow_key(world, user)
    first = request(world, key, app=APP, user_id=user, request_id="ids-repeat")
    again = request(world, key, app=APP, user_id=user, request_id="ids-repeat")
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json()
    assert len(world.audit("revocation:ids-repeat", "revocation.requested")) == 1
    wide = world.key(["connections:revoke"], [f"{APP}/*"])
    assert request(world, wide, app=APP, user_id=user, request_id="ids-wide").status_code == 202
    conflict = request(world, wide, app=APP, request_id="ids-wide")
    assert conflict.status_code == 409
    assert conflict.json()["error"] == "conflict"


def test_requested_by_on_the_queue_is_a_claim_and_the_actor_is_the_queue(world: World) -> None:
    user = "ids-claim@x"
    connected(world, APP, user)
    send(world, {"request_id": "ids-claim", "user_id": user, "reason": "left",
                 "requested_by": "key:someone-else"})  # fmt: skip
    shown = finished(world, world.api("revocations/ids-claim"))
    assert (shown["owner"], shown["requested_by"]) == ("queue", "key:someone-else")
    [entry] = world.audit("revocation:ids-claim", "revocation.requested")
    assert entry.actor == "queue:revocations"
    assert entry.detail["claimed_by"] == "key:someone-else"
    assert entry.detail["owner"] == "queue"
    # Over HTTP the actor is the authenticated key, and nothing is a claim.
    key = world.key(["connections:revoke"], [f"{APP}/*"])
    assert request(world, key, app=APP, user_id=user, request_id="ids-http").status_code == 202
    [by_key] = world.audit("revocation:ids-http", "revocation.requested")
    assert by_key.actor == f"key:{key_id(key)}"
    assert "claimed_by" not in by_key.detail


def test_the_queue_reusing_its_own_id_for_another_target_is_parked_at_once(world: World) -> None:
    user = "ids-q-twice@x"
    connected(world, APP, user)
    send(world, {"request_id": "ids-q-twice", "user_id": user, "reason": "r",
                 "requested_by": "hr"})  # fmt: skip
    finished(world, world.api("revocations/ids-q-twice"))
    send(world, {"request_id": "ids-q-twice", "app": APP, "reason": "r", "requested_by": "hr"})
    # Audited and parked on its first delivery (a retry cannot fix it), not after five.
    refused = wait_until(lambda: world.audit("revocation:ids-q-twice", "revocation.conflict"),
                         timeout=20, what="the conflicting message to be refused")  # fmt: skip
    assert refused[0].actor == "queue:revocations"
    assert wait_until(lambda: parked(world, '"app"'), timeout=20, what="the message parked")
    assert finished(world, world.api("revocations/ids-q-twice"))["user_id"] == user


def test_a_forged_hand_off_cannot_create_a_request_for_a_key(world: World) -> None:
    send(world, {"owner": "key:aaaaaaaaaaaa", "request_id": "ids-forged"})
    wait_until(lambda: parked(world, "ids-forged"), timeout=20, what="the forged message parked")
    reasons = [e.detail.get("reason") for e in world.audit_actions("revocation.malformed")]
    assert "it names no request accepted over HTTP" in reasons


def legacy_row(
    world: World, request_id: str, requested_by: str, user: str, status: str = "completed"
) -> None:
    """A request row as stored before ids had owners: PartitionKey the bare id."""
    now = datetime.now(UTC)
    world.store.upsert("Revocations", Row(request_id, "request", {
        "status": status, "reason": "old", "requested_by": requested_by,
        "created_at": now, "updated_at": now, "app": APP, "user_id": user, "total": 0,
        **({"completed_at": now} if status == "completed" else {}),
    }))  # fmt: skip


def test_rows_stored_before_owners_stay_readable_by_their_owner(world: World) -> None:
    key = world.key(["connections:revoke"], [f"{APP}/*"])
    legacy_row(world, "ids-old-key", f"key:{key_id(key)}", "ids-old@x")
    legacy_row(world, "ids-old-queue", "hr-offboarding", "ids-old@x")
    shown = get(world, "ids-old-key", key)
    assert shown.status_code == 200, shown.text
    assert (shown.json()["owner"], shown.json()["status"]) == (f"key:{key_id(key)}", "completed")
    # The queue's old rows are the queue's: a `*` key reads them, a narrow key does not.
    assert get(world, "ids-old-queue").json()["owner"] == "queue"
    assert get(world, "ids-old-queue", key).status_code == 404
    assert get(world, "ids-old-key", narrow_key(world, "ids-old@x")).status_code == 404
    # The owner repeating its old id is the same request; another key's use is its own.
    again = request(world, key, app=APP, user_id="ids-old@x", request_id="ids-old-key")
    assert again.status_code == 202
    assert len(world.audit("revocation:ids-old-key", "revocation.requested")) == 0
    assert request(world, key, app=APP, request_id="ids-old-key").status_code == 409


def test_a_hand_off_queued_before_owners_resumes_its_keys_old_row(world: World) -> None:
    user = "ids-inflight@x"
    connected(world, APP, user)
    key = world.key(["connections:revoke"], [f"{APP}/*"])
    legacy_row(world, "ids-inflight", f"key:{key_id(key)}", user, status="pending")
    # What the HTTP path queued before owners: the documented fields, the key as requested_by.
    send(world, {"request_id": "ids-inflight", "app": APP, "user_id": user, "reason": "old",
                 "requested_by": f"key:{key_id(key)}"})  # fmt: skip
    done = finished_as(world, key, "ids-inflight")
    assert [o["user_id"] for o in done["outcomes"]] == [user]
    assert world.store.read(Revocation, storage_key(QUEUE_OWNER, "ids-inflight"), "request") is None
