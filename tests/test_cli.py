"""The ``./keysteward`` admin CLI, run as a real subprocess with the app's settings.

Most tests run the CLI alone against an emptied Azurite and check the result in-process through
``ApiKeys``; the last one uses a CLI-made ``keys:admin`` key over HTTP against a running devhost.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.data.tables import TableServiceClient

from shared.access.api_keys import ApiKeys, Principal, parse
from shared.access.key_requests import SCOPES, NewKey
from shared.foundation.clock import SystemClock
from shared.foundation.errors import NotFound, Unauthorized
from shared.storage.store import Store
from shared.storage.tables.api_keys import ApiKey
from shared.storage.tables.misconfigured_apps import MisconfiguredApp
from shared.trail.audit import AuditLog
from tests.peers.processes import ROOT, free_port
from tests.peers.world import World

KEY = re.compile(r"ks_[a-z2-7]{12}_[0-9A-Za-z]{49}")
VERBS = ("create", "list", "regenerate", "update", "delete")

# --- helpers ---------------------------------------------------------------------------------


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROOT / "keysteward"), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def ok(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = run(env, *args)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return done


def ok_json(env: dict[str, str], *args: str) -> dict[str, Any]:
    data = json.loads(ok(env, *args, "--json").stdout)
    assert isinstance(data, dict)
    return data


def failed(done: subprocess.CompletedProcess[str], message: str) -> None:
    """A clean refusal: non-zero, the message on stderr, nothing on stdout, no traceback."""
    assert done.returncode != 0
    assert message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


def service(store: Store) -> ApiKeys:
    """A fresh instance (an empty verification cache), as another process would have."""
    return ApiKeys(store, AuditLog(store, SystemClock()), SystemClock())


def verify(store: Store, raw: str) -> Principal:
    return service(store).verify(f"Bearer {raw}")


def dead(store: Store, raw: str) -> bool:
    try:
        verify(store, raw)
    except Unauthorized:
        return True
    return False


def made(store: Store, scopes: Sequence[str] = ("tokens:read",), name: str = "made") -> ApiKey:
    return service(store).create(
        NewKey(name=name, scopes=list(scopes), resources=["*"]), actor="test"
    )[0]


def everything_stored(store: Store) -> str:
    """Every row of the key and audit tables, as text (to look for secrets in)."""
    rows = [*store.query("ApiKeys", "PartitionKey ne @x", {"x": ""})]
    rows += [*store.query("Audit", "PartitionKey ne @x", {"x": ""})]
    return repr([row.data for row in rows])


def audit_of(store: Store, key_id: str) -> list[tuple[str, str]]:
    since = datetime.now(UTC) - timedelta(hours=1)
    entries = AuditLog(store, SystemClock()).read(since, subject=f"key:{key_id}")
    return [(e.actor, e.action) for e in entries]


@pytest.fixture
def empty(tables: TableServiceClient, store: Store) -> Store:
    """A store on an Azurite with no tables at all (the ``tables`` fixture empties it again)."""
    for table in list(tables.list_tables()):
        tables.delete_table(table.name)
    assert list(tables.list_tables()) == []
    return store


# --- help ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "mentions"),
    [
        ((), ["keys", "--env-file"]),
        (("keys",), list(VERBS)),
        (("keys", "create"), ["--name", "--scope", "--resource", "--days", "--owner", "--json",
                              "365", *SCOPES]),
        (("keys", "list"), ["--json"]),
        (("keys", "regenerate"), ["id", "--json"]),
        (("keys", "update"), ["id", "--name", "--resource", "--json"]),
        (("keys", "delete"), ["id", "--json"]),
    ],
    ids=["top", "keys", *VERBS],
)  # fmt: skip
def test_help_on_every_level(app_env: dict[str, str], args: tuple[str, ...],
                             mentions: list[str]) -> None:  # fmt: skip
    done = ok(app_env, *args, "--help")
    assert done.stdout.startswith(f"usage: keysteward {' '.join(args)}".rstrip())
    for word in mentions:
        assert word in done.stdout, word


# --- bootstrap and each verb -----------------------------------------------------------------


def test_bootstraps_the_first_admin_key_on_an_empty_store(
    app_env: dict[str, str], empty: Store
) -> None:
    before = datetime.now(UTC)
    created = ok_json(
        app_env, "keys", "create", "--name", "bootstrap", "--all", "--days", "30",
        "--owner", "ops@contoso.com",
    )  # fmt: skip
    assert {"id", "key", "expires_at", "scopes", "resources"} <= set(created)
    assert (created["name"], created["owner"]) == ("bootstrap", "ops@contoso.com")
    # A '*' key: a key can hand on only what it holds, so the bootstrap key holds everything.
    assert (created["scopes"], created["resources"]) == (list(SCOPES), ["*"])
    expires = datetime.fromisoformat(created["expires_at"])
    assert before + timedelta(days=30) <= expires <= datetime.now(UTC) + timedelta(days=30)

    principal = verify(empty, created["key"])
    assert principal.key_id == created["id"]
    assert principal.scopes == set(SCOPES)
    assert principal.resources == ("*",)
    assert [k.id for k in service(empty).list()] == [created["id"]]
    [(actor, action)] = audit_of(empty, created["id"])
    assert (action, actor.startswith("cli:")) == ("apikey.created", True)
    stored = everything_stored(empty)
    secret = parse(created["key"])
    assert secret is not None
    assert created["key"] not in stored
    assert secret[1] not in stored


def test_create_prints_for_people_by_default(app_env: dict[str, str], empty: Store) -> None:
    out = ok(
        app_env, "keys", "create", "--name", "deploy bot", "--scope", "connections:read",
        "--scope", "tokens:read", "--resource", "pagerduty-*/*", "--resource", "*/a@contoso.com",
        "--days", "7",
    ).stdout  # fmt: skip
    with pytest.raises(json.JSONDecodeError):
        json.loads(out)
    [raw] = KEY.findall(out)
    principal = verify(empty, raw)
    assert principal.scopes == {"connections:read", "tokens:read"}
    assert principal.resources == ("pagerduty-*/*", "*/a@contoso.com")
    for text in ("deploy bot", principal.key_id, "connections:read, tokens:read",
                 "pagerduty-*/*, */a@contoso.com", "only time"):  # fmt: skip
        assert text in out, text


def test_list_for_people_and_for_scripts_without_secrets(
    app_env: dict[str, str], empty: Store
) -> None:
    assert ok(app_env, "keys", "list").stdout.strip() == "no API keys"
    assert ok_json(app_env, "keys", "list") == {"keys": []}
    raws = [
        ok_json(app_env, "keys", "create", "--name", f"key {n}", "--scope", "audit:read",
                "--resource", "*")["key"]
        for n in range(2)
    ]  # fmt: skip
    human = ok(app_env, "keys", "list").stdout
    header, *lines = human.strip().splitlines()
    assert header.split() == ["ID", "NAME", "SCOPES", "RESOURCES", "EXPIRES", "LAST", "USED"]
    ids = [k.id for k in service(empty).list()]
    assert [line.split()[0] for line in lines] == ids
    listed = ok_json(app_env, "keys", "list")["keys"]
    assert [k["id"] for k in listed] == ids
    for key in listed:
        assert "key" not in key
        assert "secret_hash" not in key
    for raw in raws:
        secret = parse(raw)
        assert secret is not None
        for text in (human, json.dumps(listed)):
            assert secret[1] not in text
            assert raw not in text


def test_regenerate_gives_a_new_secret_and_kills_the_old(
    app_env: dict[str, str], empty: Store
) -> None:
    created = ok_json(
        app_env, "keys", "create", "--name", "rotating", "--scope", "connections:read",
        "--resource", "oidc-demo/*", "--days", "10",
    )  # fmt: skip
    verify(empty, created["key"])
    again = ok_json(app_env, "keys", "regenerate", created["id"])
    assert again["key"] != created["key"]
    same = ("id", "scopes", "resources", "expires_at")
    assert {f: again[f] for f in same} == {f: created[f] for f in same}
    assert dead(empty, created["key"])
    assert verify(empty, again["key"]).key_id == created["id"]

    human = ok(app_env, "keys", "regenerate", created["id"]).stdout
    [newest] = KEY.findall(human)
    assert "only time" in human
    assert dead(empty, again["key"])
    assert verify(empty, newest).key_id == created["id"]
    assert [a for _, a in audit_of(empty, created["id"])] == [
        "apikey.created",
        "apikey.regenerated",
        "apikey.regenerated",
    ]


def test_update_changes_name_and_globs_only(app_env: dict[str, str], empty: Store) -> None:
    key = made(empty, ["connections:read"], name="before")
    updated = ok_json(
        app_env, "keys", "update", key.id, "--name", "after",
        "--resource", "pagerduty-*/*", "--resource", "*/bob@contoso.com",
    )  # fmt: skip
    assert (updated["name"], updated["resources"]) == (
        "after", ["pagerduty-*/*", "*/bob@contoso.com"],
    )  # fmt: skip
    assert "key" not in updated
    stored = service(empty).get(key.id)
    assert (stored.name, stored.resources, stored.scopes) == (
        "after", ["pagerduty-*/*", "*/bob@contoso.com"], ["connections:read"],
    )  # fmt: skip
    human = ok(app_env, "keys", "update", key.id, "--name", "renamed").stdout
    assert "renamed" in human
    assert key.id in human
    assert service(empty).get(key.id).resources == ["pagerduty-*/*", "*/bob@contoso.com"]


def test_delete_stops_the_key(app_env: dict[str, str], empty: Store) -> None:
    created = ok_json(
        app_env, "keys", "create", "--name", "doomed", "--scope", "tokens:read", "--resource", "*"
    )
    out = ok(app_env, "keys", "delete", created["id"]).stdout
    assert f"deleted API key {created['id']}" in out
    assert dead(empty, created["key"])
    with pytest.raises(NotFound):
        service(empty).get(created["id"])
    other = made(empty)
    assert ok_json(app_env, "keys", "delete", other.id) == {"deleted": other.id}
    assert service(empty).list() == []
    actions = [audit_of(empty, k) for k in (created["id"], other.id)]
    assert [[a for _, a in trail] for trail in actions] == [
        ["apikey.created", "apikey.deleted"],
        ["apikey.created", "apikey.deleted"],
    ]
    assert all(actor.startswith("cli:") for actor, _ in actions[0])


# --- refusals --------------------------------------------------------------------------------

CREATE = ("keys", "create", "--name", "refused", "--scope", "tokens:read", "--resource", "*")
REFUSALS: dict[str, tuple[tuple[str, ...], str]] = {
    "366-days": ((*CREATE, "--days", "366"), "from 1 to 365"),
    "0-days": ((*CREATE, "--days", "0"), "from 1 to 365"),
    "days-not-a-number": ((*CREATE, "--days", "soon"), "invalid int value"),
    "unknown-scope": ((*CREATE, "--scope", "tokens:write"), "invalid choice: 'tokens:write'"),
    "malformed-glob": ((*CREATE, "--resource", "No-Slash"), "malformed resource glob"),
    "oversized-name": ((*CREATE, "--name", "x" * 101), "at most 100 characters"),
    "no-scope": (("keys", "create", "--name", "n", "--resource", "*"), "--scope"),
    "all-and-scope": ((*CREATE, "--all"), "either --all"),
    "nothing-granted": (("keys", "create", "--name", "n"), "either --all"),
    "regenerate-unknown-id": (("keys", "regenerate", "abcdefghijkl"), "no API key with id"),
    "update-unknown-id": (("keys", "update", "abcdefghijkl", "--name", "n"), "no API key with id"),
    "delete-unknown-id": (("keys", "delete", "abcdefghijkl"), "no API key with id"),
    "delete-malformed-id": (("keys", "delete", "../../etc"), "no API key with id"),
    "update-nothing": (("keys", "update", "{id}"), "nothing to change"),
    "update-scope": (("keys", "update", "{id}", "--scope", "keys:admin"), "--scope"),
    "update-malformed-glob": (("keys", "update", "{id}", "--resource", "x"),
                              "malformed resource glob"),
    "no-verb": (("keys",), "required"),
}  # fmt: skip


@pytest.mark.parametrize("case", REFUSALS)
def test_errors_exit_non_zero_with_a_clear_message(
    app_env: dict[str, str], empty: Store, case: str
) -> None:
    existing = made(empty, name="existing")
    args, message = REFUSALS[case]
    failed(run(app_env, *(a.replace("{id}", existing.id) for a in args)), message)
    assert [(k.id, k.name, k.resources) for k in service(empty).list()] == [
        (existing.id, "existing", ["*"])
    ]  # nothing made, nothing changed


def test_errors_in_json_mode_are_json_on_stderr(app_env: dict[str, str], empty: Store) -> None:
    done = run(app_env, *CREATE, "--days", "366", "--json")
    assert done.returncode == 1
    assert done.stdout == ""
    error = json.loads(done.stderr)
    assert error["error"] == "invalid_request"
    assert "365" in error["message"]


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("KEYSTEWARD_ENCRYPTION_KEYS", None),
        ("KEYSTEWARD_ENCRYPTION_KEYS", "not-a-key-ring"),
        ("AzureWebJobsStorage", None),
        ("KEYSTEWARD_PUBLIC_URL", None),
    ],
    ids=["no-key-ring", "malformed-key-ring", "no-storage", "no-public-url"],
)
def test_missing_settings_are_named(
    app_env: dict[str, str], setting: str, value: str | None
) -> None:
    env = {k: v for k, v in app_env.items() if k != setting}
    if value is not None:
        env[setting] = value
    for args in (("keys", "list"), CREATE):
        failed(run(env, *args), setting)


def test_unreachable_storage_is_a_clean_error(app_env: dict[str, str]) -> None:
    port = free_port()
    storage = re.sub(r"127\.0\.0\.1:\d+", f"127.0.0.1:{port}", app_env["AzureWebJobsStorage"])
    failed(run({**app_env, "AzureWebJobsStorage": storage}, "keys", "list"), "did not answer")


def test_settings_from_an_env_file(app_env: dict[str, str], empty: Store, tmp_path: Path) -> None:
    names = ("AzureWebJobsStorage", "KEYSTEWARD_ENCRYPTION_KEYS", "KEYSTEWARD_PUBLIC_URL")
    env_file = tmp_path / "keysteward.env"
    env_file.write_text(
        "# the app's settings\n\n"
        + "".join(f"export {n}='{app_env[n]}'\n" for n in names)
    )  # fmt: skip
    bare = {k: v for k, v in app_env.items() if k not in names}
    created = ok_json(bare, "--env-file", str(env_file), *CREATE)
    assert verify(empty, created["key"]).key_id == created["id"]
    failed(run(bare, "--env-file", str(tmp_path / "missing.env"), "keys", "list"), "missing.env")
    env_file.write_text("no equals sign here\n")
    failed(run(bare, "--env-file", str(env_file), "keys", "list"), "expected NAME=VALUE")


# --- with the app: runs last, after the emptied-store tests ----------------------------------


def test_a_cli_made_admin_key_works_over_http(app_env: dict[str, str], world: World) -> None:
    admin = ok_json(app_env, "keys", "create", "--name", "cli admin", "--all", "--days", "1")

    def call(method: str, path: str, key: str, **kwargs: Any) -> Any:
        return world.call(method, path, headers={"Authorization": f"Bearer {key}"}, **kwargs)

    listed = call("GET", "keys", admin["key"])
    assert listed.status_code == 200, listed.text
    assert admin["id"] in {k["id"] for k in listed.json()["keys"]}
    made_over_http = call(
        "POST", "keys", admin["key"],
        json={"name": "via http", "scopes": ["audit:read"], "resources": ["*"],
              "expires_in_days": 1},
    )  # fmt: skip
    assert made_over_http.status_code == 201, made_over_http.text
    child = made_over_http.json()
    [entry] = [k for k in ok_json(app_env, "keys", "list")["keys"] if k["id"] == child["id"]]
    assert entry["created_by"] == f"key:{admin['id']}"

    # The app never verified the child's first secret, so the CLI's regeneration shows at once.
    regenerated = ok_json(app_env, "keys", "regenerate", child["id"])
    assert call("GET", "audit?limit=1", regenerated["key"]).status_code == 200
    assert call("GET", "audit?limit=1", child["key"]).status_code == 401
    ok(app_env, "keys", "delete", child["id"])
    assert call("GET", f"keys/{child['id']}", admin["key"]).status_code == 404

    narrow = ok_json(app_env, *CREATE)
    assert call("GET", "keys", narrow["key"]).status_code == 403
    ok(app_env, "keys", "delete", narrow["id"])


def test_status_shows_connections_pats_and_keys(world: World) -> None:
    """`./keysteward status`: a table for people, JSON for scripts."""
    assert world.connect("oidc-demo", "status-user@contoso.com").status_code == 200
    env = world.env
    table = subprocess.run([str(ROOT / "keysteward"), "status"], env=env, cwd=ROOT,
                           capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert table.returncode == 0, table.stderr
    assert "oidc-demo/status-user@contoso.com" in table.stdout
    assert "KIND" in table.stdout
    assert "\033[" not in table.stdout  # no colour when not on a terminal
    as_json = subprocess.run([str(ROOT / "keysteward"), "status", "--json"], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    data = json.loads(as_json.stdout)
    assert set(data) == {"connections", "managed_pats", "api_keys", "revocation_failures",
                         "misconfigured_apps"}  # fmt: skip
    mine = [c for c in data["connections"] if c["resource"] == "oidc-demo/status-user@contoso.com"]
    assert mine[0]["status"] == "active"
    assert mine[0]["days_left"] is not None
    assert any(k["name"] == "admin" for k in data["api_keys"])


def test_status_shows_misconfigured_apps(world: World) -> None:
    """An app a provider refuses outright is listed, with its code and since when."""
    since = datetime.now(UTC)
    mark = MisconfiguredApp(
        app="entra-demo", error="invalid_client", since=since, provider_code="AADSTS7000215"
    )
    world.store.create(mark)
    command = [str(ROOT / "keysteward"), "status"]
    run = {"env": world.env, "cwd": ROOT, "capture_output": True, "text": True, "timeout": 120}
    try:
        table = subprocess.run(command, **run, check=False)  # type: ignore[call-overload]
        as_json = subprocess.run([*command, "--json"], **run, check=False)  # type: ignore[call-overload]

    finally:
        world.store.remove(mark)
    assert table.returncode == 0, table.stderr
    line = next(row for row in table.stdout.splitlines() if row.startswith("app "))
    assert "entra-demo (invalid_client, AADSTS7000215 since" in line
    assert "misconfigured" in line
    [listed] = json.loads(as_json.stdout)["misconfigured_apps"]
    assert listed["since"][:19] == since.isoformat()[:19]
    assert {k: v for k, v in listed.items() if k != "since"} == {
        "app": "entra-demo", "error": "invalid_client", "provider_code": "AADSTS7000215"
    }  # fmt: skip
