from __future__ import annotations

import base64
import json
import os
import re
import secrets
import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from azure.data.tables import TableServiceClient

from shared.foundation.clock import FixedClock
from shared.foundation.redaction import (
    REDACTED,
    is_sensitive_name,
    looks_secret,
    redact,
    redact_text,
)
from shared.foundation.secret import Secret
from shared.storage.store import Store
from shared.storage.tables.audit import AuditEntry, AuditOutcome
from shared.trail.audit import AuditLog

START = datetime(2026, 3, 1, 23, 59, 59, 500000, tzinfo=UTC)
ROW_KEY = re.compile(r"^\d{16}-[0-9a-f]{8}$")


def _api_key() -> str:
    return f"ks_{'abcdefgh2345'}_{secrets.token_urlsafe(32)[:43]}{'A1b2C3'}"


def _jwt() -> str:
    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return (
        f"{part({'alg': 'RS256'})}.{part({'sub': 'alice', 'exp': 1})}.{secrets.token_urlsafe(32)}"
    )


# Credentials of every shape the trail must never hold.
SECRETS = {
    "api_key": _api_key(),
    "jwt": _jwt(),
    "pagerduty": f"pdus+_0XBPWQQ_{uuid.uuid4()}",
    "base64": base64.b64encode(os.urandom(32)).decode(),
    "urlsafe": secrets.token_urlsafe(32),
    "hex": secrets.token_hex(32),
    "base32_pat": base64.b32encode(os.urandom(35)).decode().lower()[:52],
    "entra_secret": "Xy8Q~" + secrets.token_urlsafe(30)[:35],
    "webhook_secret": "whsec_" + base64.b64encode(os.urandom(24)).decode(),
}
# Values that must stay readable.
ORDINARY = [
    str(uuid.uuid4()),
    uuid.uuid4().hex,
    "alice@contoso.com",
    "firstname.lastname.department.team@contoso.com",
    "pagerduty-incidents",
    "pagerduty-incidents-production-eu-west-2",
    "pagerduty-incidents/alice@contoso.com",
    "https://dev.azure.com/contoso/_apis/tokens/pats?api-version=7.1-preview.1",
    f"https://login.microsoftonline.com/{uuid.uuid4()}/oauth2/v2.0/token",
    "2026-03-01T23:59:59.500000+00:00",
    "2026-03-01T23:59:59Z",
    "key:abcdefgh2345",
    "system:refresh-sweep",
    "cli:alice",
    "apikey.created",
    "keysteward.connection.needs_reauth",
    "invalid_grant: AADSTS700082: The refresh token has expired due to inactivity.",
    "Basic authentication failed",
    "shared.providers.pagerduty.PagerDutyProvider",
    "ConnectionNeedsReauthenticationV2Handler",
    "keysteward/2026/03/01/refresh-sweep-log-00012.json",
    f"/subscriptions/{uuid.uuid4()}/resourceGroups/rg-keysteward-prod-001/providers/"
    "Microsoft.Web/sites/func-keysteward-prod-001",
    "PABC123",
]


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START)


@pytest.fixture
def audit(store: Store, clock: FixedClock) -> AuditLog:
    return AuditLog(store, clock)


def test_entries_are_read_back_by_time_range_across_days(
    audit: AuditLog, clock: FixedClock
) -> None:
    first = audit.record("key:abc", "apikey.created", "key:abc", detail={"name": "ci"})
    clock.advance(timedelta(seconds=1))  # 2026-03-02, the next day partition
    second = audit.record("system:refresh-sweep", "connection.refreshed", "pd/alice@contoso.com")
    clock.advance(timedelta(days=1))
    third = audit.record("cli:bob", "apikey.deleted", "key:abc", outcome=AuditOutcome.FAILURE)

    assert (first.day, second.day, third.day) == ("20260301", "20260302", "20260303")
    assert all(ROW_KEY.match(e.id) for e in (first, second, third))

    everything = audit.read(START - timedelta(days=1))
    assert [e.id for e in everything] == [first.id, second.id, third.id]
    assert everything[0] == first
    assert everything[0].at == START
    assert everything[0].detail == {"name": "ci"}
    assert everything[2].outcome == "failure"

    # since is inclusive, until exclusive, to the microsecond
    assert [e.id for e in audit.read(START, START + timedelta(microseconds=1))] == [first.id]
    assert audit.read(START + timedelta(microseconds=1), second.at) == []
    assert [e.id for e in audit.read(second.at, third.at)] == [second.id]
    assert [e.id for e in audit.read(second.at)] == [second.id, third.id]
    assert audit.read(third.at + timedelta(microseconds=1)) == []
    assert audit.read(START, START) == []


def test_read_filters_by_subject_and_honours_the_limit(audit: AuditLog, clock: FixedClock) -> None:
    ids = []
    for i in range(5):
        subject = "key:abc" if i % 2 == 0 else "key:def"
        ids.append((subject, audit.record("cli:alice", "apikey.updated", subject).id))
        clock.advance(timedelta(hours=7))  # spreads over two days
    since = START - timedelta(seconds=1)
    assert [e.id for e in audit.read(since, subject="key:abc")] == [
        i for s, i in ids if s == "key:abc"
    ]
    assert [e.id for e in audit.read(since, subject="key:def")] == [
        i for s, i in ids if s == "key:def"
    ]
    assert audit.read(since, subject="key:nobody") == []
    assert [e.id for e in audit.read(since, limit=2)] == [i for _, i in ids[:2]]
    # a subject with a quote travels as a parameter, never inside the filter text
    quoted = audit.record("cli:alice", "connection.created", "o'brien-app/o'brien@contoso.com")
    assert audit.read(since, subject="o'brien-app/o'brien@contoso.com") == [quoted]


def test_read_refuses_naive_times_and_bad_limits(audit: AuditLog) -> None:
    with pytest.raises(ValueError, match="timezone"):
        audit.read(datetime(2026, 3, 1))
    with pytest.raises(ValueError, match="limit"):
        audit.read(START, limit=0)


def test_row_keys_sort_by_time(audit: AuditLog, clock: FixedClock) -> None:
    keys = []
    for step in (timedelta(microseconds=1), timedelta(seconds=9), timedelta(days=400)):
        keys.append(audit.record("cli:alice", "apikey.created", "key:abc").id)
        clock.advance(step)
    assert keys == sorted(keys)
    assert keys[0].startswith(f"{int(START.timestamp() * 1_000_000):016d}-")


def test_row_keys_are_unique_when_many_threads_write_in_the_same_microsecond(
    audit: AuditLog, store: Store
) -> None:
    # The clock never moves, so every entry has the same time: only the suffix tells them apart.
    threads, per_thread = 8, 25
    barrier = threading.Barrier(threads)
    written: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def write(n: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                entry = audit.record(f"cli:user{n}", "apikey.created", f"key:k{n}-{i}")
                with lock:
                    written.append(entry.id)
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=write, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    assert len(set(written)) == threads * per_thread
    rows = list(store.partition("Audit", "20260301"))
    assert len(rows) == threads * per_thread
    assert {r.row_key for r in rows} == set(written)
    assert {e.id for e in audit.read(START, limit=1000)} == set(written)


def test_sensitive_detail_fields_are_redacted_and_ordinary_ones_kept(
    audit: AuditLog, tables: TableServiceClient
) -> None:
    detail: dict[str, object] = {
        "access_token": "opaque-but-secret",
        "refreshToken": "another",
        "client_secret": "s3cr3t",
        "password": "hunter2",
        "code": "auth-code",
        "code_verifier": "verifier",
        "key": "anything",
        "X-Api-Key": "anything",
        "Authorization": "Token abc",
        "cookie": "session=1",
        "assertion": "x",
        "pin_secret": 1234,
        "nested": {"headers": {"authorization": "Bearer abc", "accept": "json"}},
        "tokens": ["a", "b"],
        "secret_obj": Secret("wrapped"),
        "raw": b"\x00\x01",
        # descriptive names stay
        "key_id": "abcdefgh2345",
        "token_type": "Bearer",
        "token_endpoint": "https://login.example.com/token",
        "secret_expires_at": "2026-09-01T00:00:00+00:00",
        "status_code": 400,
        "scope": "read write",
        "tokens_revoked": 3,
        "refresh_token_rotated": True,
        "user_id": "alice@contoso.com",
        "when": START,
    }
    entry = audit.record("system:refresh-sweep", "connection.refreshed", "pd/alice", detail=detail)
    assert entry.detail == {
        "access_token": REDACTED,
        "refreshToken": REDACTED,
        "client_secret": REDACTED,
        "password": REDACTED,
        "code": REDACTED,
        "code_verifier": REDACTED,
        "key": REDACTED,
        "X-Api-Key": REDACTED,
        "Authorization": REDACTED,
        "cookie": REDACTED,
        "assertion": REDACTED,
        "pin_secret": REDACTED,
        "nested": {"headers": {"authorization": REDACTED, "accept": "json"}},
        "tokens": REDACTED,
        "secret_obj": REDACTED,
        "raw": REDACTED,
        "key_id": "abcdefgh2345",
        "token_type": "Bearer",
        "token_endpoint": "https://login.example.com/token",
        "secret_expires_at": "2026-09-01T00:00:00+00:00",
        "status_code": 400,
        "scope": "read write",
        "tokens_revoked": 3,
        "refresh_token_rotated": True,
        "user_id": "alice@contoso.com",
        "when": START.isoformat(),
    }
    raw = json.dumps(
        [dict(e) for e in tables.get_table_client("Audit").list_entities()], default=str
    )
    for value in ("opaque-but-secret", "s3cr3t", "hunter2", "auth-code", "wrapped", "1234"):
        assert value not in raw


def test_secret_looking_values_are_redacted_wherever_they_hide(
    audit: AuditLog, store: Store, tables: TableServiceClient
) -> None:
    detail: dict[str, object] = dict(SECRETS)
    detail["message"] = f"upstream said no to {SECRETS['api_key']} (retrying)"
    detail["deep"] = [{"list": [SECRETS["jwt"], {"x": f"Bearer {SECRETS['urlsafe']}"}]}]
    detail["callback"] = f"https://app.example.com/cb?state=xyz&code={SECRETS['hex'][:20]}"
    detail["proxy"] = "https://bob:hunter2-password@proxy.example.com:8080/"
    detail["form"] = "refresh_token=hunter3-rt&grant_type=refresh_token client_secret=hunter4"
    detail["ordinary"] = ORDINARY
    entry = audit.record("system:refresh-sweep", "connection.refreshed", "pd/alice", detail=detail)

    for name in SECRETS:
        assert entry.detail[name] == REDACTED, name
    assert entry.detail["message"] == f"upstream said no to {REDACTED} (retrying)"
    assert entry.detail["deep"] == [{"list": [REDACTED, {"x": f"Bearer {REDACTED}"}]}]
    assert entry.detail["callback"] == f"https://app.example.com/cb?state=xyz&code={REDACTED}"
    assert entry.detail["proxy"] == f"https://bob:{REDACTED}@proxy.example.com:8080/"
    assert entry.detail["form"] == (
        f"refresh_token={REDACTED}&grant_type=refresh_token client_secret={REDACTED}"
    )
    assert entry.detail["ordinary"] == ORDINARY

    # What reached storage: neither the typed read, the untyped store nor the raw SDK sees them.
    stored = [json.dumps(r.data, default=str) for r in store.partition("Audit", entry.day)]
    raw = json.dumps(
        [dict(e) for e in tables.get_table_client("Audit").list_entities()], default=str
    )
    for text in (*stored, raw):
        for secret in (
            *SECRETS.values(),
            "hunter2-password",
            "hunter3",
            "hunter4",
            SECRETS["hex"][:20],
        ):
            assert secret not in text


@pytest.mark.parametrize("field", ["actor", "action", "subject", "outcome"])
@pytest.mark.parametrize("secret", sorted(SECRETS))
def test_secret_looking_identifiers_are_refused_and_nothing_is_written(
    audit: AuditLog, store: Store, field: str, secret: str
) -> None:
    args = {
        "actor": "cli:alice",
        "action": "apikey.created",
        "subject": "key:abc",
        "outcome": "success",
    }
    args[field] = f"key:{SECRETS[secret]}"
    with pytest.raises(ValueError, match=f"audit {field} looks like a secret"):
        # The guard holds at run time even for a caller that ignores the enum type.
        audit.record(args["actor"], args["action"], args["subject"], args["outcome"])  # type: ignore[arg-type]
    assert list(store.query("Audit", "PartitionKey ge @low", {"low": "0"})) == []


def test_empty_identifiers_are_refused(audit: AuditLog) -> None:
    with pytest.raises(ValueError, match="audit actor must be a non-empty string"):
        audit.record(" ", "apikey.created", "key:abc")


def test_an_oversized_detail_keeps_only_its_field_names(audit: AuditLog) -> None:
    entry = audit.record(
        "cli:alice", "revocation.completed", "user:alice", detail={"items": ["x" * 100] * 500}
    )
    assert entry.detail == {"truncated": True, "fields": ["items"]}


@pytest.mark.parametrize("value", ORDINARY)
def test_ordinary_values_do_not_look_secret(value: str) -> None:
    assert not looks_secret(value)
    assert redact({"value": value}) == {"value": value}


@pytest.mark.parametrize("name", sorted(SECRETS))
def test_secret_values_look_secret(name: str) -> None:
    assert looks_secret(SECRETS[name])
    assert redact_text(f"a {SECRETS[name]} b") == f"a {REDACTED} b"


def test_random_strings_of_32_characters_are_caught() -> None:
    # The shape heuristic is statistical; at 32 characters it should miss well under 1%.
    samples = [secrets.token_urlsafe(24) for _ in range(2000)]
    missed = [s for s in samples if not looks_secret(s)]
    assert len(missed) < 20


@pytest.mark.parametrize(
    ("name", "sensitive"),
    [
        ("token", True),
        ("access_token", True),
        ("accessToken", True),
        ("apikey", True),
        ("APIKey", True),
        ("key", True),
        ("private_key", True),
        ("code", True),
        ("Authorization", True),
        ("set-cookie", True),
        ("key_id", False),
        ("keyId", False),
        ("token_type", False),
        ("status_code", False),
        ("code_challenge_method", False),
        ("expires_at", False),
        ("user_id", False),
        ("author", False),
        ("keysteward_version", False),
        ("monkey", False),
    ],
)
def test_sensitive_names(name: str, sensitive: bool) -> None:
    assert is_sensitive_name(name) is sensitive


def test_entries_are_only_ever_inserted(audit: AuditLog, store: Store) -> None:
    entry = audit.record("cli:alice", "apikey.created", "key:abc")
    stored = store.read(AuditEntry, entry.day, entry.id)
    assert stored == entry
    assert not hasattr(audit, "delete")
    assert not hasattr(audit, "update")
