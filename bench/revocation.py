"""How long one revocation request takes to destroy N credentials locally and upstream.

``python -m bench.revocation [--sizes 1,20,200]``: for each size N, a fresh in-memory Azurite and
a Keysteward world on it (tests/peers/world.py: devhost, the PagerDuty fake with revocation on)
are started, so every size has an app partition of its own: N ``pagerduty-incidents``
connections, one per user, are written straight to storage (``ConnectionStore``, as
tests/test_revocation.py seeds them), then ONE request revokes the app (``POST /api/revocations``
with ``{"app": "pagerduty-incidents"}``, i.e. "by app"). The devhost's queue function runs it:
``Revoker.run`` with its thread pool of ``shared.lifecycle.revocation_requests.CONCURRENCY``.

Every figure is read from what the devhost stored, on its own clock (so the polling here adds
nothing to it): accepted is the request row's ``created_at``; a credential is destroyed locally at
its connection's ``revoked_at``; upstream is complete at the request's ``completed_at`` (its last
outcome row's ``at`` is printed alongside). The seeded tokens are unknown to the fake, which
answers 200 as RFC 7009 says, so each upstream revocation costs what a real one would here: two
POSTs (refresh token, then access token).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench._common import azurite_version, load, machine
from bench._world import CpuMeter, fresh_world, seconds
from shared.foundation.secret import Secret
from shared.lifecycle.revocation_requests import COMPLETED, CONCURRENCY, WITH_FAILURES
from shared.storage.tablekeys import encode_key
from shared.storage.tables.connections import Connection, ConnectionStore, Status
from shared.storage.tables.revocations import Outcome, Revocation, storage_key
from tests.peers.world import World

APP = "pagerduty-incidents"
SEED_THREADS = 8
TIMEOUT = 120.0  # seconds one request may take before the size is given up
POLL = 0.05


@dataclass
class Result:
    size: int
    seed_seconds: float = 0.0
    status: str = "timed out"
    total: int = 0
    accepted: datetime | None = None
    first_destroyed: datetime | None = None
    last_destroyed: datetime | None = None
    completed: datetime | None = None
    last_outcome: datetime | None = None
    destroyed: int = 0  # seeded rows revoked, with their secrets gone
    outcomes: dict[str, int] = field(default_factory=dict)  # upstream result -> count
    each_ms: float = float("nan")  # mean of (outcome at - revoked_at) per credential
    upstream_calls: int = 0
    client_seconds: float = float("nan")  # POST sent -> completion seen here
    cpu: str = ""

    @property
    def pickup(self) -> float:
        return seconds(self.first_destroyed, self.accepted)

    @property
    def local(self) -> float:
        return seconds(self.last_destroyed, self.accepted)

    @property
    def upstream(self) -> float:
        return seconds(self.completed, self.accepted)

    @property
    def amortised_ms(self) -> float:
        """Wall time per credential once the worker had picked the request up."""
        return seconds(self.completed, self.first_destroyed) * 1000 / max(self.size, 1)

    @property
    def ok(self) -> bool:
        return (
            self.status == COMPLETED
            and self.total == self.size
            and self.destroyed == self.size
            and self.outcomes == {"revoked": self.size}
        )


def seed(world: World, count: int) -> list[str]:
    now = datetime.now(UTC)
    store = ConnectionStore(world.store)

    def one(i: int) -> str:
        user = f"rv-bench-{i:04d}@contoso.com"
        store.save_new_or_existing(
            Connection(
                app=APP,
                user_id=user,
                provider="pagerduty",
                status=Status.ACTIVE,
                scopes=["incidents.read"],
                created_at=now,
                updated_at=now,
                connected_at=now,
                redirect_uri=f"{world.env['KEYSTEWARD_PUBLIC_URL']}/api/oauth/{APP}/callback",
                access_token=Secret(f"pdus+_0_bench_{i}"),
                access_expires_at=now,
                refresh_token=Secret(f"pdus+_1_bench_{i}"),
            )
        )
        return user

    with ThreadPoolExecutor(SEED_THREADS) as pool:
        return list(pool.map(one, range(count)))


def wait_finished(world: World, request_id: str) -> Revocation | None:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        # Stored under its owner, the benchmark's key (ks_<id>_<secret>).
        owner = f"key:{world.admin_key.split('_')[1]}"
        record = world.store.read(Revocation, storage_key(owner, request_id), "request")
        if record is not None and record.status in (COMPLETED, WITH_FAILURES):
            return record
        time.sleep(POLL)
    return None


def collect(world: World, result: Result, record: Revocation, users: list[str]) -> None:
    result.status, result.total = record.status, record.total
    result.accepted, result.completed = record.created_at, record.completed_at
    rows = {c.user_id: c for c in ConnectionStore(world.store).of_app(APP)}
    revoked = [rows[u] for u in users if u in rows and rows[u].status == Status.REVOKED]
    result.destroyed = sum(1 for c in revoked if c.refresh_token is None and c.access_token is None)
    stamps = [c.revoked_at for c in revoked if c.revoked_at is not None]
    result.first_destroyed = min(stamps, default=None)
    result.last_destroyed = max(stamps, default=None)
    outcomes = list(
        world.store.select(
            Outcome,
            "PartitionKey eq @pk and RowKey ne @request",
            {"pk": encode_key(record.key), "request": "request"},
        )
    )
    for outcome in outcomes:
        result.outcomes[outcome.upstream] = result.outcomes.get(outcome.upstream, 0) + 1
    result.last_outcome = max((o.at for o in outcomes), default=None)
    spans = [seconds(o.at, rows[o.user_id].revoked_at) for o in outcomes if o.user_id in rows]
    if spans:
        result.each_ms = sum(spans) * 1000 / len(spans)


def run_size(size: int, directory: Path) -> Result:
    result = Result(size)
    with fresh_world(directory) as (azurite, world):
        started = time.perf_counter()
        users = seed(world, size)
        result.seed_seconds = time.perf_counter() - started
        assert world.devhost.proc is not None
        assert azurite.proc is not None
        meter = CpuMeter({"devhost": world.devhost.proc.pid, "azurite": azurite.proc.pid})
        calls_before = len(world.pagerduty.requests_to("/oauth/revoke"))
        meter.start()
        sent = time.perf_counter()
        response = world.call("POST", "revocations", json={"app": APP, "reason": "benchmark"})
        if response.status_code != 202:
            result.status = f"HTTP {response.status_code}: {response.text[:200]}"
            return result
        record = wait_finished(world, response.json()["id"])
        result.client_seconds = time.perf_counter() - sent
        meter.stop()
        result.cpu = meter.describe(result.client_seconds)
        result.upstream_calls = len(world.pagerduty.requests_to("/oauth/revoke")) - calls_before
        if record is not None:
            collect(world, result, record, users)
    return result


def describe(r: Result) -> list[str]:
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(r.outcomes.items())) or "none"
    last = seconds(r.last_outcome, r.accepted)
    return [
        f"  seeded {r.size} connections in {r.seed_seconds:.2f} s; request {r.status}, "
        f"total {r.total}; rows revoked with secrets gone {r.destroyed}; upstream: {outcomes}",
        f"  accepted -> first credential destroyed (queue pickup) {r.pickup:.3f} s; "
        f"-> last outcome row {last:.3f} s; -> request completed {r.upstream:.3f} s; "
        f"POST -> completion seen here {r.client_seconds:.3f} s",
        f"  PagerDuty /oauth/revoke calls {r.upstream_calls} "
        f"({r.upstream_calls / max(r.size, 1):.1f} per credential); "
        f"one credential, local wipe -> upstream done: {r.each_ms:.1f} ms on average",
        f"  {r.cpu}",
    ]


def report(results: Sequence[Result]) -> None:
    print(
        f"\n{'N':>5} {'pickup s':>8} {'local-destroy s':>15} {'upstream-complete s':>19} "
        f"{'ms/credential':>13} {'ms each':>7} {'concurrency':>11} {'check':>8}"
    )
    for r in results:
        print(
            f"{r.size:>5} {r.pickup:>8.3f} {r.local:>15.3f} {r.upstream:>19.3f} "
            f"{r.amortised_ms:>13.1f} {r.each_ms:>7.1f} {CONCURRENCY:>11} "
            f"{'ok' if r.ok else 'MISMATCH':>8}"
        )
    print(
        "\npickup: accepted -> first revoked_at (the queue poll); local-destroy / "
        "upstream-complete: from accepted; ms/credential: (completed - first revoked_at) / N; "
        "ms each: one credential's local wipe -> its upstream outcome"
    )
    if len(results) > 1:
        a, b = results[0], results[-1]
        work_a = a.upstream - a.pickup
        work_b = b.upstream - b.pickup
        print(
            f"from {a.size} to {b.size} credentials ({b.size / a.size:.0f}x): local-destroy "
            f"{b.local / a.local:.1f}x, upstream-complete {b.upstream / a.upstream:.1f}x, "
            f"the same without the pickup {work_b / work_a:.1f}x; ms each "
            f"{b.each_ms / a.each_ms:.1f}x"
        )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.revocation",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--sizes",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[1, 20, 200],
        help="connections revoked by one request, e.g. 1,20,200",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    print(f"revocation benchmark: {machine()}; Azurite {azurite_version()} in memory")
    print(
        f"one request by app ({APP}) per size; a fresh Azurite and world per size; "
        f"Revoker concurrency {CONCURRENCY}; one devhost"
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="keysteward-bench-") as tmp:
        for i, size in enumerate(args.sizes):
            print(f"\n{size} connections:")
            result = run_size(size, Path(tmp) / f"run-{i}")
            results.append(result)
            for line in describe(result):
                print(line)
    report(results)
    print(f"\n{load()}; total run time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
