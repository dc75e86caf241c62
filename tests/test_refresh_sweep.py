"""The refresh sweep reads only what is due, drops stale index rows, fans refreshes out through
the refresh-requests queue, and keeps idle refresh tokens alive."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import requests

from shared.config.apps import parse as parse_apps
from shared.foundation.clock import FixedClock
from shared.lifecycle.refresh_policy import backoff, due_at
from shared.lifecycle.refresh_sweep import RefreshSweep
from shared.storage.store import Store
from shared.storage.tables.connections import Connection, ConnectionStore, Status
from shared.storage.tables.schedule import Schedule, ScheduleEntry, bucket
from tests.peers.processes import wait_until
from tests.peers.world import World

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
APPS = parse_apps(
    {"apps": {
        "pd": {"provider": "pagerduty", "client_id": "c", "client_secret": "${S}",
               "scopes": ["incidents.read"]},
        "ado": {"provider": "azure-devops-oauth", "client_id": "c", "client_secret": "${S}",
                "scopes": ["vso.work"]},
    }},
    {"S": "x"},
)  # fmt: skip


def connection(app: str, user: str, **fields: object) -> Connection:
    base = Connection(
        app=app, user_id=user, provider="pagerduty", status=Status.ACTIVE, scopes=["s"],
        created_at=NOW, updated_at=NOW, connected_at=NOW, redirect_uri="https://k/cb",
        last_refreshed_at=NOW,
    )  # fmt: skip
    return replace(base, **fields)  # type: ignore[arg-type]


def test_due_at_is_before_the_margin() -> None:
    app = APPS.get("ado")
    conn = connection("ado", "u", access_expires_at=NOW + timedelta(hours=1))
    assert due_at(conn, app, NOW) == NOW + timedelta(hours=1) - timedelta(seconds=450)


def test_due_at_keeps_an_idle_refresh_token_alive() -> None:
    # PagerDuty scoped refresh tokens lapse after 30 idle days; access tokens here live 40 days.
    app = APPS.get("pd")
    conn = connection("pd", "u", access_expires_at=NOW + timedelta(days=40),
                      last_refreshed_at=NOW - timedelta(days=25))  # fmt: skip
    assert due_at(conn, app, NOW) == NOW  # overdue: 20 days (two thirds of 30) have passed
    fresh = replace(conn, last_refreshed_at=NOW)
    assert due_at(fresh, app, NOW) == NOW + timedelta(days=20)


def test_due_at_waits_for_back_off() -> None:
    app = APPS.get("ado")
    conn = connection("ado", "u", access_expires_at=NOW + timedelta(minutes=1),
                      next_attempt_at=NOW + timedelta(minutes=3))  # fmt: skip
    assert due_at(conn, app, NOW) == NOW + timedelta(minutes=3)


def test_backoff_grows_exponentially_with_jitter_and_honours_retry_after() -> None:
    first, fourth = backoff(1, None), backoff(4, None)
    assert 8 <= first <= 12
    assert 64 <= fourth <= 96
    assert backoff(20, None) <= 1800 * 1.2
    assert backoff(1, 300) == 300


def test_the_sweep_reads_only_due_rows_and_drops_stale_ones(store: Store) -> None:
    schedule = Schedule(store)
    connections = ConnectionStore(store)
    live = connection("pd", "due@contoso.com")
    live.schedule_bucket = schedule.put("pd", "due@contoso.com", NOW - timedelta(minutes=1), "r")
    connections.save(live)
    later = connection("pd", "later@contoso.com")
    later.schedule_bucket = schedule.put("pd", "later@contoso.com", NOW + timedelta(hours=1), "r")
    connections.save(later)
    schedule.put("pd", "gone@contoso.com", NOW - timedelta(minutes=2), "r")  # no connection
    moved = connection("pd", "moved@contoso.com", schedule_bucket=bucket(NOW + timedelta(days=1)))
    connections.save(moved)
    schedule.put("pd", "moved@contoso.com", NOW - timedelta(minutes=3), "r")  # an old row
    result = RefreshSweep(schedule, connections, FixedClock(NOW)).run()
    assert result.read == 3  # the row due in an hour is never read
    assert result.dropped == 2
    assert result.messages == ['{"app": "pd", "user_id": "due@contoso.com"}']
    remaining = {e.connection for e in store.select(ScheduleEntry, "PartitionKey ne @x", {"x": ""})}
    assert remaining == {("pd", "due@contoso.com"), ("pd", "later@contoso.com")}


def run_sweep(world: World) -> None:
    response = requests.post(f"{world.devhost.url}/admin/functions/refresh_sweep", json={},
                             timeout=60)  # fmt: skip
    assert response.status_code == 202, response.text


@pytest.mark.parametrize("app", ["oidc-demo", "entra-demo"])
def test_the_sweep_refreshes_a_due_connection_through_the_queue(world: World, app: str) -> None:
    user = f"sweep-{app}@contoso.com"
    server = world.oidc if app == "oidc-demo" else world.entra_op
    server.set_access_token_ttl(60)  # inside the margin: due at once
    try:
        assert world.connect(app, user).status_code == 200
    finally:
        server.set_access_token_ttl(3600)
    before = world.connection(app, user)
    run_sweep(world)
    wait_until(lambda: world.connection(app, user).last_refreshed_at != before.last_refreshed_at,
               timeout=30, what="the queued refresh")  # fmt: skip
    after = world.connection(app, user)
    assert after.status == Status.ACTIVE
    assert after.access_expires_at is not None
    assert after.access_expires_at - datetime.now(UTC) > timedelta(minutes=30)
    assert after.schedule_bucket != before.schedule_bucket


def test_the_sweep_keeps_an_idle_pagerduty_grant_alive(world: World) -> None:
    user = "sweep-idle@contoso.com"
    assert world.connect("pagerduty-incidents", user).status_code == 200
    conn = world.connection("pagerduty-incidents", user)
    # Unused for 25 days: its access token is still good, its refresh token has 5 days left.
    conn.last_refreshed_at = datetime.now(UTC) - timedelta(days=25)
    conn.access_expires_at = datetime.now(UTC) + timedelta(days=1)
    schedule = Schedule(world.store)
    app = parse_apps({"apps": {"x": {"provider": "pagerduty", "client_id": "c",
                                     "client_secret": "${S}", "scopes": ["a"]}}},
                     {"S": "x"}).get("x")  # fmt: skip
    due = due_at(conn, app, datetime.now(UTC))
    conn.schedule_bucket = schedule.put("pagerduty-incidents", user, due, "refresh")
    world.store.save(conn)
    refreshed = world.pagerduty.grants.get("refresh_token", 0)
    run_sweep(world)
    wait_until(lambda: world.pagerduty.grants.get("refresh_token", 0) == refreshed + 1,
               timeout=30, what="the keep-alive refresh")  # fmt: skip
    recent = datetime.now(UTC) - timedelta(minutes=5)
    wait_until(lambda: (world.connection("pagerduty-incidents", user).last_refreshed_at or recent)
               > recent, what="the refresh to be stored")  # fmt: skip
