"""The refresh sweep's cost against the number of connections, with a full scan as the baseline.

``python -m bench.sweep [--sizes 10000,100000] [--due-fraction 0.01]``: for each size, a fresh
in-memory Azurite is seeded with that many Connection rows and their Schedule rows (a fraction
due, in the past hour's buckets; the rest spread over the next 24 hours), written the way
``Store`` writes them, in transactions of up to 100 rows of one partition on a few threads
(``--writer raw``, the default, sends them itself; ``--writer sdk`` uses the SDK's
``submit_transaction``, several times slower: bench/_batch.py), and read back. Then
ONE ``RefreshSweep.run()`` is timed (it only reads and returns messages; nothing is refreshed),
then the Schedule range query alone, then a full scan of the Connections table (what a sweep
without the index would read). Seeding stops after the round in which ``--seed-budget`` seconds
ran out; the size actually seeded is what is printed.
"""

from __future__ import annotations

import argparse
import math
import secrets
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from azure.data.tables import TableServiceClient

from bench._batch import BatchWriter, SdkWriter
from bench._common import (
    azurite_version,
    key_ring_spec,
    load,
    machine,
    running_azurite,
    store_for,
)
from shared.foundation.clock import FixedClock
from shared.foundation.secret import Secret
from shared.lifecycle.refresh_sweep import RefreshSweep
from shared.storage.crypto import KeyRing
from shared.storage.entities import Entity, to_properties
from shared.storage.store import Store
from shared.storage.tablekeys import encode_key
from shared.storage.tables.connections import Connection, ConnectionStore, Status
from shared.storage.tables.schedule import Schedule, ScheduleEntry, bucket, row_key
from tests.peers.azurite import ACCOUNT, DEV_KEY, Azurite

APP = "bench-oidc"
MARGIN = timedelta(seconds=300)  # the oidc provider's refresh_margin
PAST_MINUTES = 60
FUTURE_MINUTES = 24 * 60
BATCH = 100  # the most a table transaction holds
ROUND = 10_000
WRITERS = 4

Rows = list[dict[str, Any]]
T = TypeVar("T")


@dataclass(frozen=True)
class Plan:
    """Which connection is due and when each is scheduled; due ones are evenly spread."""

    size: int
    due_fraction: float
    now: datetime
    salt: str = field(default_factory=lambda: secrets.token_urlsafe(40))  # tokens' random part

    @property
    def due(self) -> int:
        return math.floor(self.size * self.due_fraction)

    def is_due(self, i: int) -> bool:
        f = self.due_fraction
        return math.floor((i + 1) * f) > math.floor(i * f)

    def when(self, i: int) -> datetime:
        f = self.due_fraction
        if self.is_due(i):
            k = math.floor(i * f)  # the k-th due connection
            return self.now - timedelta(minutes=1 + k * PAST_MINUTES // max(self.due, 1))
        j = i - math.floor((i + 1) * f)  # the j-th connection not yet due
        later = max(self.size - self.due, 1)
        return self.now + timedelta(minutes=1 + j * FUTURE_MINUTES // later)


@dataclass
class Result:
    size: int
    wanted: int
    due: int
    seed_seconds: float
    sweep_seconds: float
    read: int
    messages: int
    dropped: int
    query_seconds: float
    empty_query_seconds: float
    scanned: int
    scan_seconds: float
    azurite_mib: float


def user(i: int) -> str:
    return f"user{i:07d}@bench.example.com"


def connection(plan: Plan, i: int) -> Connection:
    when = plan.when(i)
    expires = when + MARGIN * 3 / 2  # so that tokens.due_at() of this row is ``when``
    refreshed = expires - timedelta(hours=1)
    return Connection(
        app=APP,
        user_id=user(i),
        provider="oidc",
        status=Status.ACTIVE,
        scopes=["openid", "offline_access", "api.read"],
        created_at=plan.now - timedelta(days=30),
        updated_at=refreshed,
        connected_at=plan.now - timedelta(days=30),
        redirect_uri=f"https://keysteward.example.com/api/oauth/{APP}/callback",
        access_token=Secret(f"at-{i}-{plan.salt}"),
        access_expires_at=expires,
        refresh_token=Secret(f"rt-{i}-{plan.salt}"),
        subject=f"sub-{i}",
        last_refreshed_at=refreshed,
        schedule_bucket=bucket(when),
    )


def entity(row: Entity, ring: KeyRing) -> dict[str, Any]:
    """The Table entity ``Store.save`` writes for ``row`` (same key encoding, same sealing)."""
    pk, rk = row.keys()
    return {
        "PartitionKey": encode_key(pk),
        "RowKey": encode_key(rk),
        **to_properties(row, ring, (pk, rk)),
    }


def round_batches(plan: Plan, ring: KeyRing, lo: int, hi: int) -> list[tuple[str, Rows]]:
    """Transactions (table, rows of one partition, at most 100) for connections lo..hi-1."""
    by_partition: dict[tuple[str, str], Rows] = defaultdict(list)
    for i in range(lo, hi):
        conn = connection(plan, i)
        assert conn.schedule_bucket is not None
        index = ScheduleEntry(
            conn.schedule_bucket, row_key(APP, conn.user_id), plan.when(i), "refresh"
        )
        for row in (conn, index):
            by_partition[(row.TABLE, row.keys()[0])].append(entity(row, ring))
    return [
        (table, rows[start : start + BATCH])
        for (table, _), rows in by_partition.items()
        for start in range(0, len(rows), BATCH)
    ]


def writer_for(kind: str, azurite: Azurite) -> BatchWriter | SdkWriter:
    if kind == "sdk":
        return SdkWriter(azurite.connection_string)
    return BatchWriter(f"http://127.0.0.1:{azurite.table_port}/{ACCOUNT}", ACCOUNT, DEV_KEY)


def seed(
    plan: Plan, azurite: Azurite, ring: KeyRing, args: argparse.Namespace
) -> tuple[int, float]:
    """Connections written (whole rounds, until the budget runs out) and the seconds it took."""
    service = TableServiceClient.from_connection_string(azurite.connection_string)
    for table in (Connection.TABLE, ScheduleEntry.TABLE):
        service.create_table_if_not_exists(table)
    writer = writer_for(args.writer, azurite)
    budget = args.seed_budget
    started = time.perf_counter()
    done = 0
    with ThreadPoolExecutor(WRITERS) as pool:
        while done < plan.size and time.perf_counter() - started < budget:
            hi = min(done + ROUND, plan.size)
            batches = round_batches(plan, ring, done, hi)
            written = sum(pool.map(lambda batch: writer.insert(*batch), batches))
            assert written == 2 * (hi - done), f"wrote {written} rows for {hi - done} connections"
            done = hi
    return done, time.perf_counter() - started


def timed(action: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    value = action()
    return value, time.perf_counter() - started


def measure(plan: Plan, store: Store, seeded: int, seed_seconds: float, rss: float) -> Result:
    due = sum(1 for i in range(seeded) if plan.is_due(i))
    for i in (0, next((i for i in range(seeded) if plan.is_due(i)), 0), seeded - 1):
        # Read back through Store (tokens opened): the rows are what Store would have written.
        assert store.read(Connection, APP, user(i)) == connection(plan, i), f"row {i} differs"
    store.get(ScheduleEntry.TABLE, "warm-up", "warm-up")  # Store's client for the table, once
    schedule, connections = Schedule(store), ConnectionStore(store)
    sweep = RefreshSweep(schedule, connections, FixedClock(plan.now))
    limit = max(5000, due)
    swept, sweep_seconds = timed(lambda: sweep.run(limit=limit))
    entries, query_seconds = timed(lambda: schedule.due(plan.now, limit=limit))
    assert len(entries) == swept.read
    # A range before every bucket: no row matches, so any time it takes is the store's own scan.
    nothing, empty_seconds = timed(lambda: schedule.due(plan.now - timedelta(days=2)))
    assert not nothing
    scanned, scan_seconds = timed(lambda: len(connections.all()))
    return Result(
        size=seeded,
        wanted=plan.size,
        due=due,
        seed_seconds=seed_seconds,
        sweep_seconds=sweep_seconds,
        read=swept.read,
        messages=len(swept.messages),
        dropped=swept.dropped,
        query_seconds=query_seconds,
        empty_query_seconds=empty_seconds,
        scanned=scanned,
        scan_seconds=scan_seconds,
        azurite_mib=rss,
    )


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_size(size: int, args: argparse.Namespace, directory: Path) -> Result:
    now = datetime.now(UTC).replace(second=30, microsecond=0)
    plan = Plan(size, args.due_fraction, now)
    spec = key_ring_spec()
    with running_azurite(directory / f"azurite-{size}.log") as azurite:
        assert azurite.proc is not None
        store = store_for(azurite, spec)
        assert store.ring is not None
        seeded, seconds = seed(plan, azurite, store.ring, args)
        return measure(plan, store, seeded, seconds, rss_mib(azurite.proc.pid))


def describe(r: Result) -> Iterator[str]:
    if r.size < r.wanted:
        yield (
            f"  SEEDING STOPPED AT THE BUDGET: {r.size} of {r.wanted} connections could be "
            f"seeded in time; the figures below are for {r.size}"
        )
    yield (
        f"  seeded {r.size} connections + {r.size} schedule rows in {r.seed_seconds:.1f} s "
        f"({2 * r.size / r.seed_seconds:.0f} rows/s); Azurite RSS {r.azurite_mib:.0f} MiB"
    )
    check = "ok" if r.read == r.messages == r.due and r.dropped == 0 else "MISMATCH"
    yield (
        f"  sweep: read {r.read} schedule rows (+{r.read} connection point reads), "
        f"{r.messages} messages, {r.dropped} dropped, {r.sweep_seconds:.3f} s "
        f"[due {r.due}: {check}]"
    )
    yield (
        f"  the Schedule range query alone: {r.query_seconds:.3f} s; one matching no row: "
        f"{r.empty_query_seconds:.3f} s"
    )
    yield f"  full scan of Connections: {r.scanned} rows in {r.scan_seconds:.3f} s"


def report(results: Sequence[Result]) -> None:
    # The sweep fetches two entities per due connection: its index row and a point read.
    print(
        f"\n{'connections':>11} {'due':>5} {'read':>5} {'msgs':>5} {'sweep s':>7} {'ms/due':>6} "
        f"{'range q s':>9} {'empty q s':>9} | {'scan rows':>9} {'scan s':>7} {'ms/row':>6} | "
        f"{'scan/sweep: time':>16} {'entities':>8}"
    )
    for r in results:
        print(
            f"{r.size:>11} {r.due:>5} {r.read:>5} {r.messages:>5} {r.sweep_seconds:>7.3f} "
            f"{r.sweep_seconds * 1000 / max(r.read, 1):>6.2f} {r.query_seconds:>9.3f} "
            f"{r.empty_query_seconds:>9.3f} | {r.scanned:>9} {r.scan_seconds:>7.3f} "
            f"{r.scan_seconds * 1000 / max(r.scanned, 1):>6.3f} | "
            f"{r.scan_seconds / r.sweep_seconds:>16.1f} {r.scanned / max(2 * r.read, 1):>8.0f}"
        )
    if len(results) > 1:
        a, b = results[0], results[-1]
        print(
            f"\nfrom {a.size} to {b.size} connections ({b.size / a.size:.0f}x, due "
            f"{b.due / max(a.due, 1):.0f}x): sweep time {b.sweep_seconds / a.sweep_seconds:.1f}x, "
            f"range query {b.query_seconds / a.query_seconds:.1f}x, empty range query "
            f"{b.empty_query_seconds / a.empty_query_seconds:.1f}x, full scan "
            f"{b.scan_seconds / a.scan_seconds:.1f}x"
        )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.sweep",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--sizes",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[10_000, 100_000],
        help="connection counts, e.g. 10000,100000",
    )
    parser.add_argument("--due-fraction", type=float, default=0.01)
    parser.add_argument(
        "--seed-budget",
        type=float,
        default=180.0,
        help="seconds of seeding per size before stopping at a round's end",
    )
    parser.add_argument(
        "--writer",
        choices=["raw", "sdk"],
        default="raw",
        help="seed with bench/_batch.py's own requests or with TableClient.submit_transaction",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    print(f"sweep benchmark: {machine()}; Azurite {azurite_version()} in memory")
    print(
        f"due fraction {args.due_fraction}; due rows in the past {PAST_MINUTES} minute buckets, "
        f"the rest over the next {FUTURE_MINUTES} minute buckets; seeding with the "
        f"{args.writer} writer, budget {args.seed_budget:g} s per size"
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="keysteward-bench-") as tmp:
        for size in args.sizes:
            print(f"\n{size} connections:")
            result = run_size(size, args, Path(tmp))
            results.append(result)
            for line in describe(result):
                print(line)
    report(results)
    print(f"\n{load()}; total run time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
