"""`make run`: Azurite and the devhost, wired together with embedded development defaults.

Starts Azurite (tables and queues, data kept in .local/azurite), generates a development key ring
into .local/ the first time (unless KEYSTEWARD_ENCRYPTION_KEYS is set), starts the devhost on
http://127.0.0.1:7071, prints what is running, and on Ctrl-C or SIGTERM stops every process it
started. Each child runs in its own process group and is killed if this process dies.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parents[1]
LOCAL = ROOT / ".local"
ACCOUNT = "devstoreaccount1"
# Azurite's well-known development account key (public, documented by Microsoft).
DEV_ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
PORT = int(os.environ.get("KEYSTEWARD_DEV_PORT", "7071"))
TABLE_PORT, QUEUE_PORT, BLOB_PORT = 10002, 10001, 10000


def _die_with_parent() -> None:
    os.setsid()
    ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            args, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, preexec_fn=_die_with_parent,  # noqa: PLW1509
        )  # fmt: skip


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wait(check: Callable[[], bool], what: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{what} exited ({proc.returncode}); see {log.relative_to(ROOT)}")
        if check():
            return
        time.sleep(0.1)
    sys.exit(f"{what} did not start within 60 s; see {log.relative_to(ROOT)}")


def _key_ring() -> str:
    """The dev key ring: the environment's if set, else one generated once into .local/."""
    if os.environ.get("KEYSTEWARD_ENCRYPTION_KEYS"):
        return os.environ["KEYSTEWARD_ENCRYPTION_KEYS"]
    path = LOCAL / "keyring"
    if not path.exists():
        kid = f"dev-{datetime.now(UTC):%Y%m%d}"
        key = base64.b64encode(secrets.token_bytes(32)).decode()
        path.write_text(f"{kid}:{key}\n")
        path.chmod(0o600)
    return path.read_text().strip()


def _healthy() -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/api/health", timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def main() -> None:
    LOCAL.mkdir(exist_ok=True)
    (LOCAL / "azurite").mkdir(exist_ok=True)
    for port in (TABLE_PORT, QUEUE_PORT, BLOB_PORT, PORT):
        if _port_open(port):
            sys.exit(f"port {port} is in use: is another `make run` (or Azurite) running?")
    connection = (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={DEV_ACCOUNT_KEY};"
        f"TableEndpoint=http://127.0.0.1:{TABLE_PORT}/{ACCOUNT};"
        f"QueueEndpoint=http://127.0.0.1:{QUEUE_PORT}/{ACCOUNT};"
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "AzureWebJobsStorage": connection,
        "KEYSTEWARD_ENCRYPTION_KEYS": _key_ring(),
        "KEYSTEWARD_PUBLIC_URL": os.environ.get(
            "KEYSTEWARD_PUBLIC_URL", f"http://127.0.0.1:{PORT}"
        ),
    }
    children: list[subprocess.Popen[bytes]] = []

    def shutdown(signum: int, _frame: FrameType | None) -> None:
        print(f"\nstopping ({signal.Signals(signum).name}) ...", flush=True)
        for child in reversed(children):
            _stop(child)
        print("stopped: no process left behind", flush=True)
        sys.exit(0)

    signal.signal(signal.SIGINT, shutdown)
    signal.signal(signal.SIGTERM, shutdown)

    azurite_log = LOCAL / "azurite.log"
    azurite = _spawn(
        [str(ROOT / "node_modules/.bin/azurite"), "--location", str(LOCAL / "azurite"),
         "--blobPort", str(BLOB_PORT), "--queuePort", str(QUEUE_PORT),
         "--tablePort", str(TABLE_PORT), "--blobHost", "127.0.0.1", "--queueHost", "127.0.0.1",
         "--tableHost", "127.0.0.1", "--skipApiVersionCheck", "--disableTelemetry", "--loose"],
        env, azurite_log,
    )  # fmt: skip
    children.append(azurite)
    _wait(
        lambda: _port_open(TABLE_PORT) and _port_open(QUEUE_PORT), "Azurite", azurite, azurite_log
    )

    devhost_log = LOCAL / "devhost.log"
    devhost = _spawn([sys.executable, "-m", "devhost", "--port", str(PORT)], env, devhost_log)
    children.append(devhost)
    _wait(_healthy, "devhost", devhost, devhost_log)

    with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/admin/functions", timeout=5) as r:
        functions = json.load(r)
    print(f"""
Keysteward is running (development defaults; data in .local/)

  Keysteward  http://127.0.0.1:{PORT}/api          health: http://127.0.0.1:{PORT}/api/health
  Azurite     tables http://127.0.0.1:{TABLE_PORT}, queues http://127.0.0.1:{QUEUE_PORT}
  Key ring    .local/keyring (generated for development; never use it elsewhere)
  Logs        .local/devhost.log, .local/azurite.log

Functions:""")
    for function in functions:
        print(f"  {function['name']:<28} {function['trigger']:<14} {function.get('detail', '')}")
    print("\nCtrl-C stops everything.", flush=True)
    while True:
        for child in children:
            if child.poll() is not None:
                print(f"a child process exited ({child.args!r}); stopping", file=sys.stderr)
                shutdown(signal.SIGTERM, None)
        time.sleep(0.5)


if __name__ == "__main__":
    main()
