from __future__ import annotations

import itertools
import json
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shared.foundation.clock import FixedClock, SystemClock
from shared.foundation.errors import LeaseLost, NotFound
from shared.storage.lease import Leases, holder, released
from shared.storage.store import Row, Store
from tests.peers.processes import ROOT, spawn

TTL = timedelta(seconds=30)


def test_racing_threads_exactly_one_acquires(store: Store) -> None:
    store.insert("Guarded", Row("conn", "alice", {"value": 0}))
    leases = Leases(store, SystemClock())
    barrier = threading.Barrier(12)
    winners: list[str] = []

    def race(owner: str) -> None:
        barrier.wait()
        if leases.acquire("Guarded", "conn", "alice", owner=owner, ttl=TTL):
            winners.append(owner)

    threads = [threading.Thread(target=race, args=(f"t{i}",)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1
    row = store.get("Guarded", "conn", "alice")
    assert row is not None
    assert row.data["value"] == 0  # the lease merges; it never clobbers the row
    assert holder(row, datetime.now(UTC)) == winners[0]


def test_renew_merges_its_extra_fields_in_the_same_conditional_write(store: Store) -> None:
    clock = FixedClock(datetime(2026, 11, 22, tzinfo=UTC))
    leases = Leases(store, clock)
    store.insert("Guarded", Row("conn", "erin", {"token": "old"}))
    lease = leases.acquire("Guarded", "conn", "erin", owner="me", ttl=TTL)
    assert lease is not None
    renewed = leases.renew(lease, TTL, also={"started": True})
    row = store.get("Guarded", "conn", "erin")
    assert row is not None
    assert row.data["started"] is True
    assert row.data["token"] == "old"
    assert holder(row, clock.now()) == "me"
    with pytest.raises(LeaseLost):
        leases.renew(lease, TTL)  # the first ETag is spent: only the renewed lease renews again
    assert leases.release(renewed) is True


def test_release_held_lets_go_after_the_holder_wrote_the_row_but_never_anothers(
    store: Store,
) -> None:
    clock = FixedClock(datetime(2026, 11, 22, tzinfo=UTC))
    leases = Leases(store, clock)
    store.insert("Guarded", Row("conn", "fay", {}))
    lease = leases.acquire("Guarded", "conn", "fay", owner="me", ttl=TTL)
    assert lease is not None
    store.update("Guarded", Row("conn", "fay", {"step": 2}), etag=lease.etag, merge=True)
    assert leases.release(lease) is False  # its ETag is stale now
    assert leases.release_held("Guarded", "conn", "fay", "someone-else") is False
    row = store.get("Guarded", "conn", "fay")
    assert row is not None
    assert holder(row, clock.now()) == "me"
    assert leases.release_held("Guarded", "conn", "fay", "me") is True
    row = store.get("Guarded", "conn", "fay")
    assert row is not None
    assert holder(row, clock.now()) is None
    assert row.data["step"] == 2


def test_a_missing_row_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        Leases(store, SystemClock()).acquire("Locks", "x", "y", owner="o", ttl=TTL)


def test_an_expired_lease_can_be_taken_over_and_the_old_holder_loses_it(store: Store) -> None:
    clock = FixedClock(datetime(2026, 11, 22, tzinfo=UTC))
    leases = Leases(store, clock)
    store.insert("Guarded", Row("conn", "bob", {}))
    first = leases.acquire("Guarded", "conn", "bob", owner="crashed", ttl=TTL)
    assert first is not None
    assert leases.acquire("Guarded", "conn", "bob", owner="next", ttl=TTL) is None
    clock.advance(TTL + timedelta(seconds=1))
    second = leases.acquire("Guarded", "conn", "bob", owner="next", ttl=TTL)
    assert second is not None
    with pytest.raises(LeaseLost):
        leases.renew(first, TTL)
    assert leases.release(first) is False
    row = store.get("Guarded", "conn", "bob")
    assert row is not None
    assert holder(row, clock.now()) == "next"


def test_renew_extends_and_release_frees(store: Store) -> None:
    clock = FixedClock(datetime(2026, 11, 22, tzinfo=UTC))
    leases = Leases(store, clock)
    store.insert("Guarded", Row("conn", "carol", {}))
    lease = leases.acquire("Guarded", "conn", "carol", owner="me", ttl=TTL)
    assert lease is not None
    clock.advance(timedelta(seconds=20))
    lease = leases.renew(lease, TTL)
    clock.advance(timedelta(seconds=20))  # 40 s after acquiring: still held thanks to the renewal
    assert leases.acquire("Guarded", "conn", "carol", owner="other", ttl=TTL) is None
    assert leases.release(lease) is True
    assert leases.acquire("Guarded", "conn", "carol", owner="other", ttl=TTL) is not None


def test_the_holder_can_store_its_result_and_release_in_one_write(store: Store) -> None:
    leases = Leases(store, SystemClock())
    store.insert("Guarded", Row("conn", "dave", {"token": "old"}))
    lease = leases.acquire("Guarded", "conn", "dave", owner="me", ttl=TTL)
    assert lease is not None
    store.update(
        "Guarded",
        Row("conn", "dave", {"token": "new", **released()}),
        etag=lease.etag,
        merge=True,
    )
    row = store.get("Guarded", "conn", "dave")
    assert row is not None
    assert row.data["token"] == "new"
    assert holder(row, datetime.now(UTC)) is None


WORKER = """
import json, sys, time
from datetime import timedelta
from shared.foundation.clock import SystemClock
from shared.storage.lease import Leases
from shared.config.settings import StorageSettings
from shared.storage.clients import table_service
from shared.storage.store import Row, Store

conn, name, rounds, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
store = Store(table_service(StorageSettings(connection_string=conn)))
leases = Leases(store, SystemClock())
spans = []
for _ in range(rounds):
    deadline = time.monotonic() + 60
    lease = None
    while lease is None and time.monotonic() < deadline:
        lease = leases.acquire("Locks", "shared", "counter", owner=name, ttl=timedelta(seconds=10))
        if lease is None:
            time.sleep(0.005)  # back off while the other process holds it
    assert lease is not None
    start = time.time()
    row = store.get("Counter", "c", "c")
    value = row.data["n"] if row else 0
    time.sleep(0.002)  # widen the window a lost update would need
    store.upsert("Counter", Row("c", "c", {"n": value + 1}))
    spans.append((start, time.time()))
    leases.release(lease)
json.dump(spans, open(out, "w"))
"""


def test_two_processes_never_hold_the_lease_at_once(
    store: Store, storage_settings, tmp_path: Path
) -> None:
    rounds = 15
    store.insert("Locks", Row("shared", "counter", {}))
    outputs = [tmp_path / "a.json", tmp_path / "b.json"]
    command = [sys.executable, "-c", WORKER, storage_settings.connection_string]
    procs = [
        spawn(
            [*command, name, str(rounds), str(out)],
            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
            log=tmp_path / f"{name}.log",
        )
        for name, out in zip(("a", "b"), outputs, strict=True)
    ]
    for proc in procs:
        assert proc.wait(timeout=120) == 0, (tmp_path / "a.log").read_text()
    counter = store.get("Counter", "c", "c")
    assert counter is not None
    assert counter.data["n"] == 2 * rounds  # no lost update: the critical sections never overlapped
    spans = sorted(s for out in outputs for s in json.loads(out.read_text()))
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end <= start
