"""Revocation by user, by app or both, from the queue and over HTTP, against a real
oidc-provider (introspection tells whether a token still lives) and the PagerDuty fake."""

from __future__ import annotations

import contextlib
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueServiceClient

from shared.foundation.secret import Secret
from shared.lifecycle.revocation_requests import QUEUE
from shared.storage.clients import decode_message, encode_message
from shared.storage.tablekeys import encode_key
from shared.storage.tables.connections import Connection, ConnectionStore, Status
from shared.storage.tables.revocations import QUEUE_OWNER, Outcome, PendingRevocation, storage_key
from tests.peers.processes import ROOT, kill, spawn, wait_until
from tests.peers.world import SECRETS, World

OIDC_CLIENT = ("oidc-demo-client", SECRETS["OIDC_DEMO_SECRET"])


def connected(world: World, app: str, user: str) -> Connection:
    assert world.connect(app, user).status_code == 200
    return world.connection(app, user)


def refresh_token(connection: Connection) -> str:
    assert connection.refresh_token is not None
    return connection.refresh_token.reveal()


def oidc_active(world: World, token: str) -> bool:
    return bool(world.oidc.introspect(token, *OIDC_CLIENT).get("active"))


def request(world: World, key: str | None = None, **body: str) -> requests.Response:
    return world.call("POST", "revocations", key, json={"reason": "offboarding", **body})


def finished(world: World, status_url: str, timeout: float = 60) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        body: dict[str, Any] = world.http.get(
            status_url, headers={"Authorization": f"Bearer {world.admin_key}"}, timeout=30
        ).json()
        return body if body["status"] in ("completed", "completed_with_failures") else None

    found = wait_until(done, timeout=timeout, what="the revocation to finish")
    assert found is not None
    return found


def queue(world: World, name: str = QUEUE) -> Any:
    service = QueueServiceClient.from_connection_string(world.env["AzureWebJobsStorage"])
    client = service.get_queue_client(name)
    with contextlib.suppress(ResourceExistsError):
        client.create_queue()
    return client


def test_revoke_everything_a_user_holds(world: World) -> None:
    user, other = "rv-user@contoso.com", "rv-other@contoso.com"
    oidc = connected(world, "oidc-demo", user)
    pd = connected(world, "pagerduty-incidents", user)
    connected(world, "entra-demo", user)
    bystander = connected(world, "oidc-demo", other)
    response = request(world, user_id=user)
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert set(accepted) == {"id", "status_url"}
    result = finished(world, accepted["status_url"])
    assert result["status"] == "completed", result["outcomes"]
    outcomes = {o["app"]: o["upstream"] for o in result["outcomes"]}
    assert outcomes == {"oidc-demo": "revoked", "pagerduty-incidents": "revoked",
                        "entra-demo": "not_supported"}  # fmt: skip
    assert {o["local"] for o in result["outcomes"]} == {"destroyed"}
    # Upstream: the server says the refresh tokens are dead.
    assert not oidc_active(world, refresh_token(oidc))
    assert not world.pagerduty.is_active(refresh_token(pd))
    # Locally: nothing revoked is served again, and every secret is gone from the row.
    for app in ("oidc-demo", "pagerduty-incidents", "entra-demo"):
        assert world.token(app, user).status_code == 410
        raw = world.store.get("Connections", app, user)
        assert raw is not None
        assert not {"refresh_token", "access_token", "msal_cache"} & set(raw.data)
    # The bystander keeps working.
    assert world.token("oidc-demo", other).status_code == 200
    assert oidc_active(world, refresh_token(bystander))
    revoked = world.events(f"oidc-demo/{user}", "keysteward.credential.revoked")
    assert len(revoked) == 1
    done = world.events(f"revocation:{accepted['id']}", "keysteward.revocation.completed")
    assert len(done) == 1
    assert done[0]["data"]["total"] == 3
    assert [e.action for e in world.audit(f"oidc-demo/{user}", "credential.revoked")] == [
        "credential.revoked"
    ]
    assert world.audit(f"revocation:{accepted['id']}", "revocation.completed")


def test_revoke_everything_an_app_holds_from_the_queue(world: World) -> None:
    users = [f"rv-app-{i}@contoso.com" for i in range(3)]
    tokens = [refresh_token(connected(world, "oidc-demo", u)) for u in users]
    elsewhere = connected(world, "pagerduty-incidents", users[0])
    # What another service does: a JSON message, base64-encoded as host.json says.
    message = {"request_id": "hr-4711", "app": "oidc-demo", "reason": "client secret leaked",
               "requested_by": "security-scanner", "ticket": "SEC-99"}  # fmt: skip
    queue(world).send_message(encode_message(json.dumps(message)))
    result = finished(world, world.api("revocations/hr-4711"))
    assert result["status"] == "completed"
    assert {o["user_id"] for o in result["outcomes"]} >= set(users)
    for user, token in zip(users, tokens, strict=True):
        assert not oidc_active(world, token)
        assert world.token("oidc-demo", user).status_code == 410
    assert world.pagerduty.is_active(refresh_token(elsewhere))
    assert world.token("pagerduty-incidents", users[0]).status_code == 200


def test_revoke_what_a_user_holds_in_one_app_only(world: World) -> None:
    user = "rv-both@contoso.com"
    inside = connected(world, "oidc-demo", user)
    outside = connected(world, "pagerduty-incidents", user)
    result = finished(world, request(world, user_id=user, app="oidc-demo").json()["status_url"])
    assert [(o["app"], o["upstream"]) for o in result["outcomes"]] == [("oidc-demo", "revoked")]
    assert not oidc_active(world, refresh_token(inside))
    assert world.pagerduty.is_active(refresh_token(outside))
    assert world.token("pagerduty-incidents", user).status_code == 200


def test_a_key_revokes_only_what_its_globs_cover(world: World) -> None:
    key = world.key(["connections:revoke"], ["pagerduty-*/*"])
    assert request(world, key, app="oidc-demo").status_code == 403
    assert request(world, key, user_id="someone@contoso.com").status_code == 403
    assert request(world, key, app="oidc-demo", user_id="someone@contoso.com").status_code == 403
    assert request(world, key, app="pagerduty-incidents").status_code == 202
    no_scope = world.key(["connections:read"], ["*"])
    assert request(world, no_scope, app="pagerduty-incidents").status_code == 403


@pytest.mark.parametrize(
    ("body", "message"),
    [({}, "give 'user_id', 'app' or both"), ({"app": "x", "reason": ""}, "reason")],
)
def test_a_bad_request_is_a_clear_400(world: World, body: dict[str, str], message: str) -> None:
    response = world.call("POST", "revocations", json=body)
    assert response.status_code == 400
    assert message in response.json()["message"]


def test_delete_revokes_one_connection_synchronously(world: World) -> None:
    user = "rv-delete@contoso.com"
    connection = connected(world, "oidc-demo", user)
    response = world.call("DELETE", f"connections/oidc-demo/{user}")
    assert response.status_code == 200, response.text
    assert response.json()["upstream"] == "revoked"
    assert world.token("oidc-demo", user).status_code == 410
    assert not oidc_active(world, refresh_token(connection))
    again = world.call("DELETE", f"connections/oidc-demo/{user}")
    assert again.status_code == 200
    assert again.json()["local"] == "already_revoked"
    assert world.call("DELETE", "connections/oidc-demo/nobody@contoso.com").status_code == 404


def test_malformed_messages_are_audited_and_parked_without_retries(world: World) -> None:
    poison = queue(world, f"{QUEUE}-poison")
    poison.clear_messages()
    bodies = ["not json at all", json.dumps({"reason": "no target", "requested_by": "hr"})]
    for body in bodies:
        queue(world).send_message(encode_message(body))

    def parked() -> list[str]:
        found = [decode_message(m.content).decode() for m in poison.peek_messages(max_messages=32)]
        return found if len(found) >= 2 else []

    contents = wait_until(parked, timeout=30, what="malformed messages in the poison queue")
    assert sorted(contents) == sorted(bodies)
    malformed = world.audit_actions("revocation.malformed")
    assert len(malformed) >= 2


def test_the_same_message_twice_and_overlapping_requests_revoke_upstream_once(
    world: World,
) -> None:
    users = [f"rv-twice-{i}@contoso.com" for i in range(3)]
    tokens = [refresh_token(connected(world, "pagerduty-incidents", u)) for u in users]
    revokes_before = len(world.pagerduty.requests_to("/oauth/revoke"))
    message = json.dumps({"request_id": "dup-1", "user_id": users[0], "reason": "r",
                          "requested_by": "hr"})  # fmt: skip
    queue(world).send_message(encode_message(message))
    queue(world).send_message(encode_message(message))
    # And two different requests covering the other users, at the same time.
    with ThreadPoolExecutor(2) as pool:
        a, b = pool.map(lambda _: request(world, app="pagerduty-incidents"), range(2))
    first = finished(world, world.api("revocations/dup-1"))
    finished(world, a.json()["status_url"])
    finished(world, b.json()["status_url"])
    assert first["status"] == "completed"
    revoke_calls = world.pagerduty.requests_to("/oauth/revoke")[revokes_before:]
    by_token: dict[str, int] = {}
    for call in revoke_calls:
        by_token[call.form["token"]] = by_token.get(call.form["token"], 0) + 1
    for token in tokens:
        assert by_token.get(token) == 1, "each refresh token revoked upstream exactly once"
        assert not world.pagerduty.is_active(token)
    assert world.store.read(PendingRevocation, "pagerduty-incidents", users[0]) is None


def test_upstream_failures_are_kept_listed_and_retried_by_the_nightly_sweep(world: World) -> None:
    user = "rv-fail@contoso.com"
    connection = connected(world, "oidc-demo", user)
    world.oidc.fail_next("revocation", 503, count=3)
    result = finished(world, request(world, user_id=user, app="oidc-demo").json()["status_url"])
    assert result["status"] == "completed_with_failures"
    assert result["outcomes"][0]["upstream"] == "revoke_failed"
    assert world.token("oidc-demo", user).status_code == 410  # local copies are gone anyway
    listed = world.call("GET", "revocation-failures").json()["failures"]
    assert f"oidc-demo/{user}" in {f["credential"] for f in listed}
    assert oidc_active(world, refresh_token(connection))
    nightly = requests.post(f"{world.devhost.url}/admin/functions/expiry_sweep", json={},
                            timeout=60)  # fmt: skip
    assert nightly.status_code == 202
    assert not oidc_active(world, refresh_token(connection))
    listed = world.call("GET", "revocation-failures").json()["failures"]
    assert f"oidc-demo/{user}" not in {f["credential"] for f in listed}


def seed(world: World, app: str, count: int, prefix: str) -> list[str]:
    now = datetime.now(UTC)
    store = ConnectionStore(world.store)

    def one(i: int) -> str:
        user = f"{prefix}-{i:03d}@contoso.com"
        store.save_new_or_existing(Connection(
            app=app, user_id=user, provider="pagerduty", status=Status.ACTIVE,
            scopes=["incidents.read"], created_at=now, updated_at=now, connected_at=now,
            redirect_uri="https://k/cb", access_token=Secret(f"pdus+_0_{prefix}_{i}"),
            access_expires_at=now, refresh_token=Secret(f"pdus+_1_{prefix}_{i}"),
        ))  # fmt: skip
        return user

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(count)))


WORKER = """
import sys
from shared.lifecycle.revocation_requests import RevocationRequest
from shared.runtime import Runtime
from shared.config.settings import Settings
import os
runtime = Runtime.build(Settings.from_env(os.environ))
runtime.revoker._concurrency = 2
request = RevocationRequest.parse({"request_id": sys.argv[1], "app": "pagerduty-incidents",
                                   "reason": "load", "requested_by": "test"})
runtime.revoker.run(runtime.revoker.accept(request, owner="queue", fallback_id="x"))
"""


def test_two_hundred_connections_survive_a_worker_killed_half_way(
    world: World, tmp_path: Path
) -> None:
    users = seed(world, "pagerduty-incidents", 200, "rv-bulk")
    # The worker is the queue function's own code, in a process we can SIGKILL mid-way.
    worker = spawn([sys.executable, "-c", WORKER, "bulk-1"], env=world.env, cwd=ROOT,
                   log=tmp_path / "worker.log")  # fmt: skip

    def outcomes() -> int:
        rows = world.store.select(
            Outcome,
            "PartitionKey eq @pk and RowKey ne @r",
            {"pk": encode_key(storage_key(QUEUE_OWNER, "bulk-1")), "r": "request"},
        )
        return sum(1 for _ in rows)

    wait_until(lambda: outcomes() >= 40, timeout=60, what="the worker to be half-way")
    kill(worker)
    assert outcomes() < 200, "the worker finished before it was killed"
    # Redelivery: the same request again, through the queue as the host would redeliver it.
    message = {"request_id": "bulk-1", "app": "pagerduty-incidents", "reason": "load",
               "requested_by": "test"}  # fmt: skip
    queue(world).send_message(encode_message(json.dumps(message)))
    # Credentials the killed worker held wait out its lease (one upstream attempt) first.
    result = finished(world, world.api("revocations/bulk-1"), timeout=120)
    assert result["status"] == "completed"
    for user in users:
        row = world.connection("pagerduty-incidents", user)
        assert row.status == Status.REVOKED
        assert row.refresh_token is None
    left = list(world.store.select(PendingRevocation, "PartitionKey eq @a",
                                   {"a": "pagerduty-incidents"}))  # fmt: skip
    assert [p for p in left if p.user_id.startswith("rv-bulk")] == []
    # Other tests of this module's world post here too; only the tokens matter.
    revoked = {c.form.get("token") for c in world.pagerduty.requests_to("/oauth/revoke")}
    assert {f"pdus+_1_rv-bulk_{i}" for i in range(200)} <= revoked


SCHEMA = json.loads((ROOT / "docs" / "revocation-request.schema.json").read_text())


@pytest.mark.parametrize(
    "message",
    [
        {"user_id": "a@b.c", "reason": "r", "requested_by": "hr"},
        {"app": "x", "reason": "r", "requested_by": "hr", "extra": 1},
        {"request_id": "id-1", "app": "x", "user_id": "u", "reason": "r", "requested_by": "s"},
        {"reason": "r", "requested_by": "hr"},
        {"user_id": "a@b.c", "requested_by": "hr"},
        {"user_id": "a@b.c", "reason": "r"},
        {"request_id": "has space", "app": "x", "reason": "r", "requested_by": "s"},
        {"app": "", "reason": "r", "requested_by": "s"},
    ],
)
def test_the_documented_schema_and_the_worker_agree(message: dict[str, Any]) -> None:
    from jsonschema import Draft202012Validator

    from shared.foundation.errors import InputError
    from shared.lifecycle.revocation_requests import RevocationRequest

    valid = Draft202012Validator(SCHEMA).is_valid(message)
    try:
        RevocationRequest.parse(message)
    except InputError:
        accepted = False
    else:
        accepted = True
    assert accepted == valid


def test_a_request_outside_the_keys_globs_is_as_unknown_as_a_missing_one(world: World) -> None:
    accepted = request(world, app="oidc-demo", request_id="secret-affair")
    assert accepted.status_code == 202
    outsider = world.key(["connections:revoke"], ["pagerduty-*/*"])
    seen = world.call("GET", "revocations/secret-affair", outsider)
    missing = world.call("GET", "revocations/no-such-request", outsider)
    assert seen.status_code == missing.status_code == 404


def test_a_request_id_reused_for_another_target_is_a_conflict(world: World) -> None:
    assert request(world, app="oidc-demo", request_id="once-only").status_code == 202
    again = request(world, app="pagerduty-incidents", request_id="once-only")
    assert again.status_code == 409
