from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime, timedelta

import pytest

from shared.access import api_keys as apikeys
from shared.access import globs
from shared.access.api_keys import CACHE_SECONDS, ApiKeys, parse
from shared.access.key_requests import KeyChange, NewKey
from shared.foundation.clock import FixedClock
from shared.foundation.errors import Forbidden, InputError, NotFound, Unauthorized
from shared.storage.store import Store
from shared.storage.tables.api_keys import ApiKey
from shared.trail.audit import AuditLog

START = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START)


@pytest.fixture
def keys(store: Store, clock: FixedClock) -> ApiKeys:
    return ApiKeys(store, AuditLog(store, clock), clock)


def make(keys: ApiKeys, **overrides: object) -> tuple[ApiKey, str]:
    args: dict[str, object] = {
        "name": "deploy-bot",
        "scopes": ["tokens:read"],
        "resources": ["pagerduty-*/*"],
    }
    args.update(overrides)
    actor = str(args.pop("actor", "test"))
    # Parsed as a JSON body would be, so a test can hand it any value a caller could send.
    return keys.create(NewKey.parse(args), actor=actor)


def bearer(key: str) -> str:
    return f"Bearer {key}"


def test_key_format_is_recognisable_and_carries_256_bits(keys: ApiKeys) -> None:
    key, raw = make(keys)
    assert raw.startswith("ks_")
    key_id, secret = parse(raw) or ("", "")
    assert key_id == key.id
    assert len(secret) * math.log2(62) >= 256
    tampered = raw[:-1] + ("A" if raw[-1] != "A" else "B")
    assert parse(tampered) is None  # the checksum catches a typo or a random look-alike


def test_only_a_hash_is_stored_and_the_key_is_shown_once(keys: ApiKeys, store: Store) -> None:
    key, raw = make(keys)
    _, secret = parse(raw) or ("", "")
    row = store.get("ApiKeys", "apikey", key.id)
    assert row is not None
    assert secret not in repr(row.data)
    assert row.data["secret_hash"] == hashlib.sha256(secret.encode()).hexdigest()
    for shown in (keys.get(key.id).public(), *[k.public() for k in keys.list()]):
        assert "key" not in shown
        assert "secret_hash" not in shown
        assert secret not in repr(shown)


def test_a_valid_key_verifies_to_its_scopes_and_globs(keys: ApiKeys) -> None:
    key, raw = make(keys, scopes=["tokens:read", "connections:read"])
    principal = keys.verify(bearer(raw))
    assert principal.key_id == key.id
    assert principal.scopes == {"tokens:read", "connections:read"}
    principal.require_resource("tokens:read", "pagerduty-incidents", "alice@contoso.com")
    with pytest.raises(Forbidden, match="scope"):
        principal.require("keys:admin")
    with pytest.raises(Forbidden, match="resources"):
        principal.require_resource("tokens:read", "github", "alice@contoso.com")


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Basic a3NfYWJj",
        "Bearer ks_",
        "Bearer not-a-key",
        "Bearer ks_aaaaaaaaaaaa_" + "A" * 49,  # well-shaped, wrong checksum
    ],
)
def test_missing_and_malformed_keys_are_unauthorized(keys: ApiKeys, header: str | None) -> None:
    with pytest.raises(Unauthorized) as caught:
        keys.verify(header)
    assert caught.value.message == apikeys._UNAUTHORIZED


def test_an_unknown_well_formed_key_is_unauthorized_with_the_same_message(keys: ApiKeys) -> None:
    raw = apikeys._format("abcdefghijkl", "x" * 43)
    with pytest.raises(Unauthorized) as caught:
        keys.verify(bearer(raw))
    assert caught.value.message == apikeys._UNAUTHORIZED


def test_a_right_id_with_a_wrong_secret_is_unauthorized(keys: ApiKeys) -> None:
    key, _ = make(keys)
    with pytest.raises(Unauthorized):
        keys.verify(bearer(apikeys._format(key.id, "y" * 43)))


def test_expiry_is_one_to_365_days_defaulting_to_365(keys: ApiKeys, clock: FixedClock) -> None:
    assert make(keys)[0].expires_at == START + timedelta(days=365)
    assert make(keys, expires_in_days=1)[0].expires_at == START + timedelta(days=1)
    for bad in (0, 366, -1, True, "30", 1.5, None):
        with pytest.raises(InputError, match="expires_in_days"):
            make(keys, expires_in_days=bad)


def test_an_expired_key_is_unauthorized(keys: ApiKeys, clock: FixedClock) -> None:
    _, raw = make(keys, expires_in_days=1)
    keys.verify(bearer(raw))
    clock.advance(timedelta(days=1))
    with pytest.raises(Unauthorized):
        keys.verify(bearer(raw))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("scopes", ["tokens:write"], "unknown scope"),
        ("scopes", [], "scopes"),
        ("scopes", "tokens:read", "scopes"),
        ("resources", [], "resources"),
        ("resources", ["no-slash"], "malformed resource glob"),
        ("resources", ["UPPER/*"], "malformed resource glob"),
        ("resources", ["app/"], "malformed resource glob"),
        ("name", "", "name"),
        ("name", "x" * 101, "name"),
        ("name", "tab\there", "name"),
        ("owner", "o" * 201, "owner"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(
    keys: ApiKeys, store: Store, field: str, value: object, message: str
) -> None:
    with pytest.raises(InputError, match=message):
        make(keys, **{field: value})
    assert keys.list() == []  # nothing half-written


def test_regenerate_keeps_scopes_globs_and_expiry_and_kills_the_old_secret(
    keys: ApiKeys, clock: FixedClock
) -> None:
    key, old = make(keys, expires_in_days=30)
    clock.advance(timedelta(days=3))
    again, new = keys.regenerate(key.id, actor="test")
    assert (again.scopes, again.resources, again.expires_at) == (
        key.scopes,
        key.resources,
        key.expires_at,
    )
    assert new != old
    with pytest.raises(Unauthorized):
        keys.verify(bearer(old))
    assert keys.verify(bearer(new)).key_id == key.id


def test_update_changes_name_and_globs_but_refuses_scopes(keys: ApiKeys) -> None:
    key, raw = make(keys)
    keys.verify(bearer(raw))
    updated = keys.update(
        key.id, KeyChange.parse({"name": "renamed", "resources": ["*/bob"]}), actor="test"
    )
    assert (updated.name, updated.resources) == ("renamed", ["*/bob"])
    assert keys.verify(bearer(raw)).resources == ("*/bob",)  # the writer's cache is refreshed
    with pytest.raises(InputError, match="scopes of a key cannot be changed"):
        keys.update(key.id, KeyChange.parse({"scopes": ["keys:admin"]}), actor="test")
    with pytest.raises(InputError, match="only 'name' and 'resources'"):
        keys.update(key.id, KeyChange.parse({"expires_in_days": 365}), actor="test")
    assert keys.get(key.id).scopes == ["tokens:read"]


def test_delete_stops_the_key_at_once_and_cannot_be_undone(keys: ApiKeys) -> None:
    key, raw = make(keys)
    keys.verify(bearer(raw))
    keys.delete(key.id, actor="test")
    with pytest.raises(Unauthorized):
        keys.verify(bearer(raw))
    with pytest.raises(NotFound):
        keys.get(key.id)
    with pytest.raises(NotFound):
        keys.regenerate(key.id, actor="test")


def test_another_instance_stops_accepting_a_deleted_or_regenerated_key_within_the_bound(
    store: Store, clock: FixedClock
) -> None:
    writer = ApiKeys(store, AuditLog(store, clock), clock)
    reader = ApiKeys(store, AuditLog(store, clock), clock)  # another instance, its own cache
    deleted, deleted_raw = make(writer)
    regenerated, regenerated_raw = make(writer, name="regenerated")
    for raw in (deleted_raw, regenerated_raw):
        reader.verify(bearer(raw))  # now cached by the reader
    writer.delete(deleted.id, actor="test")
    writer.regenerate(regenerated.id, actor="test")
    clock.advance(timedelta(seconds=CACHE_SECONDS - 1))
    assert CACHE_SECONDS <= 30
    for raw in (deleted_raw, regenerated_raw):
        reader.verify(bearer(raw))  # inside the documented bound a cached verdict may stand
    clock.advance(timedelta(seconds=1))
    for raw in (deleted_raw, regenerated_raw):
        with pytest.raises(Unauthorized):
            reader.verify(bearer(raw))


def test_last_used_is_recorded_without_a_write_per_call(keys: ApiKeys, clock: FixedClock) -> None:
    key, raw = make(keys)
    assert keys.get(key.id).last_used_at is None
    keys.verify(bearer(raw))
    first = keys.get(key.id).last_used_at
    assert first == START
    clock.advance(timedelta(minutes=1))
    keys.verify(bearer(raw))
    assert keys.get(key.id).last_used_at == START
    clock.advance(timedelta(minutes=10))
    keys._forget(key.id)
    keys.verify(bearer(raw))
    assert keys.get(key.id).last_used_at == START + timedelta(minutes=11)


def test_every_key_action_is_audited_with_ids_never_secrets(
    keys: ApiKeys, store: Store, clock: FixedClock
) -> None:
    key, raw = make(keys, actor="key:adminadminadm")
    clock.advance(timedelta(seconds=1))
    _, regenerated = keys.regenerate(key.id, actor="key:adminadminadm")
    clock.advance(timedelta(seconds=1))
    keys.update(key.id, KeyChange(name="n2"), actor="key:adminadminadm")
    clock.advance(timedelta(seconds=1))
    keys.delete(key.id, actor="key:adminadminadm")
    entries = AuditLog(store, clock).read(START - timedelta(days=1))
    assert [e.action for e in entries] == [
        "apikey.created",
        "apikey.regenerated",
        "apikey.updated",
        "apikey.deleted",
    ]
    for entry in entries:
        assert entry.actor == "key:adminadminadm"
        assert entry.subject == f"key:{key.id}"
    everything = repr([row.data for row in store.query("Audit", "PartitionKey ne @x", {"x": ""})])
    for secret in (raw, regenerated, parse(raw)[1], parse(regenerated)[1]):  # type: ignore[index]
        assert secret not in everything


@pytest.mark.parametrize(
    ("glob", "app", "user", "expected"),
    [
        ("*", "anything", "any/one", True),
        ("pagerduty-*/*", "pagerduty-incidents", "alice@contoso.com", True),
        ("pagerduty-*/*", "github", "alice@contoso.com", False),
        ("*/alice@contoso.com", "github", "alice@contoso.com", True),
        ("*/alice@contoso.com", "github", "bob@contoso.com", False),
        ("*/alice@contoso.com", "github", "x/alice@contoso.com", False),
        ("github/alice*", "github", "alice@contoso.com", True),
        ("github/alice*", "github-enterprise", "alice@contoso.com", False),
        ("git.hub/a", "gitxhub", "a", False),  # '.' is literal, not a wildcard
    ],
)
def test_globs(glob: str, app: str, user: str, expected: bool) -> None:
    assert globs.matches(globs.validate(glob), app, user) is expected


@pytest.mark.parametrize(
    ("resources", "app", "user", "every_user_of_app", "user_in_every_app"),
    [
        (["*"], "pd", "alice", True, True),
        (["pd/*"], "pd", "alice", True, False),
        (["pagerduty-*/*"], "pagerduty-x", "alice", True, False),
        (["*/alice"], "pd", "alice", False, True),
        (["pd/alice"], "pd", "alice", False, False),
        (["pd/a*"], "pd", "alice", False, False),
    ],
)
def test_revoking_a_whole_app_or_user_needs_globs_covering_all_of_it(
    resources: list[str], app: str, user: str, every_user_of_app: bool, user_in_every_app: bool
) -> None:
    assert globs.covers_app(resources, app) is every_user_of_app
    assert globs.covers_user(resources, user) is user_in_every_app
