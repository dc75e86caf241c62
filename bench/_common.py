"""What both benchmarks share: an Azurite of their own, the environment a devhost gets, a store,
percentiles and CPU time of child processes."""

from __future__ import annotations

import base64
import json
import os
import platform
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from shared.config.settings import StorageSettings
from shared.storage.clients import table_service
from shared.storage.crypto import KeyRing
from shared.storage.store import Store
from tests.peers.azurite import Azurite, start_azurite
from tests.peers.processes import ROOT

_TICKS = os.sysconf("SC_CLK_TCK")


@contextmanager
def running_azurite(log: Path | None = None) -> Iterator[Azurite]:
    """A fresh in-memory Azurite on free loopback ports, stopped on the way out."""
    server = start_azurite(log=log)
    try:
        yield server
    finally:
        server.stop()


def key_ring_spec() -> str:
    """A KEYSTEWARD_ENCRYPTION_KEYS value made for this run (as tests/conftest.py does)."""
    return ",".join(
        f"{kid}:{base64.b64encode(os.urandom(32)).decode()}" for kid in ("bench1", "bench0")
    )


def key_ring(spec: str) -> KeyRing:
    keys = []
    for item in spec.split(","):
        kid, _, key = item.partition(":")
        keys.append((kid, base64.b64decode(key)))
    return KeyRing(keys)


def app_env(azurite: Azurite, ring_spec: str) -> dict[str, str]:
    """The environment of a devhost for this run (the ``app_env`` fixture of the tests)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYSTEWARD_", "AzureWebJobs"))}
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "AzureWebJobsStorage": azurite.connection_string,
            "KEYSTEWARD_ENCRYPTION_KEYS": ring_spec,
            "KEYSTEWARD_PUBLIC_URL": "http://127.0.0.1:7071",
        }
    )
    return env


def store_for(azurite: Azurite, ring_spec: str) -> Store:
    settings = StorageSettings(connection_string=azurite.connection_string)
    return Store(table_service(settings), key_ring(ring_spec))


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile ``q`` (0-100) of ``values``; NaN when there are none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil without floats
    return ordered[int(rank) - 1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def azurite_version() -> str:
    package = ROOT / "node_modules" / "azurite" / "package.json"
    return str(json.loads(package.read_text())["version"])


def machine() -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"{now}; {os.cpu_count()} CPUs; Python {platform.python_version()}; {load()}"


def load() -> str:
    """The load average: other work on the machine skews every figure."""
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min)"
