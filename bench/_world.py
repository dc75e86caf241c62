"""What the revocation and rotation benchmarks share: a fresh Azurite with a Keysteward world on
it (tests/peers/world.py, unchanged), the devhost's queue concurrency from host.json, and the CPU
time of the processes that do the work."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from unittest import mock

import tests.peers.world as world_module
from bench._common import app_env, cpu_seconds, key_ring_spec, own_cpu_seconds, running_azurite
from devhost.hostjson import QueueOptions, read_host_json
from tests.peers.azurite import Azurite
from tests.peers.processes import ROOT
from tests.peers.world import World, running_world

GRACE_SETTING = "KEYSTEWARD_ROTATION_GRACE_MINUTES"
_TICKS = os.sysconf("SC_CLK_TCK")


@contextmanager
def fresh_world(
    directory: Path, grace_minutes: float | None = None
) -> Iterator[tuple[Azurite, World]]:
    """A new in-memory Azurite and a world on it, both stopped on the way out.

    ``running_world`` puts its module's ``GRACE_MINUTES`` in the devhost's environment after the
    base environment, so a grace of our own is that value, swapped while the world runs (and
    checked in the environment the devhost got)."""
    directory.mkdir(parents=True, exist_ok=True)
    with running_azurite(directory / "azurite.log") as azurite:
        env = app_env(azurite, key_ring_spec())
        if grace_minutes is None:
            with running_world(env, directory) as world:
                yield azurite, world
            return
        with (
            mock.patch.object(world_module, "GRACE_MINUTES", grace_minutes),
            running_world(env, directory) as world,
        ):
            got = world.env.get(GRACE_SETTING)
            if got != str(grace_minutes):
                raise RuntimeError(f"{GRACE_SETTING} is {got!r}, not {grace_minutes}")
            yield azurite, world


def queue_options() -> QueueOptions:
    """extensions.queues of this app's host.json, as devhost reads it."""
    return read_host_json(ROOT).queues


def per_host_concurrency(options: QueueOptions) -> int:
    """Messages one host runs at once: a new batch of ``batchSize`` is fetched as soon as no more
    than ``newBatchThreshold`` are still running."""
    return options.batch_size + options.new_batch_threshold


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all CPUs (Linux /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return (total - idle) / _TICKS, total / _TICKS


class CpuMeter:
    """CPU seconds used by named processes (and this one) between ``start`` and ``stop``, and how
    busy the whole machine was meanwhile (other work on it slows every figure down)."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self._pids = {name: pid for name, pid in pids.items() if pid is not None}
        self._before: dict[str, float] = {}
        self._machine = (0.0, 0.0)
        self.used: dict[str, float] = {}
        self.machine_busy = float("nan")  # fraction of all CPUs busy
        self.machine_seconds = float("nan")  # busy CPU seconds of every process

    def _now(self) -> dict[str, float]:
        found = {name: cpu_seconds(pid) for name, pid in self._pids.items()}
        found["bench"] = own_cpu_seconds()
        return found

    def start(self) -> None:
        self._before = self._now()
        self._machine = machine_cpu_seconds()

    def stop(self) -> None:
        after = self._now()
        busy, total = machine_cpu_seconds()
        self.used = {name: after[name] - self._before[name] for name in after}
        self.machine_seconds = busy - self._machine[0]
        self.machine_busy = self.machine_seconds / max(total - self._machine[1], 1e-9)

    def describe(self, wall: float) -> str:
        parts = [
            f"{name} {seconds:.1f} s ({seconds / wall:.0%} of one CPU)"
            for name, seconds in self.used.items()
        ]
        ours = sum(self.used.values())
        return (
            "CPU used: " + ", ".join(parts) + f"; the machine's {os.cpu_count()} CPUs "
            f"{self.machine_busy:.0%} busy, {ours / max(self.machine_seconds, 1e-9):.0%} of it "
            "by these processes"
        )


def seconds(later: datetime | None, earlier: datetime | None) -> float:
    if later is None or earlier is None:
        return float("nan")
    return (later - earlier).total_seconds()
