"""The token endpoint serving a FRESH token, against raw Azurite point reads of the same row.

``python -m bench.token_endpoint [--seconds N] [--requests N]`` starts Azurite and a Keysteward
world (devhost, oidc-provider, the fakes; tests/peers/world.py), connects one ``oidc-demo`` user,
then at 1, 8 and 32 concurrent clients (each its own keep-alive session) measures
``GET /api/connections/oidc-demo/{user}/token`` and, as the baseline, the same number of
``TableClient.get_entity`` calls of that user's Connections row. Each run stops at ``--requests``
requests or ``--seconds`` seconds, whichever comes first. The oidc-provider's refresh count must
not move: every token served is the stored one.

Rows:
  token        through the world's devhost, as it is;
  token+nd     a what-if: a second devhost on the same storage whose sockets set TCP_NODELAY
               (via a sitecustomize in a temporary directory; devhost's code is untouched);
  baseline     raw SDK point reads.

``fn ms`` is devhost's own time in the function (from its log, whole milliseconds); the CPU
columns are what each process used per request. The load generator, devhost and Azurite share
this machine's CPUs.
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import requests
from azure.data.tables import TableClient

from bench._common import (
    app_env,
    azurite_version,
    cpu_seconds,
    key_ring_spec,
    load,
    machine,
    own_cpu_seconds,
    percentile,
    running_azurite,
)
from shared.storage.tablekeys import encode_key
from shared.storage.tables.connections import Connection
from tests.peers.azurite import Azurite
from tests.peers.devhost import DevHost, start_devhost
from tests.peers.world import World, running_world

APP = "oidc-demo"
USER = "bench-user@contoso.com"
LEVELS = (1, 8, 32)
_FUNCTION_TIME = re.compile(rb"get_token succeeded \(.* -> 200\) in (\d+) ms")
_NODELAY = "import socketserver\nsocketserver.StreamRequestHandler.disable_nagle_algorithm = True\n"

Call = Callable[[], bool]  # one request; True when it was answered as expected


@dataclass
class Target:
    """What one row of the table measures."""

    name: str
    make: Callable[[], Call]  # a new client: its own session or TableClient
    server: DevHost | None = None


@dataclass
class Run:
    name: str
    concurrency: int
    latencies: list[float] = field(default_factory=list)  # seconds
    errors: int = 0
    elapsed: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)  # seconds, by process
    function_ms: list[int] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return len(self.latencies) + self.errors

    @property
    def throughput(self) -> float:
        return self.requests / self.elapsed if self.elapsed else float("nan")

    def p(self, q: float) -> float:
        return percentile(self.latencies, q) * 1000

    def cpu_per_request(self, process: str) -> float:
        return self.cpu.get(process, float("nan")) * 1000 / max(self.requests, 1)


class Budget:
    """Hands out at most ``count`` tickets until ``seconds`` after ``start`` (one per run)."""

    def __init__(self, count: int, seconds: float) -> None:
        self._left = count
        self._seconds = seconds
        self._deadline = float("inf")
        self._lock = threading.Lock()

    def start(self) -> None:
        self._deadline = time.perf_counter() + self._seconds

    def take(self) -> bool:
        with self._lock:
            if self._left <= 0 or time.perf_counter() >= self._deadline:
                return False
            self._left -= 1
            return True


def _client(
    make: Callable[[], Call],
    budget: Budget,
    ready: threading.Barrier,
    run: Run,
    lock: threading.Lock,
) -> None:
    try:
        call = make()
        call()  # warm-up: opens this client's keep-alive connection
    except BaseException:
        ready.abort()  # the run fails at once instead of waiting for this client
        raise
    ready.wait()
    latencies: list[float] = []
    errors = 0
    while budget.take():
        started = time.perf_counter()
        try:
            ok = call()
        except (requests.RequestException, OSError, ValueError):
            ok = False
        if ok:
            latencies.append(time.perf_counter() - started)
        else:
            errors += 1
    with lock:
        run.latencies.extend(latencies)
        run.errors += errors


def run_once(target: Target, concurrency: int, azurite: Azurite, args: argparse.Namespace) -> Run:
    run = Run(target.name, concurrency)
    budget = Budget(args.requests, args.seconds)
    ready = threading.Barrier(concurrency + 1)
    lock = threading.Lock()
    threads = [
        threading.Thread(target=_client, args=(target.make, budget, ready, run, lock), daemon=True)
        for _ in range(concurrency)
    ]
    for thread in threads:
        thread.start()
    ready.wait(timeout=60)
    pids = _pids(target, azurite)
    log_start = target.server.log.stat().st_size if target.server else 0
    cpu_before = _cpu(pids)
    budget.start()
    started = time.perf_counter()
    for thread in threads:
        thread.join(timeout=args.seconds + 60)
    run.elapsed = time.perf_counter() - started
    run.cpu = {k: v - cpu_before[k] for k, v in _cpu(pids).items()}
    if target.server:
        run.function_ms = _function_times(target.server.log, log_start)
    return run


def _pids(target: Target, azurite: Azurite) -> dict[str, int]:
    assert azurite.proc is not None
    pids = {"azurite": azurite.proc.pid}
    if target.server is not None and target.server.proc is not None:
        pids["devhost"] = target.server.proc.pid
    return pids


def _cpu(pids: dict[str, int]) -> dict[str, float]:
    found = {name: cpu_seconds(pid) for name, pid in pids.items()}
    found["client"] = own_cpu_seconds()
    return found


def _function_times(log: Path, start: int) -> list[int]:
    with log.open("rb") as handle:
        handle.seek(start)
        return [int(m.group(1)) for m in _FUNCTION_TIME.finditer(handle.read())]


def token_client(key: str, url: str) -> Callable[[], Call]:
    def make() -> Call:
        session = requests.Session()
        session.trust_env = False
        session.headers["Authorization"] = f"Bearer {key}"

        def call() -> bool:
            return session.get(url, timeout=30).status_code == 200

        return call

    return make


def point_read_client(connection_string: str) -> Callable[[], Call]:
    pk, rk = encode_key(APP), encode_key(USER)

    def make() -> Call:
        table = TableClient.from_connection_string(connection_string, Connection.TABLE)

        def call() -> bool:
            return bool(table.get_entity(pk, rk)["RowKey"] == rk)

        return call

    return make


@contextmanager
def nodelay_devhost(world: World, directory: Path) -> Iterator[DevHost]:
    """One more devhost of the same app on the same storage, with TCP_NODELAY on its sockets."""
    site = directory / "nodelay"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_NODELAY)
    env = {**world.env, "PYTHONPATH": os.pathsep.join([str(site), world.env["PYTHONPATH"]])}
    host = start_devhost(env, directory / "devhost-nodelay.log", args=("--no-timers",))
    try:
        yield host
    finally:
        host.stop()


def refreshes(world: World) -> int:
    return int(world.oidc.stats()["grants"].get("refresh_token", 0))


def measure(world: World, azurite: Azurite, extra: DevHost, args: argparse.Namespace) -> list[Run]:
    assert world.connect(APP, USER).status_code == 200, "connecting the user failed"
    path = f"connections/{APP}/{USER}/token"
    targets = [
        Target("token", token_client(world.admin_key, world.api(path)), world.devhost),
        Target("token+nd", token_client(world.admin_key, extra.api(path)), extra),
        Target("baseline", point_read_client(azurite.connection_string)),
    ]
    first = world.token(APP, USER)
    assert first.status_code == 200, first.text
    before = refreshes(world)
    runs = [run_once(t, c, azurite, args) for c in args.levels for t in targets]
    after = refreshes(world)
    same = world.token(APP, USER).json()["access_token"] == first.json()["access_token"]
    print(
        f"oidc-provider refresh grants: {before} before, {after} after "
        f"({'unchanged' if after == before else 'CHANGED'}); "
        f"same access token served before and after: {same}"
    )
    return runs


def report(runs: Sequence[Run]) -> None:
    print(
        f"{'clients':>7} {'row':>8} {'requests':>8} {'errors':>6} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'req/s':>6} {'fn ms p50':>9} | {'cpu ms/req: devhost':>19} {'azurite':>7} "
        f"{'client':>6}"
    )
    for r in runs:
        fn = f"{percentile(r.function_ms, 50):.0f}" if r.function_ms else "-"
        devhost = f"{r.cpu_per_request('devhost'):.2f}" if "devhost" in r.cpu else "-"
        print(
            f"{r.concurrency:>7} {r.name:>8} {r.requests:>8} {r.errors:>6} {r.p(50):>7.2f} "
            f"{r.p(99):>7.2f} {r.throughput:>6.0f} {fn:>9} | {devhost:>19} "
            f"{r.cpu_per_request('azurite'):>7.2f} {r.cpu_per_request('client'):>6.2f}"
        )
    print(f"\n{'clients':>7} {'row':>8} {'p50 / baseline p50':>18} {'req/s / baseline req/s':>22}")
    found = {(r.name, r.concurrency): r for r in runs}
    for r in runs:
        base = found[("baseline", r.concurrency)]
        if r.name != "baseline":
            print(
                f"{r.concurrency:>7} {r.name:>8} {r.p(50) / base.p(50):>18.2f} "
                f"{r.throughput / base.throughput:>22.2f}"
            )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.token_endpoint",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="time cap per run")
    parser.add_argument("--requests", type=int, default=2000, help="request cap per run")
    parser.add_argument(
        "--levels",
        type=lambda s: [int(x) for x in s.split(",")],
        default=list(LEVELS),
        help="concurrent clients, e.g. 1,8,32",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    print(f"token endpoint benchmark: {machine()}; Azurite {azurite_version()} in memory")
    print(f"each run: at most {args.requests} requests or {args.seconds:g} s, whichever first")
    with tempfile.TemporaryDirectory(prefix="keysteward-bench-") as tmp:
        directory = Path(tmp)
        with (
            running_azurite(directory / "azurite.log") as azurite,
            running_world(app_env(azurite, key_ring_spec()), directory) as world,
            nodelay_devhost(world, directory) as extra,
        ):
            print(f"world up in {time.perf_counter() - started:.1f} s")
            runs = measure(world, azurite, extra, args)
    print()
    report(runs)
    print(f"\n{load()}; total run time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
