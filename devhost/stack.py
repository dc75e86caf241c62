"""`make run`: Keysteward on this machine with embedded development defaults.

Starts Azurite (tables and queues, data kept in the state folder), a local OAuth/OIDC server
(oidc-provider) with a `demo` app wired to it, and the devhost on http://127.0.0.1:7071; keeps a
development key ring and a development `keys:admin` key in the state folder (git-ignored
`.local/`); prints what runs, the key, and a ready-to-open connect link. Ctrl-C or SIGTERM stops
every process it started. Each child runs in its own process group and is killed if this process
dies, so nothing is left behind.
"""

from __future__ import annotations

import argparse
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
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from devhost.oidc import OidcServer
from shared.access.key_requests import SCOPES, NewKey
from shared.config.settings import Settings
from shared.foundation.errors import Unauthorized
from shared.runtime import Runtime

ROOT = Path(__file__).resolve().parents[1]
ACCOUNT = "devstoreaccount1"
# Azurite's well-known development account key (public, documented by Microsoft).
DEV_ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
DEMO_APP = "demo"
DEMO_USER = "dev@example.com"
DEMO_SECRET_SETTING = "KEYSTEWARD_DEMO_CLIENT_SECRET"  # noqa: S105 - a setting name


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m devhost.stack", description=__doc__)
    parser.add_argument("--port", type=int, default=7071, help="Keysteward (devhost)")
    parser.add_argument("--oidc-port", type=int, default=7072, help="the demo OAuth server")
    parser.add_argument("--blob-port", type=int, default=10000)
    parser.add_argument("--queue-port", type=int, default=10001)
    parser.add_argument("--table-port", type=int, default=10002)
    parser.add_argument("--state-dir", type=Path, default=ROOT / ".local")
    return parser.parse_args(argv)


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
            sys.exit(f"{what} exited ({proc.returncode}); see {log}")
        if check():
            return
        time.sleep(0.1)
    sys.exit(f"{what} did not start within 60 s; see {log}")


def _secret_file(path: Path, make: Callable[[], str]) -> str:
    if not path.exists():
        path.write_text(make() + "\n")
        path.chmod(0o600)
    return path.read_text().strip()


def _key_ring(state: Path) -> str:
    """The environment's key ring if set, else a development one generated once."""
    if os.environ.get("KEYSTEWARD_ENCRYPTION_KEYS"):
        return os.environ["KEYSTEWARD_ENCRYPTION_KEYS"]
    kid = f"dev-{datetime.now(UTC):%Y%m%d}"
    return _secret_file(
        state / "keyring", lambda: f"{kid}:{base64.b64encode(secrets.token_bytes(32)).decode()}"
    )


def _demo_apps(state: Path, issuer: str) -> Path:
    path = state / "apps.yaml"
    path.write_text(
        "# Written by `make run`: the demo app, wired to the local OAuth server.\n"
        "apps:\n"
        f"  {DEMO_APP}:\n"
        "    provider: oidc\n"
        "    display_name: Demo OAuth server\n"
        f"    issuer: {issuer}\n"
        "    client_id: keysteward-demo\n"
        f"    client_secret: ${{{DEMO_SECRET_SETTING}}}\n"
        "    scopes: [openid, offline_access, profile, api.read]\n"
        "    # Only the account the link names may connect (sign in as that user id).\n"
        "    identity: {claim: preferred_username, match: casefold}\n"
    )
    return path


def _dev_admin_key(state: Path, env: dict[str, str]) -> str:
    """The development keys:admin key, kept in the state folder; remade if it stopped working."""
    runtime = Runtime.build(Settings.from_env(env))
    path = state / "dev-admin-key"
    if path.exists():
        with contextlib.suppress(Unauthorized):
            runtime.api_keys.verify(f"Bearer {path.read_text().strip()}")
            return path.read_text().strip()
    request = NewKey(name="make run (development)", owner="local developer", scopes=list(SCOPES),
                     resources=["*"], expires_in_days=30)  # fmt: skip
    _, key = runtime.api_keys.create(request, actor="cli:make-run")
    path.write_text(key + "\n")
    path.chmod(0o600)
    return key


def _connect_link(port: int, key: str) -> str:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/connect-sessions",
        data=json.dumps({"app": DEMO_APP, "user_id": DEMO_USER}).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return str(json.load(response)["url"])


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    state: Path = args.state_dir.resolve()
    (state / "azurite").mkdir(parents=True, exist_ok=True)
    for port in (args.table_port, args.queue_port, args.blob_port, args.port, args.oidc_port):
        if _port_open(port):
            sys.exit(f"port {port} is in use: is another `make run` (or Azurite) running?")
    children: list[subprocess.Popen[bytes]] = []
    servers: list[OidcServer] = []

    def shutdown(signum: int, _frame: FrameType | None) -> None:
        print(f"\nstopping ({signal.Signals(signum).name}) ...", flush=True)
        for child in reversed(children):
            _stop(child)
        for server in servers:
            server.stop()
        print("stopped: no process left behind", flush=True)
        sys.exit(0)

    signal.signal(signal.SIGINT, shutdown)
    signal.signal(signal.SIGTERM, shutdown)

    connection = (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={DEV_ACCOUNT_KEY};"
        f"TableEndpoint=http://127.0.0.1:{args.table_port}/{ACCOUNT};"
        f"QueueEndpoint=http://127.0.0.1:{args.queue_port}/{ACCOUNT};"
    )
    public_url = os.environ.get("KEYSTEWARD_PUBLIC_URL", f"http://127.0.0.1:{args.port}")
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "AzureWebJobsStorage": connection,
        "KEYSTEWARD_ENCRYPTION_KEYS": _key_ring(state),
        "KEYSTEWARD_PUBLIC_URL": public_url,
    }

    azurite_log = state / "azurite.log"
    azurite = _spawn(
        [str(ROOT / "node_modules/.bin/azurite"), "--location", str(state / "azurite"),
         "--blobPort", str(args.blob_port), "--queuePort", str(args.queue_port),
         "--tablePort", str(args.table_port), "--blobHost", "127.0.0.1",
         "--queueHost", "127.0.0.1", "--tableHost", "127.0.0.1", "--skipApiVersionCheck",
         "--disableTelemetry", "--loose"],
        env, azurite_log,
    )  # fmt: skip
    children.append(azurite)
    _wait(
        lambda: _port_open(args.table_port) and _port_open(args.queue_port),
        "Azurite", azurite, azurite_log,
    )  # fmt: skip

    demo = not os.environ.get("KEYSTEWARD_APPS_FILE")
    if demo:
        oidc = OidcServer.demo(
            state / "oidc", args.oidc_port, f"{public_url}/api/oauth/{DEMO_APP}/callback",
            log=state / "oidc.log",
        )  # fmt: skip
        servers.append(oidc.start())
        env["KEYSTEWARD_APPS_FILE"] = str(_demo_apps(state, oidc.issuer))
        env[DEMO_SECRET_SETTING] = oidc.clients[0].client_secret

    devhost_log = state / "devhost.log"
    devhost = _spawn([sys.executable, "-m", "devhost", "--port", str(args.port)], env, devhost_log)
    children.append(devhost)
    _wait(lambda: _healthy(args.port), "devhost", devhost, devhost_log)

    (state / "settings.env").write_text(
        "# The settings `make run` gives Keysteward: ./keysteward --env-file .local/settings.env\n"
        + "".join(
            f"{name}={env[name]}\n"
            for name in sorted(env)
            if name.startswith(("KEYSTEWARD_", "AzureWebJobs"))
        )
    )
    (state / "settings.env").chmod(0o600)
    key = _dev_admin_key(state, env)
    with urllib.request.urlopen(f"http://127.0.0.1:{args.port}/admin/functions", timeout=5) as r:
        functions = json.load(r)
    print(f"""
Keysteward is running with development defaults (state in {state})

  Keysteward  {public_url}/api        health: {public_url}/api/health
  Azurite     tables http://127.0.0.1:{args.table_port}, queues http://127.0.0.1:{args.queue_port}
  Logs        {state}/devhost.log, azurite.log{", oidc.log" if demo else ""}

  Dev API key (keys:admin and every scope, all resources; 30 days):
    {key}
""")
    if demo:
        link = _connect_link(args.port, key)
        print(f"""  Demo OAuth server  {servers[0].issuer}   (any password works)
  Connect link for user {DEMO_USER} (open it in a browser, log in as {DEMO_USER} with any
  password; one use, 10 minutes):
    {link}
  Then:  curl -H "Authorization: Bearer {key}" {public_url}/api/connections
""")
    print("Functions:")
    for function in functions:
        print(f"  {function['name']:<28} {function['trigger']:<6} {function.get('detail', '')}")
    print("\nAdmin CLI:  ./keysteward --env-file .local/settings.env keys list")
    print("Ctrl-C stops everything.", flush=True)
    while True:
        for child in children:
            if child.poll() is not None:
                print(f"a child process exited ({child.args!r}); stopping", file=sys.stderr)
                shutdown(signal.SIGTERM, None)
        time.sleep(0.5)


if __name__ == "__main__":
    main()
