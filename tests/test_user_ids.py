"""One identity per user id, everywhere (issue 13, point 5): ids with leading or trailing
whitespace, control or formatting characters, or not in NFC are refused at every entry point;
every case of an id is the user first named, from connect to revocation; rows stored before
``UserIds`` stay reachable through the backfill, and ids that differed only by case are
reported, not merged."""

from __future__ import annotations

import json
import subprocess
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import pytest
import requests

from shared.access import globs
from shared.foundation.clock import SystemClock
from shared.foundation.errors import InputError
from shared.lifecycle.revocation_requests import QUEUE
from shared.lifecycle.user_ids import UserIds, check_user_id
from shared.storage.clients import decode_message, encode_message
from shared.storage.tables.connections import Connection, ConnectionStore, Status
from tests.peers.processes import ROOT, wait_until
from tests.peers.world import World
from tests.test_revocation import finished, queue

NFD = unicodedata.normalize("NFD", "josé@contoso.com")
BAD = {
    "trailing space": "alice@x ",
    "leading space": " alice@x",
    "trailing nbsp": "alice@x\u00a0",
    "zero-width space": "ali\u200bce@x",
    "line break": "alice\n@x",
    "not NFC": NFD,
}
WHY = {
    "trailing space": "whitespace", "leading space": "whitespace", "trailing nbsp": "whitespace",
    "zero-width space": "formatting", "line break": "control", "not NFC": "NFC",
}  # fmt: skip


def path(user_id: str) -> str:
    return quote(user_id, safe="@")


ENTRY_POINTS: dict[str, Any] = {
    "connect session": lambda w, u: w.call(
        "POST", "connect-sessions", json={"app": "oidc-demo", "user_id": u}
    ),
    "token": lambda w, u: w.call("GET", f"connections/oidc-demo/{path(u)}/token"),
    "connection": lambda w, u: w.call("GET", f"connections/oidc-demo/{path(u)}"),
    "connections list": lambda w, u: w.call("GET", "connections", params={"user_id": u}),
    "delete connection": lambda w, u: w.call("DELETE", f"connections/oidc-demo/{path(u)}"),
    "create PAT": lambda w, u: w.call(
        "POST", f"connections/ado-legacy/{path(u)}/pats", json={"display_name": "x", "scope": "s"}
    ),
    "list PATs": lambda w, u: w.call("GET", f"connections/ado-legacy/{path(u)}/pats"),
    "revocation": lambda w, u: w.call(
        "POST", "revocations", json={"user_id": u, "reason": "offboarding"}
    ),
}


def connect(world: World, app: str, user_id: str, account: str) -> None:
    response = world.connect(app, user_id, account=account)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("where", sorted(ENTRY_POINTS))
@pytest.mark.parametrize("what", sorted(BAD))
def test_a_malformed_user_id_is_a_400_at_every_entry_point(
    world: World, where: str, what: str
) -> None:
    response = ENTRY_POINTS[where](world, BAD[what])
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "invalid_request"
    assert WHY[what] in body["message"]
    assert BAD[what] not in body["message"]  # said what is wrong, without echoing the value


@pytest.mark.parametrize("what", sorted(BAD))
def test_the_check_refuses_and_never_strips(what: str) -> None:
    with pytest.raises(InputError):
        check_user_id(BAD[what])
    assert check_user_id("Alice@Contoso.com") == "Alice@Contoso.com"


def test_a_malformed_user_id_on_the_queue_is_audited_and_parked_at_once(world: World) -> None:
    poison = queue(world, f"{QUEUE}-poison")
    poison.clear_messages()
    body = json.dumps({"request_id": "ws-1", "user_id": "alice@x ", "reason": "r",
                       "requested_by": "hr"})  # fmt: skip
    queue(world).send_message(encode_message(body))

    def parked() -> list[str]:
        found = [decode_message(m.content).decode() for m in poison.peek_messages(max_messages=32)]
        return found if body in found else []

    wait_until(parked, timeout=30, what="the message in the poison queue")
    reasons = [str(e.detail["reason"]) for e in world.audit_actions("revocation.malformed")]
    assert any("whitespace" in reason for reason in reasons), reasons
    # Refused, not stripped into a request for "alice@x" that revokes nothing.
    assert world.call("GET", "revocations/ws-1").status_code == 404


def test_every_case_is_one_user_from_connect_to_revocation_over_http(world: World) -> None:
    connect(world, "oidc-demo", "Alice@Contoso.com", account="alice@contoso.com")
    assert world.token("oidc-demo", "alice@contoso.com").status_code == 200
    shown = world.call("GET", "connections/oidc-demo/aLiCe@contoso.com").json()
    assert shown["user_id"] == "Alice@Contoso.com"
    # A second link in another case reconnects the same connection: no second row.
    connect(world, "oidc-demo", "ALICE@contoso.com", account="alice@contoso.com")
    listed = world.call("GET", "connections", params={"user_id": "alice@contoso.COM"}).json()
    assert [c["user_id"] for c in listed["connections"]] == ["Alice@Contoso.com"]
    assert world.store.read(Connection, "oidc-demo", "ALICE@contoso.com") is None
    response = world.call("POST", "revocations",
                          json={"user_id": "alice@CONTOSO.com", "reason": "left"})  # fmt: skip
    assert response.status_code == 202, response.text
    result = finished(world, response.json()["status_url"])
    assert (result["total"], result["user_id"]) == (1, "Alice@Contoso.com")
    assert world.token("oidc-demo", "alice@contoso.com").status_code == 410


def test_every_case_is_one_user_over_the_revocation_queue(world: World) -> None:
    connect(world, "oidc-demo", "Carol@Contoso.com", account="carol@contoso.com")
    assert world.token("oidc-demo", "CAROL@contoso.com").status_code == 200
    message = {"request_id": "case-q-1", "user_id": "carol@CONTOSO.com", "reason": "left",
               "requested_by": "hr"}  # fmt: skip
    queue(world).send_message(encode_message(json.dumps(message)))
    result = finished(world, world.api("revocations/case-q-1"))
    assert (result["total"], result["user_id"]) == (1, "Carol@Contoso.com")
    assert world.token("oidc-demo", "carol@contoso.com").status_code == 410


def test_a_glob_naming_another_case_covers_the_user(world: World) -> None:
    connect(world, "oidc-demo", "Glob-User@Contoso.com", account="glob-user@contoso.com")
    key = world.key(["tokens:read"], ["*/glob-user@contoso.com"])
    other = world.key(["tokens:read"], ["*/glob-usr@contoso.com"])
    url = world.api("connections/oidc-demo/Glob-User@Contoso.com/token")
    assert requests.get(url, headers={"Authorization": f"Bearer {key}"}, timeout=60).ok
    refused = requests.get(url, headers={"Authorization": f"Bearer {other}"}, timeout=60)
    assert refused.status_code == 403
    assert globs.matches("*/GLOB-*@contoso.com", "oidc-demo", "glob-user@CONTOSO.com")


def test_a_glob_not_in_nfc_is_refused(world: World) -> None:
    response = world.call("POST", "keys", json={
        "name": "nfd", "scopes": ["tokens:read"], "resources": [f"*/{NFD}"],
    })  # fmt: skip
    assert response.status_code == 400, response.text
    assert "NFC" in response.json()["message"]
    with pytest.raises(InputError):
        globs.validate("*/ali\u200bce@x")


def test_two_first_links_in_different_cases_agree_on_one_form(world: World) -> None:
    racers = [UserIds(world.store, SystemClock()) for _ in range(2)]
    with ThreadPoolExecutor(2) as pool:
        forms = list(pool.map(lambda r: r[0].register(r[1]),
                              zip(racers, ["Race@x.com", "race@X.COM"], strict=True)))  # fmt: skip
    assert forms[0] == forms[1] in ("Race@x.com", "race@X.COM")


def old_row(world: World, user_id: str) -> None:
    """A connection and its index as stored before UserIds existed: no registration."""
    now = datetime.now(UTC)
    ConnectionStore(world.store).save_new_or_existing(Connection(
        app="oidc-demo", user_id=user_id, provider="oidc", status=Status.ACTIVE, scopes=[],
        created_at=now, updated_at=now, connected_at=now, redirect_uri="http://x/cb",
    ))  # fmt: skip


def shown(world: World, user_id: str) -> requests.Response:
    return world.call("GET", f"connections/oidc-demo/{path(user_id)}")


def test_old_rows_stay_reachable_and_case_collisions_are_reported_not_merged(
    world: World,
) -> None:
    for user_id in ("Old-Row@Contoso.com", "Clash@Contoso.com", "clash@contoso.com",
                    "Spacey@Contoso.com ", "ctl\x01@contoso.com"):  # fmt: skip
        old_row(world, user_id)
    assert shown(world, "Old-Row@Contoso.com").status_code == 200  # exact case, before
    assert shown(world, "old-row@contoso.com").status_code == 404
    report = UserIds(world.store, SystemClock()).backfill().public()
    assert report["collisions"] == [{"kept": "Clash@Contoso.com", "shadowed": "clash@contoso.com"}]
    assert report["respelled"] == ["Spacey@Contoso.com "]
    assert report["unreachable"] == ["ctl\x01@contoso.com"]
    assert shown(world, "old-row@contoso.com").json()["user_id"] == "Old-Row@Contoso.com"
    assert shown(world, "spacey@contoso.com").json()["user_id"] == "Spacey@Contoso.com "
    # Not merged: both rows stay, the other case resolves to the one kept, and revoking the
    # user reaches both.
    assert world.store.read(Connection, "oidc-demo", "clash@contoso.com") is not None
    assert shown(world, "clash@contoso.com").json()["user_id"] == "Clash@Contoso.com"
    response = world.call("POST", "revocations", json={"user_id": "CLASH@contoso.com",
                                                       "reason": "left"})  # fmt: skip
    assert finished(world, response.json()["status_url"])["total"] == 2
    # The marker: a second run (here the admin CLI's) reads it and does nothing, so a row
    # stored later stays unknown.
    old_row(world, "Late-Row@Contoso.com")
    again = subprocess.run([str(ROOT / "keysteward"), "migrate-user-ids", "--json"],
                           env=world.env, cwd=ROOT, capture_output=True, text=True, timeout=120,
                           check=False)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["done_before"] is True
    assert shown(world, "late-row@contoso.com").status_code == 404


@pytest.mark.parametrize("user_id", ["alice@x ", " alice@x", "alice@x\u00a0", "a\tb", "alice@x"])
def test_the_documented_schema_and_the_worker_agree_on_user_ids(user_id: str) -> None:
    from jsonschema import Draft202012Validator

    from shared.lifecycle.revocation_requests import RevocationRequest
    from tests.test_revocation import SCHEMA

    message = {"user_id": user_id, "reason": "r", "requested_by": "hr"}
    valid = Draft202012Validator(SCHEMA).is_valid(message)
    try:
        RevocationRequest.parse(message)
    except InputError:
        accepted = False
    else:
        accepted = True
    assert accepted == valid == (user_id == "alice@x")
