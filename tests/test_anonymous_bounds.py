"""Anonymous traffic cannot grow storage without bound (issue 16, point 4).

The attack: 200 anonymous ``GET /api/oauth/acme/callback?state=x`` wrote 200 audit rows in 3.5 s,
and expired ``ConnectLinks`` and unconsumed ``OAuthStates`` (with sealed PKCE verifiers) were never
deleted. Here junk is counted (one row per app, cause and minute), and the expiry sweep reads only
the expired minute buckets, which a store that counts what it hands back proves.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from azure.data.tables import TableServiceClient
from azure.storage.queue import QueueServiceClient

from shared.config.apps import parse as parse_apps
from shared.foundation.clock import FixedClock
from shared.foundation.errors import CallbackFailed
from shared.lifecycle.app_health import AppHealth
from shared.lifecycle.caller_requests import NewLink
from shared.lifecycle.connect_flow import Connect
from shared.lifecycle.expired_sessions import ExpiredSessions
from shared.lifecycle.user_ids import UserIds
from shared.providers.drivers import Drivers
from shared.storage.crypto import KeyRing
from shared.storage.store import Row, Store
from shared.storage.tables.audit import AuditEntry, AuditOutcome
from shared.storage.tables.connect_links import ConnectLink, OAuthState, digest
from shared.storage.tables.schedule import Schedule
from shared.trail.audit import AuditLog
from shared.trail.events import EventPublisher

NOW = datetime(2026, 11, 22, 12, 0, 7, tzinfo=UTC)
APPS = parse_apps(
    {"apps": {"acme": {"provider": "pagerduty", "client_id": "c", "client_secret": "${S}",
                       "scopes": ["incidents.read"]}}},
    {"S": "x"},
)  # fmt: skip


class CountingStore(Store):
    """The real store, counting the rows Table Storage hands back (a point read that finds
    nothing hands back none)."""

    def __init__(self, service: TableServiceClient, ring: KeyRing) -> None:
        super().__init__(service, ring)
        self.rows_read = 0

    def get(self, table: str, partition_key: str, row_key: str) -> Row | None:
        row = super().get(table, partition_key, row_key)
        self.rows_read += row is not None
        return row

    def query(self, *args: Any, **kwargs: Any) -> Iterator[Row]:
        for row in super().query(*args, **kwargs):
            self.rows_read += 1
            yield row


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
def counting(tables: TableServiceClient, key_ring: KeyRing) -> CountingStore:
    return CountingStore(tables, key_ring)


@pytest.fixture
def connect(counting: CountingStore, queues: QueueServiceClient, clock: FixedClock) -> Connect:
    audit = AuditLog(counting, clock)
    events = EventPublisher(queues, clock, source="https://k.example", webhook_enabled=False)
    return Connect(
        store=counting, apps=APPS, drivers=Drivers(requests.Session(), clock), audit=audit,
        events=events, clock=clock, public_url="https://k.example", allowed_return_urls=(),
        schedule=Schedule(counting), user_ids=UserIds(counting, clock),
        app_health=AppHealth(counting, audit, events, clock),
    )  # fmt: skip


def failures(store: Store, clock: FixedClock) -> list[AuditEntry]:
    entries = AuditLog(store, clock).read(NOW - timedelta(hours=1), NOW + timedelta(hours=1))
    return [e for e in entries if e.action == "connection.connect_failed"]


def refused(step: Any, *args: Any) -> str:
    with pytest.raises(CallbackFailed) as failed:
        step(*args)
    return failed.value.error


def test_200_junk_callbacks_are_one_counted_row_per_app_cause_and_minute(
    connect: Connect, counting: CountingStore, clock: FixedClock
) -> None:
    for _ in range(200):
        assert refused(connect.callback, "acme", {"state": "x"}, {}) == "unknown_state"
    for _ in range(3):
        assert refused(connect.callback, "nope", {"state": "x"}, {}) == "unknown_state"
        assert refused(connect.callback, "acme", {}, {}) == "missing_state"
    rows = failures(counting, clock)
    counts = {(e.subject, e.detail["reason"]): e.detail["count"] for e in rows}
    assert counts == {("acme/?", "unknown_state"): 200, ("?/?", "unknown_state"): 3,
                      ("acme/?", "missing_state"): 3}  # fmt: skip
    assert len(rows) == 3
    clock.advance(timedelta(minutes=1))  # a new minute starts a new row
    refused(connect.callback, "acme", {"state": "x"}, {})
    again = [e for e in failures(counting, clock) if e.detail["reason"] == "unknown_state"]
    assert sorted(int(str(e.detail["count"])) for e in again if e.subject == "acme/?") == [1, 200]


def test_junk_links_are_counted_too(
    connect: Connect, counting: CountingStore, clock: FixedClock
) -> None:
    for token in ("", "junk", "x" * 40, "junk"):
        assert refused(connect.start, token) == "unknown_link"
    [row] = failures(counting, clock)
    assert (row.subject, row.detail["reason"], row.detail["count"]) == ("?/?", "unknown_link", 4)


def test_a_refusal_that_leaves_the_state_unspent_is_counted_too(
    connect: Connect, counting: CountingStore, clock: FixedClock
) -> None:
    # A wrong browser does not spend the state (the right one must still finish), so anyone with
    # one authorize URL could repeat it at will for ten minutes: counted, under the link's user.
    token = link(connect, "wrong@contoso.com")
    state = state_of(connect.start(token).url)
    for _ in range(25):
        assert refused(connect.callback, "acme", {"state": state}, {}) == "wrong_browser"
    [row] = failures(counting, clock)
    assert (row.subject, row.detail["reason"], row.detail["count"]) == (
        "acme/wrong@contoso.com", "wrong_browser", 25,
    )  # fmt: skip


def link(connect: Connect, user: str) -> str:
    url = connect.create_link(NewLink.parse({"app": "acme", "user_id": user}), actor="key:test")
    return str(url["url"]).rsplit("/", 1)[1]


def state_of(url: str) -> str:
    from urllib.parse import parse_qs, urlsplit

    return parse_qs(urlsplit(url).query)["state"][0]


def test_the_sweep_deletes_expired_links_and_states_reading_only_expired_buckets(
    connect: Connect, counting: CountingStore, clock: FixedClock
) -> None:
    expired_link = link(connect, "late@contoso.com")
    started = link(connect, "slow@contoso.com")
    unconsumed = state_of(connect.start(started).url)  # the link is spent, the state is left
    clock.advance(timedelta(minutes=11))
    live = [link(connect, f"live{n}@contoso.com") for n in range(30)]
    sweep = ExpiredSessions(counting, clock)
    counting.rows_read = 0

    swept = sweep.run()

    # The one expired bucket holds three index rows (two links, one state); the spent link is
    # already gone, so two targets are read: five rows in all, none of the thirty live ones.
    assert counting.rows_read == 5
    assert swept == {"links": 1, "states": 1, "index_rows": 3}
    assert counting.read(ConnectLink, digest(expired_link), "link") is None
    assert counting.read(OAuthState, digest(unconsumed), "state") is None
    assert all(counting.read(ConnectLink, digest(t), "link") is not None for t in live)
    assert refused(connect.start, expired_link) == "unknown_link"
    counting.rows_read = 0
    assert sweep.run() == {"links": 0, "states": 0, "index_rows": 0}
    assert counting.rows_read == 0  # nothing expired is left to read


def test_a_live_link_still_works_after_a_sweep(
    connect: Connect, counting: CountingStore, clock: FixedClock
) -> None:
    token = link(connect, "fresh@contoso.com")
    clock.advance(timedelta(minutes=9))
    assert ExpiredSessions(counting, clock).run() == {"links": 0, "states": 0, "index_rows": 0}
    assert connect.start(token).url.startswith("https://")


def test_concurrent_junk_loses_no_count(
    connect: Connect, counting: CountingStore, clock: FixedClock
) -> None:
    # The row is updated on its ETag: writers that race retry from a fresh read.
    def junk() -> None:
        for _ in range(25):
            refused(connect.callback, "acme", {"state": "x"}, {})

    with ThreadPoolExecutor(max_workers=4) as pool:
        for done in [pool.submit(junk) for _ in range(4)]:
            done.result()
    [row] = failures(counting, clock)
    assert row.detail["count"] == 100


def test_a_counted_row_never_meets_a_row_of_its_own(
    counting: CountingStore, clock: FixedClock
) -> None:
    audit = AuditLog(counting, clock)
    clock.set(NOW.replace(second=0))  # the very microsecond a counted row's key names
    single = audit.record("user:browser", "connection.connect_failed", "acme/?")
    counted = audit.count(
        "user:browser", "connection.connect_failed", "acme/?", AuditOutcome.FAILURE,
        {"reason": "unknown_state"},
    )  # fmt: skip
    assert single.id.split("-")[0] == counted.id.split("-")[0]
    assert single.id != counted.id
    assert "count" not in single.detail
    with pytest.raises(ValueError, match="secret"):
        audit.count(
            "user:browser",
            "connection.connect_failed",
            "eyJhbGciOiJIUzI1NiJ9.eyJ4IjoxfQ.c2lnbmF0dXJlLXNpZ25hdHVyZQ",
            AuditOutcome.FAILURE,
            {"reason": "x"},
        )
