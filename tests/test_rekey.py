"""Rotating the encryption key: a new primary, `./keysteward rekey`, then the old key can go."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from datetime import UTC, datetime

from azure.data.tables import TableServiceClient

from shared.foundation.secret import Secret
from shared.lifecycle.rekey import _reseal
from shared.storage.crypto import KeyRing, kid_of
from shared.storage.store import Store
from shared.storage.tables.connections import Connection, ConnectionStore, Status
from tests.peers.processes import ROOT


def spec(keys: list[tuple[str, bytes]]) -> str:
    return ",".join(f"{kid}:{base64.b64encode(key).decode()}" for kid, key in keys)


def test_rekey_moves_every_secret_to_the_new_key(
    tables: TableServiceClient, app_env: dict[str, str]
) -> None:
    old, new = ("old", os.urandom(32)), ("new", os.urandom(32))
    before = Store(tables, KeyRing([old]))
    now = datetime.now(UTC)
    for i in range(5):
        ConnectionStore(before).save_new_or_existing(Connection(
            app="demo", user_id=f"u{i}", provider="oidc", status=Status.ACTIVE, scopes=[],
            created_at=now, updated_at=now, connected_at=now, redirect_uri="https://k/cb",
            refresh_token=Secret(f"rt-{i}"), access_token=Secret(f"at-{i}"),
        ))  # fmt: skip
    env = {**app_env, "KEYSTEWARD_ENCRYPTION_KEYS": spec([new, old])}

    def cli(*args: str) -> dict[str, object]:
        done = subprocess.run([str(ROOT / "keysteward"), *args, "--json"], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr
        result: dict[str, object] = json.loads(done.stdout)
        return result

    assert cli("rekey", "--dry-run")["still_under_old_keys"] == {"old": 10}
    assert cli("rekey")["resealed"] == {"Connections": 5, "Pats": 0, "OAuthStates": 0,
                                        "PendingRevocations": 0}  # fmt: skip
    assert cli("rekey", "--dry-run")["still_under_old_keys"] == {}
    after = Store(tables, KeyRing([new]))  # the old key removed from the ring
    for i in range(5):
        row = after.get("Connections", "demo", f"u{i}")
        assert row is not None
        assert kid_of(row.data["refresh_token"]) == "new"
        connection = after.read(Connection, "demo", f"u{i}")
        assert connection is not None
        assert connection.refresh_token is not None
        assert connection.refresh_token.reveal() == f"rt-{i}"


def test_rekey_covers_every_table_with_a_sealed_field() -> None:
    import dataclasses
    import typing

    from shared.storage import tables

    def has_secret(cls: type) -> bool:
        hints = typing.get_type_hints(cls)
        return any("Secret" in str(hints[f.name]) for f in dataclasses.fields(cls))

    with_secrets = {cls for cls in tables.TABLES if has_secret(cls)}
    assert with_secrets, "the check found no sealed field at all"
    assert with_secrets == set(tables.SEALED)
    # Every entity class in shared/storage/tables is listed in TABLES, so none can be missed.
    import importlib
    import pkgutil

    from shared.storage.entities import Entity

    defined = set()
    for info in pkgutil.iter_modules(tables.__path__):
        module = importlib.import_module(f"shared.storage.tables.{info.name}")
        defined |= {
            obj for obj in vars(module).values()
            if isinstance(obj, type) and issubclass(obj, Entity) and obj is not Entity
            and obj.__module__ == module.__name__
        }  # fmt: skip
    assert defined == set(tables.TABLES)


def test_a_row_changed_while_being_resealed_is_read_again_not_overwritten(
    tables: TableServiceClient,
) -> None:
    old, new = ("old", os.urandom(32)), ("new", os.urandom(32))
    before = Store(tables, KeyRing([old]))
    now = datetime.now(UTC)
    ConnectionStore(before).save_new_or_existing(Connection(
        app="race", user_id="u", provider="oidc", status=Status.ACTIVE, scopes=[],
        created_at=now, updated_at=now, connected_at=now, redirect_uri="https://k/cb",
        refresh_token=Secret("rt-first"),
    ))  # fmt: skip
    store = Store(tables, KeyRing([new, old]))
    stale = store.read(Connection, "race", "u")
    assert stale is not None
    # Another writer (a refresh) lands between rekey's read and its write, still under the old
    # key: rekey's write loses the race and must not put back what it read.
    moved_on = before.read(Connection, "race", "u")
    assert moved_on is not None
    moved_on.refresh_token = Secret("rt-rotated")
    before.save(moved_on)
    assert _reseal(store, stale, KeyRing([new, old])) is True
    after = Store(tables, KeyRing([new])).read(Connection, "race", "u")
    assert after is not None
    assert after.refresh_token is not None
    assert after.refresh_token.reveal() == "rt-rotated"
