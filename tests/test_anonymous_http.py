"""The attack of issue 16, point 4, as an outside tester ran it: junk callbacks over HTTP through
devhost, and the expiry sweep run as the timer it is."""

from __future__ import annotations

from datetime import UTC, datetime

from shared.foundation.clock import SystemClock
from shared.trail.audit import AuditLog
from tests.peers.world import World


def test_200_junk_callbacks_over_http_are_counted_not_written_one_by_one(world: World) -> None:
    since = datetime.now(UTC).replace(second=0, microsecond=0)
    for _ in range(200):
        response = world.http.get(
            world.api("oauth/oidc-demo/callback"), params={"state": "x"}, timeout=30
        )
        assert response.status_code == 400
        assert "unknown_state" in response.text
    entries = AuditLog(world.store, SystemClock()).read(since, subject="oidc-demo/?")
    counted = [e for e in entries if e.detail.get("reason") == "unknown_state"]
    # One row per minute: 200 requests may straddle a minute's end, never more than that.
    assert 1 <= len(counted) <= 2
    assert sum(int(str(e.detail["count"])) for e in counted) == 200
    page = world.call("GET", "audit", params={"since": since.isoformat(), "subject": "oidc-demo/?"})
    assert page.status_code == 200
    shown = [e for e in page.json()["entries"] if e["detail"].get("reason") == "unknown_state"]
    assert sum(e["detail"]["count"] for e in shown) == 200


def test_the_expiry_sweep_is_a_timer_that_runs(world: World) -> None:
    link = world.connect_link("oidc-demo", "sweep@contoso.com")
    url = f"{world.devhost.url}/admin/functions/expired_sessions_sweep"
    assert world.http.post(url, json={}, timeout=60).status_code == 202
    # The link expires in ten minutes: the sweep, reading only minutes that are over, keeps it.
    opened = world.http.get(link, allow_redirects=False, timeout=30)
    assert opened.status_code == 302
    assert opened.headers["Location"].startswith(world.oidc.issuer)
