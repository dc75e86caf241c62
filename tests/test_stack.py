"""`make run`'s stack: everything starts, a newcomer can walk the connect flow with what it
prints, and SIGTERM leaves no process behind."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from devhost.oidc import OidcServer
from tests.peers.processes import ROOT, free_port, wait_until

READY = "Ctrl-C stops everything."


def processes_mentioning(text: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(int(proc.name))
    return found


class Stack:
    def __init__(self, state: Path) -> None:
        self.state = state
        self.ports = {name: free_port() for name in ("port", "oidc", "blob", "queue", "table")}
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("KEYSTEWARD_", "AzureWebJobs"))}  # fmt: skip
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "devhost.stack", "--port", str(self.ports["port"]),
             "--oidc-port", str(self.ports["oidc"]), "--blob-port", str(self.ports["blob"]),
             "--queue-port", str(self.ports["queue"]), "--table-port", str(self.ports["table"]),
             "--state-dir", str(state)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        self.output: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)

    @property
    def text(self) -> str:
        return "".join(self.output)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    running = Stack(tmp_path / "state")
    try:
        wait_until(lambda: READY in running.text or running.proc.poll() is not None,
                   timeout=120, what="make run's stack to be ready")  # fmt: skip
        assert READY in running.text, running.text
        yield running
    finally:
        running.stop()


def test_make_run_serves_a_walkable_connect_flow_and_stops_cleanly(stack: Stack) -> None:
    base = f"http://127.0.0.1:{stack.ports['port']}"
    assert requests.get(f"{base}/api/health", timeout=10).json()["status"] == "ok"
    key = re.search(r"\b(ks_[A-Za-z0-9_]+)", stack.text)
    link = re.search(rf"({re.escape(base)}/api/connect/\S+)", stack.text)
    assert key is not None
    assert link is not None
    # A newcomer opens the link, logs in and consents at the demo server.
    browser = requests.Session()  # one browser: the link's cookie binds the sign-in to it
    authorize = browser.get(link.group(1), allow_redirects=False, timeout=10)
    assert authorize.status_code == 302
    demo = OidcServer.demo(stack.state / "oidc", stack.ports["oidc"],
                           f"{base}/api/oauth/demo/callback")  # fmt: skip
    callback = demo.login_and_consent(authorize.headers["Location"], account="dev@example.com")
    done = browser.get(callback, allow_redirects=False, timeout=10)
    assert done.status_code == 200, done.text
    listed = requests.get(f"{base}/api/connections", timeout=10,
                          headers={"Authorization": f"Bearer {key.group(1)}"})  # fmt: skip
    assert [(c["app"], c["status"]) for c in listed.json()["connections"]] == [("demo", "active")]
    assert (
        not (ROOT / ".local" / "keyring").samefile(stack.state / "keyring")
        if (ROOT / ".local" / "keyring").exists()
        else True
    )

    assert stack.stop() == 0
    assert "no process left behind" in stack.text
    assert processes_mentioning(str(stack.state)) == []
    for port in stack.ports.values():
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_the_dev_key_and_key_ring_are_kept_between_runs(tmp_path: Path) -> None:
    state = tmp_path / "state"
    keys = []
    for _ in range(2):
        running = Stack(state)
        try:
            wait_until(lambda r=running: READY in r.text or r.proc.poll() is not None,  # type: ignore[misc]
                       timeout=120, what="the stack")  # fmt: skip
            found = re.search(r"\b(ks_[A-Za-z0-9_]+)", running.text)
            assert found is not None, running.text
            keys.append(found.group(1))
        finally:
            assert running.stop() == 0
    assert keys[0] == keys[1]
    assert (state / "keyring").stat().st_mode & 0o077 == 0
