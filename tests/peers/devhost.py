"""The devhost serving this repository's function_app.py, as a child process on a free port."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tests.peers.processes import free_port, spawn, stop, wait_until


@dataclass
class DevHost:
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, path: str) -> str:
        return f"{self.url}/api/{path.lstrip('/')}"

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None


def start_devhost(
    env: Mapping[str, str],
    log: Path,
    *,
    args: tuple[str, ...] = (),
    wait_healthy: bool = True,
    port: int | None = None,
) -> DevHost:
    host = DevHost(port or free_port(), log)
    host.proc = spawn(
        [sys.executable, "-m", "devhost", "--port", str(host.port), *args], env=env, log=log
    )
    proc = host.proc

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"devhost exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            requests.get(f"{host.url}/admin/functions", timeout=1)
        except requests.ConnectionError:
            return False
        return True

    try:
        wait_until(up, timeout=30, what="devhost to listen")
        if wait_healthy:
            wait_until(
                lambda: requests.get(host.api("health"), timeout=5).status_code == 200,
                timeout=30,
                what="devhost to be healthy",
            )
    except BaseException:
        host.stop()
        raise
    return host
