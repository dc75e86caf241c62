"""How fast N managed PAT rotations go through the devhost's queue function, against a PAT API
that takes ``--latency-ms`` per call.

``python -m bench.rotation [--sizes 1,50,500] [--latency-ms 50]`` starts a fresh in-memory Azurite
and one Keysteward world on it (tests/peers/world.py; its rotation grace period swapped for
``--grace-minutes``, 0.01 by default, i.e. 0.6 s), connects ``--users`` users to ``entra-demo``
(the real oidc-provider over https, through MSAL) and, for each size N:

1. setup, not measured, with no injected latency: N managed PATs created over HTTP
   (``POST /api/connections/entra-demo/{user}/pats``, a thread pool), spread over the users;
2. the PAT API fake's latency set to ``--latency-ms``; every rotation started with
   ``POST /api/pats/{id}/rotate`` (a thread pool of ``--submit-threads``);
3. the rotations run where they would in Azure: the ``rotate_pat_step`` queue function
   (``rotation-requests``) of ``--devhosts`` devhost processes, each running at most host.json's
   batchSize + newBatchThreshold messages at once. The first message creates, tests and promotes
   the new PAT and re-enqueues itself, delayed by the grace period (at least 1 s); the second
   revokes the previous PAT.

Times come from the stored rows, on the devhost's clock: a PAT is promoted at its ``rotated_at``
and its previous PAT revoked at the ``updated_at`` of the write that ended the rotation. The
fake's own records confirm the end state (every original PAT revoked, every new one active) and
its call counter gives the PAT API calls made. Before each size the run time is estimated from the
previous size's rates; a size that would not fit in ``--budget`` seconds is capped, and says so.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from bench._common import azurite_version, load, machine, percentile
from bench._world import (
    GRACE_SETTING,
    CpuMeter,
    fresh_world,
    per_host_concurrency,
    queue_options,
    seconds,
)
from shared.storage.tables.pats import ManagedPat
from tests.peers.world import World

APP = "entra-demo"
POLL = 0.1  # seconds between looks at the fake's PATs while waiting
SCAN = 5.0  # seconds between scans of the Pats table while waiting
SETUP_THREADS = 16


@dataclass
class Result:
    size: int
    wanted: int
    create_seconds: float = 0.0
    submit_seconds: float = 0.0
    started: int = 0  # rotation POSTs answered 202
    retries: int = 0  # rotation POSTs sent again after a reset connection
    promoted: int = 0
    finished: int = 0  # previous PAT revoked, rotation over
    errors: list[str] = field(default_factory=list)
    promote_latencies: list[float] = field(default_factory=list)  # seconds from t0, each PAT
    revoke_latencies: list[float] = field(default_factory=list)
    grace_gaps: list[float] = field(default_factory=list)  # promoted -> previous revoked
    calls: Counter[tuple[str, str]] = field(default_factory=Counter)
    originals_revoked: int = 0
    currents_active: int = 0
    wall: float = float("nan")  # t0 -> the end seen here
    timed_out: bool = False
    cpu: str = ""

    @property
    def all_promoted(self) -> float:
        return max(self.promote_latencies, default=float("nan"))

    @property
    def all_revoked(self) -> float:
        return max(self.revoke_latencies, default=float("nan"))

    @property
    def rate(self) -> float:
        """Rotations promoted per second, over the time to the last promotion."""
        return self.promoted / self.all_promoted if self.promoted else float("nan")

    @property
    def ok(self) -> bool:
        n = self.size
        return (
            not self.timed_out
            and not self.errors
            and self.started == self.promoted == self.finished == n
            and self.originals_revoked == self.currents_active == n
        )


@contextmanager
def warm_sessions(world: World, count: int) -> Iterator[list[requests.Session]]:
    """``count`` keep-alive sessions with the admin key, connected one after the other.

    devhost listens with socketserver's backlog of 5: a burst of new connections on a busy machine
    overflows it and some are reset. Connecting first, one at a time, keeps that out of the
    measurement (each request below then goes over a connection already open)."""
    sessions = []
    try:
        for _ in range(count):
            session = requests.Session()
            session.trust_env = False
            session.headers["Authorization"] = f"Bearer {world.admin_key}"
            sessions.append(session)
            session.get(f"{world.devhost.url}/admin/functions", timeout=30).raise_for_status()
        yield sessions
    finally:
        for session in sessions:
            session.close()


def post(session: requests.Session, url: str, **kwargs: Any) -> tuple[requests.Response, int]:
    """The answer, and how many retries a reset connection took (at most one)."""
    try:
        return session.post(url, timeout=60, **kwargs), 0
    except requests.ConnectionError:
        return session.post(url, timeout=60, **kwargs), 1


def connect_users(world: World, count: int) -> list[str]:
    users = [f"rot-bench-{i}@contoso.com" for i in range(count)]
    for user in users:
        response = world.connect(APP, user)
        if response.status_code != 200:
            raise RuntimeError(f"connecting {user} failed: {response.status_code}")
    return users


def create_pats(
    world: World, users: list[str], count: int, tag: str, threads: int
) -> list[dict[str, Any]]:
    """``count`` managed PATs, round-robin over ``users``: the API's answers (secrets included)."""

    def batch(job: tuple[requests.Session, range]) -> list[dict[str, Any]]:
        session, indexes = job
        made = []
        for i in indexes:
            user = users[i % len(users)]
            body = {"display_name": f"bench {tag} {i}", "scope": "vso.packaging",
                    "lifetime_days": 30}  # fmt: skip
            response, _ = post(session, world.api(f"connections/{APP}/{user}/pats"), json=body)
            if response.status_code != 201:
                raise RuntimeError(f"create: {response.status_code} {response.text[:300]}")
            made.append(response.json())
        return made

    chunks = [range(start, count, threads) for start in range(min(threads, count))]
    with warm_sessions(world, len(chunks)) as sessions, ThreadPoolExecutor(len(chunks)) as pool:
        return [pat for part in pool.map(batch, zip(sessions, chunks, strict=True)) for pat in part]


def start_rotations(
    world: World, sessions: list[requests.Session], pat_ids: list[str]
) -> tuple[int, int, list[str]]:
    """POST /pats/{id}/rotate for each, one thread per session: (accepted with 202, retries,
    errors). A retried POST whose first try got through is merged into that rotation: 202."""

    def batch(job: tuple[requests.Session, list[str]]) -> tuple[int, int, list[str]]:
        session, ids = job
        accepted, retries, errors = 0, 0, []
        for pat_id in ids:
            try:
                response, retried = post(session, world.api(f"pats/{pat_id}/rotate"))
            except requests.RequestException as exc:
                errors.append(f"{pat_id}: {type(exc).__name__}")
                continue
            retries += retried
            if response.status_code == 202:
                accepted += 1
            else:
                errors.append(f"{pat_id}: {response.status_code} {response.text[:200]}")
        return accepted, retries, errors

    n = len(sessions)
    chunks = [pat_ids[start::n] for start in range(n)]
    with ThreadPoolExecutor(n) as pool:
        parts = list(pool.map(batch, zip(sessions, chunks, strict=True)))
    return sum(p[0] for p in parts), sum(p[1] for p in parts), [e for p in parts for e in p[2]]


def stored(world: World, ids: set[str]) -> dict[str, ManagedPat]:
    rows = world.store.select(ManagedPat, "RowKey eq @kind", {"kind": "pat"})
    return {p.id: p for p in rows if p.id in ids}


def wait_done(
    world: World, users: list[str], originals: dict[str, str], timeout: float
) -> tuple[dict[str, ManagedPat], bool]:
    """The rows once every rotation is over (or failed), and whether the time ran out.

    Waiting watches the fake (in memory: every original PAT revoked is the last step's call), so
    it adds no load on Azurite or the devhost; the Pats table is scanned only now and then, to
    notice a rotation that gave up, and once at the end."""
    deadline = time.monotonic() + timeout
    wanted, ids = set(originals.values()), set(originals)
    next_scan = time.monotonic() + SCAN
    while True:
        revoked = {p["authorization_id"] for u in users for p in world.ado_pats.pats(u)
                   if p["state"] == "revoked"}  # fmt: skip
        scan = wanted <= revoked or time.monotonic() >= next_scan
        if scan:
            rows = stored(world, ids)
            over = [p for p in rows.values()
                    if (p.rotations >= 1 and p.rotation_id is None) or p.last_error]  # fmt: skip
            if len(over) == len(ids):
                return rows, False
            next_scan = time.monotonic() + SCAN
        if time.monotonic() > deadline:
            return stored(world, ids), True
        time.sleep(POLL)


def run_size(
    world: World,
    users: list[str],
    size: int,
    wanted: int,
    *,
    args: argparse.Namespace,
    pids: dict[str, int | None],
) -> Result:
    result = Result(size, wanted)
    fake = world.ado_pats
    fake.latency = 0.0
    began = time.perf_counter()
    made = create_pats(world, users, size, f"n{wanted}-{time.time_ns()}", SETUP_THREADS)
    result.create_seconds = time.perf_counter() - began
    originals = {p["id"]: p["authorization_id"] for p in made}
    ids = set(originals)
    fake.latency = args.latency_ms / 1000
    calls_before = Counter(fake.calls)
    meter = CpuMeter(pids)
    with warm_sessions(world, min(args.submit_threads, size)) as sessions:
        meter.start()
        t0 = datetime.now(UTC)
        began = time.perf_counter()
        try:
            result.started, result.retries, result.errors = start_rotations(
                world, sessions, sorted(ids)
            )
            result.submit_seconds = time.perf_counter() - began
            rows, result.timed_out = wait_done(world, users, originals, args.timeout)
            result.wall = time.perf_counter() - began
        finally:
            meter.stop()
            fake.latency = 0.0
    result.cpu = meter.describe(result.wall)
    result.calls = Counter(fake.calls)
    result.calls.subtract(calls_before)
    for pat in rows.values():
        if pat.last_error:
            result.errors.append(f"{pat.id}: {pat.last_error}")
        if pat.rotations >= 1 and pat.rotated_at is not None:
            result.promoted += 1
            result.promote_latencies.append(seconds(pat.rotated_at, t0))
            if pat.rotation_id is None:
                result.finished += 1
                result.revoke_latencies.append(seconds(pat.updated_at, t0))
                result.grace_gaps.append(seconds(pat.updated_at, pat.rotated_at))
    at_fake = {p["authorization_id"]: p["state"] for u in users for p in fake.pats(u)}
    result.originals_revoked = sum(1 for a in originals.values() if at_fake.get(a) == "revoked")
    result.currents_active = sum(
        1 for p in rows.values() if at_fake.get(p.authorization_id or "") == "active"
    )
    return result


def estimate(previous: Result | None, size: int) -> float:
    """Seconds the size would take: creation and rotation at the previous size's rates."""
    if previous is None or not previous.promoted:
        return 0.0
    per_create = previous.create_seconds / previous.size
    per_rotation = previous.all_promoted / previous.promoted
    tail = previous.all_revoked - previous.all_promoted
    return size * (per_create + per_rotation) + max(tail, 0.0) + 5.0


def describe(r: Result, latency_ms: float) -> list[str]:
    calls = ", ".join(f"{m} {op} {n}" for (m, op), n in sorted(r.calls.items()) if n) or "none"
    total = sum(r.calls.values())
    lines = []
    if r.size < r.wanted:
        lines.append(f"  CAPPED: {r.size} of {r.wanted} rotations, to stay within the budget")
    lines += [
        f"  setup: {r.size} PATs created in {r.create_seconds:.1f} s (no injected latency)",
        f"  {r.started} rotations started in {r.submit_seconds:.2f} s of POSTs "
        f"({r.retries} retried after a reset connection); promoted "
        f"{r.promoted}, previous revoked {r.finished}; at the fake: originals revoked "
        f"{r.originals_revoked}, current PATs active {r.currents_active}"
        + ("; TIMED OUT" if r.timed_out else ""),
        f"  promoted after p50 {percentile(r.promote_latencies, 50):.2f} s, all "
        f"{r.all_promoted:.2f} s; previous revoked after p50 "
        f"{percentile(r.revoke_latencies, 50):.2f} s, all {r.all_revoked:.2f} s; "
        f"promoted -> previous revoked p50 {percentile(r.grace_gaps, 50):.2f} s",
        f"  PAT API calls ({latency_ms:g} ms each): {calls}; {total} in all, "
        f"{total / max(r.size, 1):.1f} per rotation",
        f"  {r.cpu}",
    ]
    for error in r.errors[:5]:
        lines.append(f"  error: {error}")
    if len(r.errors) > 5:
        lines.append(f"  ... and {len(r.errors) - 5} more errors")
    return lines


def report(results: Sequence[Result], latency_ms: float, concurrency: int) -> None:
    print(
        f"\n{'N':>5} {'latency ms':>10} {'all promoted s':>14} {'all prev revoked s':>18} "
        f"{'rotations/s':>11} {'PAT API calls':>13} {'calls/rot':>9} {'check':>8}"
    )
    for r in results:
        total = sum(r.calls.values())
        print(
            f"{r.size:>5} {latency_ms:>10g} {r.all_promoted:>14.2f} {r.all_revoked:>18.2f} "
            f"{r.rate:>11.1f} {total:>13} {total / max(r.size, 1):>9.1f} "
            f"{'ok' if r.ok else 'MISMATCH':>8}"
        )
    print(
        "\nfrom the first rotation POST; rotations/s: promoted / time to the last promotion; "
        "PAT API calls include connectionData (the test step)"
    )
    if len(results) > 1:
        a, b = results[0], results[-1]
        print(
            f"from {a.size} to {b.size} rotations ({b.size / a.size:.0f}x): time to all "
            f"promoted {b.all_promoted / a.all_promoted:.1f}x, to all previous revoked "
            f"{b.all_revoked / a.all_revoked:.1f}x, rotations/s {b.rate / a.rate:.1f}x"
        )
    best = max((r.rate for r in results if r.promoted), default=float("nan"))
    # One message per rotation does the create/test/promote steps: its round trips to the fake.
    floor = 2 * latency_ms / 1000
    print(
        f"queue concurrency {concurrency} messages at once; with two {latency_ms:g} ms PAT API "
        f"round trips per promotion, latency alone allows at most {concurrency / floor:.0f} "
        f"rotations/s; the best seen is {best:.1f} ({best * floor / concurrency:.0%} of that)"
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.rotation",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--sizes",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[1, 50, 500],
        help="rotations started at once, e.g. 1,50,500",
    )
    parser.add_argument("--latency-ms", type=float, default=50.0, help="per PAT API call")
    parser.add_argument("--users", type=int, default=4, help="connected entra users")
    parser.add_argument("--devhosts", type=int, default=1, help="devhost processes")
    parser.add_argument("--grace-minutes", type=float, default=0.01)
    parser.add_argument("--submit-threads", type=int, default=16)
    parser.add_argument(
        "--budget", type=float, default=240.0, help="seconds for all sizes; larger ones capped"
    )
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds per size at most")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    options = queue_options()
    per_host = per_host_concurrency(options)
    concurrency = per_host * args.devhosts
    print(f"rotation benchmark: {machine()}; Azurite {azurite_version()} in memory")
    print(
        f"PAT API latency {args.latency_ms:g} ms per call; {GRACE_SETTING}={args.grace_minutes:g} "
        f"({args.grace_minutes * 60:g} s; a delayed message waits at least 1 s); "
        f"{args.users} entra users; {args.devhosts} devhost(s) x (batchSize "
        f"{options.batch_size} + newBatchThreshold {options.new_batch_threshold}) = "
        f"{concurrency} rotation messages at once"
    )
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="keysteward-bench-") as tmp, ExitStack() as stack:
        directory = Path(tmp)
        azurite, world = stack.enter_context(fresh_world(directory, args.grace_minutes))
        hosts = [world.devhost]
        for i in range(args.devhosts - 1):
            host = world.another_devhost(directory / f"devhost-{i + 2}.log")
            stack.callback(host.stop)
            hosts.append(host)
        users = connect_users(world, args.users)
        assert azurite.proc is not None
        pids: dict[str, int | None] = {"azurite": azurite.proc.pid, "entra-op": world.entra_op.pid}
        for i, host in enumerate(hosts):
            pids[f"devhost{i + 1}"] = host.proc.pid if host.proc else None
        print(f"world up and {len(users)} users connected in {time.perf_counter() - started:.1f} s")
        for wanted in args.sizes:
            left = args.budget - (time.perf_counter() - started)
            size = wanted
            guess = estimate(results[-1] if results else None, wanted)
            if guess > left:
                previous = results[-1]
                per = (guess - 5.0) / wanted
                size = max(1, math.floor((left - 10.0) / per)) if per > 0 else wanted
                size = min(size, wanted)
                print(
                    f"\n{wanted} rotations: estimated {guess:.0f} s at the rates of "
                    f"{previous.size}, {left:.0f} s left in the budget: capped at {size}"
                )
            print(f"\n{size} rotations:" + (f" (estimated {guess:.0f} s)" if guess else ""))
            result = run_size(world, users, size, wanted, args=args, pids=pids)
            results.append(result)
            for line in describe(result, args.latency_ms):
                print(line)
    report(results, args.latency_ms, concurrency)
    print(f"\n{load()}; total run time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
