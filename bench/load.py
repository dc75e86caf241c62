"""Load: many clients asking several devhosts for tokens that expire every ``--ttl`` seconds.

``python -m bench.load [--seconds 60] [--clients 200] [--connections 50] [--devhosts 3]
[--ttl 30] [--min-ttl 5] [--max-requests 60000]`` starts a fresh in-memory Azurite and a
Keysteward world on it (tests/peers/world.py, unchanged: its devhost runs the timers), sets the
oidc-provider's access-token lifetime to ``--ttl`` seconds, starts ``--devhosts - 1`` more
devhosts on the same storage (``--no-timers``), connects ``--connections`` users to
``oidc-demo`` through the real flow, then lets ``--clients`` threads, each with its own
keep-alive ``requests.Session`` and spread round-robin over the devhosts, call
``GET /api/connections/oidc-demo/{user}/token?min_ttl=M`` back to back. Client ``i`` starts at
connection ``i mod N`` and walks them round-robin, so several clients on different devhosts ask
for the same connection at the same moment (what single-flight refresh is for). The run stops at
``--seconds`` or ``--max-requests`` requests, whichever comes first; each request may take
``REQUEST_TIMEOUT`` seconds at most.

"Tokens expire every 30 s" for these clients: a token is usable while it lives ``min_ttl`` more
seconds, so with the default ``--min-ttl 5`` each connection is refreshed once per ~25 s (the
token endpoint's default ``min_ttl`` is the provider's 300-second refresh margin, which a
30-second token never meets: every request would refresh).

Checks, from what the clients were served (same machine, same clock):
- every served token satisfied its request: ``expires_at >= sent + min_ttl`` (a token refreshed
  after the request arrived lives ``--ttl`` seconds, so it meets this too);
- refreshes versus expiries: per connection, the chain of tokens starting with the one stored when
  the window opened, sorted by ``expires_at`` (each distinct token is one lifetime). "Came due" is
  the number of those tokens whose usable life (``expires_at - min_ttl``) ended before the
  connection's last served request was sent: each needs exactly one refresh. "Replaced" is
  distinct tokens minus one. "Upstream" is the oidc-provider's own count of refresh_token grants
  in the window. Goal: all three equal, no refresh before its token came due, no grant errors (a
  double refresh of a rotated refresh token trips oidc-provider's reuse detection, revokes the
  grant and leaves the connection ``needs_reauth``);
- no connection ends anything but ``active``.

Also printed, to find the bottleneck: latency of requests that waited for a refresh apart from
the rest, the devhost's own time in the function (its log), what each process spent in CPU, how
many connections waited in each listener's accept queue (/proc/net/tcp), some of the kernel's
TCP counters (whole machine), and the storage SDK's "Connection pool is full" warnings.

The world's devhost also runs the refresh sweep (``0 */5 * * * *``): if it fires in the window,
its worker's forced refreshes (a 30-second token is always inside the 300-second margin) are
counted from the devhost logs and shown apart. The machine is small: the client threads share
its CPUs with the devhosts, Azurite and oidc-provider, so latency includes waiting for a CPU.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import re
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import requests

from bench._common import (
    app_env,
    azurite_version,
    key_ring_spec,
    load,
    machine,
    percentile,
    running_azurite,
)
from bench._world import CpuMeter
from shared.storage.tables.connections import Connection, Status
from tests.peers.devhost import DevHost
from tests.peers.world import LEASE_SECONDS, World, running_world

APP = "oidc-demo"
REQUEST_TIMEOUT = 30.0  # seconds one request may take
ERROR_PAUSE = 0.1  # a client pauses after an error instead of spinning on it
SLACK = 1.0  # seconds: expires_in is whole seconds, and the driver's clock read is not ours
_FUNCTION_TIME = re.compile(rb"get_token succeeded \(.* -> 200\) in (\d+) ms")
_SWEEP = re.compile(rb"refresh sweep: (\d+) due read, (\d+) enqueued")
_SWEEP_REFRESHED = re.compile(rb"refresh of oidc-demo/\S+: refreshed")
_POOL_FULL = re.compile(rb"Connection pool is full, discarding connection")
SAMPLE_EVERY = 0.25  # seconds between two looks at the listeners' accept queues
_TCP = ("ListenOverflows", "ListenDrops", "TCPSynRetrans", "TCPTimeouts")


def user_id(index: int) -> str:
    return f"load-{index:03d}@contoso.com"


@dataclass
class Seen:
    """One access token of one connection, as the clients were served it."""

    expires_at: float  # epoch seconds
    first_sent: float
    last_sent: float
    served: int = 0


@dataclass
class ClientResult:
    host: int
    latencies: list[float] = field(default_factory=list)  # seconds, 200s only
    waited: list[float] = field(default_factory=list)  # those served a token issued after sent
    others: list[float] = field(default_factory=list)  # those served a token issued before
    answered: list[tuple[int, float]] = field(default_factory=list)  # (connection, epoch) of 200s
    lost: Counter[int] = field(default_factory=Counter)  # connection -> 424 answers
    errors: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)
    tokens: dict[tuple[int, str], Seen] = field(default_factory=dict)  # (connection, digest)
    last_sent: dict[int, float] = field(default_factory=dict)  # connection -> epoch
    too_short: int = 0  # expires_at < sent + min_ttl
    expired: int = 0  # expires_at <= received
    inconsistent: int = 0  # one token served with two different expires_at
    margin: float = float("inf")  # smallest expires_at - (sent + min_ttl)


class Budget:
    """At most ``count`` requests in all, none sent after the deadline."""

    def __init__(self, count: int) -> None:
        self._count = count
        self._tickets: Iterator[int] = itertools.count()  # next() is atomic in CPython
        self.deadline = float("inf")
        self.capped = False

    def take(self) -> bool:
        if time.monotonic() >= self.deadline:
            return False
        if next(self._tickets) >= self._count:
            self.capped = True
            return False
        return True


@dataclass
class Plan:
    urls: list[str]  # token URL of each connection on each devhost: urls[host * n + connection]
    connections: int
    key: str
    min_ttl: int
    ttl: int


def _record(result: ClientResult, plan: Plan, conn: int, sent: float, body: dict[str, str]) -> bool:
    """Checks and keeps one served token; whether it was issued after the request was sent."""
    received = time.time()
    expires = datetime.fromisoformat(body["expires_at"]).timestamp()
    digest = hashlib.sha256(body["access_token"].encode()).hexdigest()[:16]
    margin = expires - (sent + plan.min_ttl)
    result.margin = min(result.margin, margin)
    result.too_short += margin < 0
    result.expired += expires <= received
    result.last_sent[conn] = max(result.last_sent.get(conn, 0.0), sent)
    seen = result.tokens.get((conn, digest))
    if seen is None:
        seen = result.tokens[conn, digest] = Seen(expires, sent, sent)
    elif seen.expires_at != expires:
        result.inconsistent += 1
    seen.first_sent = min(seen.first_sent, sent)
    seen.last_sent = max(seen.last_sent, sent)
    seen.served += 1
    result.answered.append((conn, received))
    return expires - plan.ttl >= sent


def _error(result: ClientResult, what: str, detail: str) -> None:
    result.errors[what] += 1
    result.examples.setdefault(what, detail[:300])
    time.sleep(ERROR_PAUSE)


def client(index: int, host: int, plan: Plan, budget: Budget, go: threading.Event) -> ClientResult:
    result = ClientResult(host)
    session = requests.Session()
    session.trust_env = False  # loopback: no proxy or .netrc look-ups per request
    session.headers["Authorization"] = f"Bearer {plan.key}"
    params = {"min_ttl": str(plan.min_ttl)}
    base = host * plan.connections
    try:
        go.wait()
        for step in itertools.count():
            if not budget.take():
                break
            conn = (index + step) % plan.connections
            sent = time.time()
            started = time.perf_counter()
            try:
                response = session.get(
                    plan.urls[base + conn], params=params, timeout=REQUEST_TIMEOUT
                )
            except requests.RequestException as exc:
                _error(result, type(exc).__name__, str(exc))
                continue
            latency = time.perf_counter() - started
            if response.status_code != 200:
                try:
                    code = str(response.json().get("error"))
                except ValueError:
                    code = "?"
                if response.status_code == 424:
                    result.lost[conn] += 1
                _error(result, f"HTTP {response.status_code} {code}", response.text)
                continue
            try:
                fresh = _record(result, plan, conn, sent, response.json())
            except (ValueError, KeyError, TypeError) as exc:
                _error(result, f"200 with a bad body ({type(exc).__name__})", response.text)
                continue
            result.latencies.append(latency)
            (result.waited if fresh else result.others).append(latency)
    finally:
        session.close()
    return result


# -- the run -----------------------------------------------------------------------------------


@dataclass
class Window:
    started: float = 0.0  # epoch
    elapsed: float = 0.0  # seconds, go -> last client done
    results: list[ClientResult] = field(default_factory=list)
    stuck: int = 0  # clients still running when given up on
    capped: bool = False
    refreshes: int = 0  # oidc-provider refresh_token grants
    grant_errors: dict[str, int] = field(default_factory=dict)
    grants_revoked: int = 0
    initial: dict[int, tuple[str, float]] = field(default_factory=dict)  # stored at the start
    final: Counter[str] = field(default_factory=Counter)  # connection status at the end
    failures: int = 0  # refresh_failures left on connections
    lost: dict[int, float] = field(default_factory=dict)  # connection -> needs_reauth (audit)
    last_errors: list[str] = field(default_factory=list)
    function_ms: list[int] = field(default_factory=list)  # devhost's own time, from the logs
    sweeps: list[tuple[int, int]] = field(default_factory=list)  # (read, enqueued)
    sweep_refreshed: int = 0
    pool_full: int = 0  # urllib3 warnings in the devhost logs
    queues: dict[str, tuple[int, float]] = field(default_factory=dict)  # name -> (max, mean)
    cpu: str = ""
    tcp: dict[str, int] = field(default_factory=dict)  # kernel counters' change in the window


def stored(world: World, users: Sequence[str]) -> dict[int, tuple[str, float]]:
    """Each connection's stored access token (digest, expires_at) right now."""
    found = {}
    for i, user in enumerate(users):
        row = world.connection(APP, user)
        assert row.access_token is not None
        assert row.access_expires_at is not None
        digest = hashlib.sha256(row.access_token.reveal().encode()).hexdigest()[:16]
        found[i] = (digest, row.access_expires_at.timestamp())
    return found


def tcp_counters() -> dict[str, int]:
    """Some of the kernel's TcpExt counters (Linux /proc/net/netstat; the whole machine)."""
    lines = [line.split() for line in Path("/proc/net/netstat").read_text().splitlines()]
    for names, values in itertools.pairwise(lines):
        if names[0] == values[0] == "TcpExt:":
            found = dict(zip(names[1:], values[1:], strict=True))
            return {name: int(found.get(name, 0)) for name in _TCP}
    return {}


def refresh_counters(world: World) -> tuple[int, dict[str, int], int]:
    stats = world.oidc.stats()
    return (
        int(stats["grants"].get("refresh_token", 0)),
        dict(stats.get("grant_errors", {})),
        int(stats.get("grants_revoked", 0)),
    )


def read_logs(hosts: Sequence[DevHost], offsets: Sequence[int], window: Window) -> None:
    for host, offset in zip(hosts, offsets, strict=True):
        with host.log.open("rb") as handle:
            handle.seek(offset)
            text = handle.read()
        window.function_ms += [int(m.group(1)) for m in _FUNCTION_TIME.finditer(text)]
        window.sweeps += [(int(m.group(1)), int(m.group(2))) for m in _SWEEP.finditer(text)]
        window.sweep_refreshed += len(_SWEEP_REFRESHED.findall(text))
        window.pool_full += len(_POOL_FULL.findall(text))


class AcceptQueues:
    """How many connections wait to be accepted on some listening ports: the ``rx_queue`` of a
    LISTEN socket in /proc/net/tcp, looked at every ``SAMPLE_EVERY`` seconds by one thread."""

    def __init__(self, ports: dict[str, int]) -> None:
        self._names = {port: name for name, port in ports.items()}
        self._samples: dict[str, list[int]] = {name: [] for name in ports}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="accept-queues", daemon=True)

    def _look(self) -> None:
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            port = int(fields[1].rpartition(":")[2], 16)
            if fields[3] == "0A" and port in self._names:  # 0A: LISTEN
                self._samples[self._names[port]].append(int(fields[4].partition(":")[2], 16))

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY):
            self._look()

    def __enter__(self) -> AcceptQueues:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def summary(self) -> dict[str, tuple[int, float]]:
        return {
            name: (max(values), sum(values) / len(values))
            for name, values in self._samples.items()
            if values
        }


def run_window(
    world: World,
    hosts: list[DevHost],
    users: list[str],
    *,
    pids: dict[str, int | None],
    ports: dict[str, int],
    args: argparse.Namespace,
) -> Window:
    window = Window()
    plan = Plan(
        urls=[h.api(f"connections/{APP}/{u}/token") for h in hosts for u in users],
        connections=len(users),
        key=world.admin_key,
        min_ttl=args.min_ttl,
        ttl=args.ttl,
    )
    budget = Budget(args.max_requests)
    go = threading.Event()
    results: list[ClientResult | None] = [None] * args.clients

    def one(i: int) -> None:
        results[i] = client(i, i % len(hosts), plan, budget, go)

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(args.clients)]
    for thread in threads:
        thread.start()
    try:
        window.initial = stored(world, users)
        before = refresh_counters(world)
        offsets = [h.log.stat().st_size for h in hosts]
        meter = CpuMeter(pids)
        tcp = tcp_counters()
        meter.start()
        started = time.perf_counter()
        window.started = time.time()
        budget.deadline = time.monotonic() + args.seconds
    except BaseException:
        budget.deadline = 0.0  # the clients wake up and stop at once
        raise
    finally:
        go.set()
    give_up = time.monotonic() + args.seconds + REQUEST_TIMEOUT + 10
    with AcceptQueues(ports) as queues:
        for thread in threads:
            thread.join(max(give_up - time.monotonic(), 0.0))
    window.elapsed = time.perf_counter() - started
    window.queues = queues.summary()
    meter.stop()
    window.cpu = meter.describe(window.elapsed)
    window.tcp = {k: v - tcp.get(k, 0) for k, v in tcp_counters().items()}
    window.stuck = sum(thread.is_alive() for thread in threads)
    window.capped = budget.capped
    window.results = [r for r in results if r is not None]
    after = refresh_counters(world)
    window.refreshes = after[0] - before[0]
    window.grant_errors = {
        k: v - before[1].get(k, 0) for k, v in after[1].items() if v - before[1].get(k, 0)
    }
    window.grants_revoked = after[2] - before[2]
    read_logs(hosts, offsets, window)
    for i, user in enumerate(users):
        row: Connection = world.connection(APP, user)
        window.final[row.status.value] += 1
        flips = world.audit(row.resource, "connection.needs_reauth")
        if flips:
            window.lost[i] = min(e.at for e in flips).timestamp()
        window.failures += row.refresh_failures
        if row.last_error:
            window.last_errors.append(f"{user}: {row.last_error}")
    return window


def connect_all(world: World, count: int) -> list[str]:
    users = [user_id(i) for i in range(count)]
    for user in users:
        response = world.connect(APP, user)
        found = world.store.read(Connection, APP, user)
        if response.status_code != 200 or found is None or found.status != Status.ACTIVE:
            raise RuntimeError(f"connecting {user}: {response.status_code} {response.text[:300]}")
    return users


# -- what the tokens say -------------------------------------------------------------------------


@dataclass
class Chains:
    came_due: int = 0  # tokens whose usable life ended before the connection's last request
    replaced: int = 0  # distinct tokens per connection minus one (the stored one counts)
    early: int = 0  # a replacement issued before the token it replaced came due
    never_seen: int = 0  # connections no client got a token for
    lives: list[float] = field(default_factory=list)  # issued -> replaced, seconds


def chains(window: Window, ttl: int, min_ttl: int) -> Chains:
    tokens: dict[int, dict[str, Seen]] = {i: {} for i in window.initial}
    last_sent: dict[int, float] = {}
    for result in window.results:
        for (conn, digest), seen in result.tokens.items():
            mine = tokens[conn].get(digest)
            if mine is None:
                tokens[conn][digest] = Seen(
                    seen.expires_at, seen.first_sent, seen.last_sent, seen.served
                )
            else:
                mine.first_sent = min(mine.first_sent, seen.first_sent)
                mine.last_sent = max(mine.last_sent, seen.last_sent)
                mine.served += seen.served
        for conn, sent in result.last_sent.items():
            last_sent[conn] = max(last_sent.get(conn, 0.0), sent)
    out = Chains()
    for conn, (digest, expires) in window.initial.items():
        if conn not in last_sent:
            out.never_seen += 1
            continue
        lifetimes = {digest: expires} | {d: s.expires_at for d, s in tokens[conn].items()}
        chain = sorted(lifetimes.values())
        out.replaced += len(chain) - 1
        out.came_due += sum(1 for e in chain if e - min_ttl < last_sent[conn])
        for old, new in itertools.pairwise(chain):
            issued = new - ttl
            out.early += issued < old - min_ttl - SLACK
            out.lives.append(issued - (old - ttl))
    return out


# -- the report ----------------------------------------------------------------------------------


def _ms(values: Sequence[float], q: float) -> str:
    return f"{percentile(values, q) * 1000:.0f}"


def report(window: Window, args: argparse.Namespace, devhosts: int) -> bool:
    latencies = [x for r in window.results for x in r.latencies]
    served = len(latencies)
    errors: Counter[str] = Counter()
    examples: dict[str, str] = {}
    for r in window.results:
        errors.update(r.errors)
        for what, text in r.examples.items():
            examples.setdefault(what, text)
    sent = served + sum(errors.values())
    ended = "the request cap" if window.capped else "time"
    print(
        f"\nwindow: {window.elapsed:.1f} s ({args.seconds} s asked, ended by {ended}); "
        f"{args.clients} clients; {window.stuck} clients still running when given up on"
    )
    print(
        f"requests: {sent} sent, {served} served (200), {sum(errors.values())} errors; "
        f"{served / window.elapsed:.0f} served/s"
    )
    for what, count in errors.most_common():
        print(f"  error {what}: {count}  e.g. {examples[what]!r}")
    print(
        f"latency ms (client, 200s): p50 {_ms(latencies, 50)}, p95 {_ms(latencies, 95)}, "
        f"p99 {_ms(latencies, 99)}, max {_ms(latencies, 100)}"
    )
    waited = [x for r in window.results for x in r.waited]
    stored_only = [x for r in window.results for x in r.others]
    print(
        f"  {len(waited)} served a token issued after they were sent (they waited for a refresh): "
        f"p50 {_ms(waited, 50)}, p99 {_ms(waited, 99)}; the other {len(stored_only)}: "
        f"p50 {_ms(stored_only, 50)}, p99 {_ms(stored_only, 99)}"
    )
    fn = [x / 1000 for x in window.function_ms]
    print(
        f"devhost's own time in get_token (its logs, {len(fn)} lines): p50 {_ms(fn, 50)}, "
        f"p95 {_ms(fn, 95)}, p99 {_ms(fn, 99)}, max {_ms(fn, 100)} ms"
    )
    for host in range(devhosts):
        mine = [x for r in window.results if r.host == host for x in r.latencies]
        print(
            f"  devhost {host + 1}: {len(mine)} served, p50 {_ms(mine, 50)} ms, "
            f"p99 {_ms(mine, 99)} ms"
        )
    return validity(window, args) & refreshes(window, args)


def validity(window: Window, args: argparse.Namespace) -> bool:
    too_short = sum(r.too_short for r in window.results)
    expired = sum(r.expired for r in window.results)
    inconsistent = sum(r.inconsistent for r in window.results)
    margin = min((r.margin for r in window.results), default=float("nan"))
    print(
        f"tokens served: {too_short} with expires_at < sent + min_ttl ({args.min_ttl} s), "
        f"{expired} already expired on arrival, {inconsistent} served with two expiries; "
        f"smallest expires_at - (sent + min_ttl) {margin:.3f} s"
    )
    return too_short == expired == inconsistent == 0


def lost(window: Window) -> None:
    """Connections that went ``needs_reauth``: when, and how many 200s came after (the provider
    revokes the whole grant when it sees a refresh token reused, so those tokens are dead)."""
    for conn, at in sorted(window.lost.items(), key=lambda item: item[1]):
        after = sum(1 for r in window.results for c, t in r.answered if c == conn and t > at)
        errors = sum(r.lost.get(conn, 0) for r in window.results)
        print(
            f"  {user_id(conn)}: needs_reauth (audit) {at - window.started:.1f} s into the window; "
            f"answered 200 after that moment: {after}; answered 424: {errors}"
        )


def refreshes(window: Window, args: argparse.Namespace) -> bool:
    c = chains(window, args.ttl, args.min_ttl)
    n = len(window.initial)
    lives = sorted(c.lives)
    print(
        f"refreshes: upstream (oidc-provider refresh_token grants) {window.refreshes}; "
        f"tokens that came due (expires_at - min_ttl before the connection's last request) "
        f"{c.came_due}; replacements the clients saw (distinct tokens - 1 per connection, the "
        f"stored one included) {c.replaced}"
    )
    print(
        f"  by the clock: {n} connections x {window.elapsed:.0f} s / "
        f"({args.ttl} - {args.min_ttl}) s = ~{n * window.elapsed / (args.ttl - args.min_ttl):.0f}"
        f" usable lifetimes ({n * window.elapsed / args.ttl:.0f} whole {args.ttl}-s ones); "
        f"token issued -> replacement issued: min {lives[0] if lives else float('nan'):.1f} s, "
        f"p50 {percentile(lives, 50):.1f} s, max {percentile(lives, 100):.1f} s"
    )
    print(
        f"  replaced before they came due: {c.early}; connections never served: "
        f"{c.never_seen}; grant errors {window.grant_errors or 'none'}; grants revoked "
        f"{window.grants_revoked}"
    )
    sweeps = ", ".join(f"{read} due read/{queued} enqueued" for read, queued in window.sweeps)
    print(
        f"  refresh sweep in the window: {sweeps or 'did not run'}; its worker refreshed "
        f"{window.sweep_refreshed}; upstream refreshes whose token no client was served: "
        f"{window.refreshes - c.replaced}"
    )
    final = ", ".join(f"{count} {status}" for status, count in sorted(window.final.items()))
    print(
        f"connections at the end: {final}; refresh_failures {window.failures}; "
        f"last_error on {len(window.last_errors)}"
    )
    for line in window.last_errors[:5]:
        print(f"  {line}")
    lost(window)
    return (
        window.refreshes == c.came_due == c.replaced
        and c.early == c.never_seen == window.grants_revoked == 0
        and not window.grant_errors
        and window.final == Counter({Status.ACTIVE.value: n})
    )


# -- main ----------------------------------------------------------------------------------------


def run(args: argparse.Namespace, directory: Path) -> bool:
    with running_azurite(directory / "azurite.log") as azurite:
        started = time.perf_counter()
        lease = {"KEYSTEWARD_REFRESH_LEASE_SECONDS": str(args.lease)} if args.lease else None
        with running_world(app_env(azurite, key_ring_spec()), directory, extra_env=lease) as world:
            world_s = time.perf_counter() - started
            world.oidc.set_access_token_ttl(args.ttl)  # before any token is issued
            hosts = [world.devhost]
            try:
                started = time.perf_counter()
                for i in range(2, args.devhosts + 1):
                    hosts.append(world.another_devhost(directory / f"devhost-{i}.log"))
                more_s = time.perf_counter() - started
                started = time.perf_counter()
                users = connect_all(world, args.connections)
                print(
                    f"setup: world {world_s:.1f} s, {args.devhosts - 1} more devhosts "
                    f"{more_s:.1f} s, {len(users)} connections through the real flow "
                    f"{time.perf_counter() - started:.1f} s"
                )
                assert azurite.proc is not None
                pids: dict[str, int | None] = {
                    f"devhost{i + 1}": h.proc.pid if h.proc else None for i, h in enumerate(hosts)
                }
                pids |= {"azurite": azurite.proc.pid, "oidc-provider": world.oidc.pid}
                ports = {f"devhost{i + 1}": h.port for i, h in enumerate(hosts)}
                ports |= {"azurite-table": azurite.table_port, "azurite-queue": azurite.queue_port}
                ports["oidc-provider"] = world.oidc.port
                window = run_window(world, hosts, users, pids=pids, ports=ports, args=args)
            finally:
                for host in hosts[1:]:
                    host.stop()
    ok = report(window, args, len(hosts))
    print(window.cpu)
    tcp = ", ".join(f"{name} {count}" for name, count in window.tcp.items())
    print(f"kernel TCP counters, change in the window (whole machine): {tcp or 'unavailable'}")
    queues = ", ".join(
        f"{name} max {most} mean {mean:.1f}" for name, (most, mean) in window.queues.items()
    )
    print(
        f"connections waiting to be accepted (listen queue, every {SAMPLE_EVERY} s): {queues}; "
        f"urllib3 'Connection pool is full, discarding connection' in the devhost logs: "
        f"{window.pool_full}"
    )
    return ok


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.load",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="how long clients send")
    parser.add_argument("--clients", type=int, default=200, help="client threads")
    parser.add_argument("--connections", type=int, default=50, help="connected users")
    parser.add_argument("--devhosts", type=int, default=3, help="devhost processes in all")
    parser.add_argument("--ttl", type=int, default=30, help="access-token lifetime, seconds")
    parser.add_argument(
        "--lease", type=int, default=30,
        help="KEYSTEWARD_REFRESH_LEASE_SECONDS (the production default; 0: the test world's 6 s)",
    )  # fmt: skip
    parser.add_argument("--min-ttl", type=int, default=5, help="min_ttl the clients ask for")
    parser.add_argument("--max-requests", type=int, default=60000, help="hard cap on requests")
    args = parser.parse_args(argv)
    if not 0 <= args.min_ttl < args.ttl:
        parser.error("--min-ttl must be at least 0 and below --ttl")
    if min(args.clients, args.connections, args.devhosts, args.max_requests) < 1:
        parser.error("--clients, --connections, --devhosts and --max-requests must be positive")
    if not 0 < args.seconds <= 600:
        parser.error("--seconds must be above 0 and at most 600")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    print(f"load benchmark: {machine()}; Azurite {azurite_version()} in memory")
    print(
        f"{args.devhosts} devhosts on one Azurite (the first runs the timers, the others "
        f"--no-timers); {args.connections} {APP} connections; oidc-provider access tokens live "
        f"{args.ttl} s; {args.clients} client threads ask min_ttl={args.min_ttl}; refresh "
        f"lease {args.lease or LEASE_SECONDS} s; at most {args.max_requests} requests"
    )
    print(
        "the client threads run on the same small machine as the servers and compete with them "
        "for its CPUs: latency includes waiting for a CPU, on either side"
    )
    with tempfile.TemporaryDirectory(prefix="keysteward-load-") as tmp:
        ok = run(args, Path(tmp))
    print(
        f"\nresult: {'ok' if ok else 'CHECKS FAILED'}; {load()}; "
        f"total run time {time.perf_counter() - started:.1f} s"
    )
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
