"""Fault tests: Table Storage stopped in the middle of a refresh sweep and restarted, providers
that hang or reset the connection, and an encryption key missing from the ring."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from azure.data.tables import TableServiceClient

from shared.foundation.secret import Secret
from shared.storage.tablekeys import encode_key
from shared.storage.tables.connections import Connection, ConnectionStore, Status, UserConnection
from shared.storage.tables.revocations import PendingRevocation
from shared.storage.tables.schedule import Schedule
from tests.peers.azurite import Azurite
from tests.peers.devhost import DevHost, start_devhost
from tests.peers.processes import ROOT, free_port, wait_until
from tests.peers.world import LEASE_SECONDS, SECRETS, World, running_world

OIDC_CLIENT = ("oidc-demo-client", SECRETS["OIDC_DEMO_SECRET"])


def ring_spec(*kids: str) -> str:
    """A KEYSTEWARD_ENCRYPTION_KEYS value with a fresh random key per kid."""
    return ",".join(f"{kid}:{base64.b64encode(os.urandom(32)).decode()}" for kid in kids)


def base_env(connection_string: str, ring: str) -> dict[str, str]:
    """What ``app_env`` gives a devhost, on other storage and with another key ring."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYSTEWARD_", "AzureWebJobs"))}
    env.update({"PYTHONPATH": str(ROOT), "AzureWebJobsStorage": connection_string,
                "KEYSTEWARD_ENCRYPTION_KEYS": ring})  # fmt: skip
    return env


@contextmanager
def own_azurite(directory: Path, *, on_disk: bool) -> Iterator[Azurite]:
    """An Azurite of this test's own; ``on_disk`` keeps its data in ``directory`` across a stop
    and start (on the same ports)."""
    directory.mkdir(parents=True, exist_ok=True)
    location = directory / "data" if on_disk else None
    if location is not None:
        location.mkdir()
    azurite = Azurite(free_port(), free_port(), location=location, log=directory / "azurite.log")
    azurite.start()
    try:
        yield azurite
    finally:
        azurite.stop()


def run_sweep(host: DevHost) -> None:
    response = requests.post(f"{host.url}/admin/functions/refresh_sweep", json={}, timeout=60)
    assert response.status_code == 202, response.text


def health(world: World) -> int:
    return requests.get(world.api("health"), timeout=10).status_code


def refreshes(world: World) -> int:
    return int(world.oidc.stats()["grants"].get("refresh_token", 0))


def active_at_server(world: World, token: str) -> bool:
    return bool(world.oidc.introspect(token, *OIDC_CLIENT).get("active"))


def raw_row(world: World, app: str, user: str) -> dict[str, Any]:
    """The connection row as Table Storage holds it, read without any key ring."""
    service = TableServiceClient.from_connection_string(world.env["AzureWebJobsStorage"])
    table = service.get_table_client(Connection.TABLE)
    return dict(table.get_entity(encode_key(app), encode_key(user)))


def released(connection: Connection) -> bool:
    return not connection.lease_owner


# -- 1. Azurite stopped in the middle of a sweep, restarted ----------------------------------------

USERS = [f"outage-{i}@contoso.com" for i in range(10)]
PROVIDER_DELAY_MS = 4000  # how long the provider holds each refresh before answering for real
STORE_RETRYING = re.compile(r"storing the refreshed grant of oidc-demo/(\S+) failed")


def gave_up(log: Path) -> bool:
    """Whether every refresh-requests invocation failed (and let its refreshed grant go)."""
    return log.read_text().count("refresh_connection failed") >= len(USERS)


def met_the_outage(log: Path) -> bool:
    """Whether every in-flight refresh has tried to store its result into the outage: it keeps
    the grant and retries, or it gave up."""
    return set(STORE_RETRYING.findall(log.read_text())) == set(USERS) or gave_up(log)


def test_storage_stopped_mid_sweep_and_restarted_loses_no_connection(tmp_path: Path) -> None:
    """The provider answers the sweep's refreshes (rotating every refresh token) while Table
    Storage is down: the rotated tokens are kept until storage is back, so no connection is lost,
    and the next sweep refreshes every connection with the stored tokens."""
    with (
        own_azurite(tmp_path / "azurite", on_disk=True) as azurite,
        running_world(base_env(azurite.connection_string, ring_spec("k1")), tmp_path / "world",
                      devhost_args=("--no-timers",),
                      # Room for the provider's delay below, on a busy machine.
                      extra_env={"KEYSTEWARD_PROVIDER_TIMEOUT_SECONDS": "10"}) as world,
    ):  # fmt: skip
        log = world.devhost.log
        # 60-second tokens are inside the 5-minute margin: due now, and due again after the
        # refresh that meets the outage.
        world.oidc.set_access_token_ttl(60)
        for user in USERS:
            assert world.connect("oidc-demo", user).status_code == 200
        before = {user: world.connection("oidc-demo", user) for user in USERS}
        counted = refreshes(world)
        world.oidc.fail_next("token", None, count=len(USERS), delay_ms=PROVIDER_DELAY_MS)
        run_sweep(world.devhost)
        leased: set[str] = set()

        def all_calling() -> bool:
            # refresh_started_at is written with the lease's renewal, just before the provider
            # call: a refresh that only took its lease may still need storage before it calls.
            leased.update(u for u in USERS
                          if world.connection("oidc-demo", u).refresh_started_at)  # fmt: skip
            return leased == set(USERS)

        # Every queued refresh holds its lease and waits for the provider.
        wait_until(all_calling, timeout=30, what="every queued refresh to call the provider")
        azurite.stop()
        try:
            wait_until(lambda: health(world) == 503, timeout=20, what="health to say 503")
            wait_until(lambda: refreshes(world) == counted + len(USERS), timeout=30,
                       what="the provider to answer (and rotate) every refresh")  # fmt: skip
            wait_until(lambda: met_the_outage(log), timeout=40,
                       what="every refresh to fail to store its result")  # fmt: skip
        finally:
            azurite.start()  # the same ports, the same files
        wait_until(lambda: health(world) == 200, timeout=20, what="health to say 200 again")
        assert world.devhost.proc is not None
        assert world.devhost.proc.poll() is None  # the devhost lived through it

        def stored(user: str) -> bool:
            now = world.connection("oidc-demo", user)
            return released(now) and now.last_refreshed_at != before[user].last_refreshed_at

        wait_until(lambda: all(stored(u) for u in USERS) or gave_up(log), timeout=40,
                   what="the refreshes held over the outage to be stored")  # fmt: skip
        lost = []
        for user in USERS:
            now = world.connection("oidc-demo", user)
            assert now.status == Status.ACTIVE, (user, now.last_error)
            old_token, stored_token = before[user].refresh_token, now.refresh_token
            assert old_token is not None
            assert stored_token is not None
            # The provider rotated the old one away: only the new one, if stored, lives.
            assert not active_at_server(world, old_token.reveal())
            if not active_at_server(world, stored_token.reveal()):
                lost.append(user)
            assert raw_row(world, "oidc-demo", user)["refresh_token"].startswith("v1.k1.")
        assert lost == [], f"refresh tokens rotated during the outage were lost: {lost}"

        # The next sweep refreshes every connection with what is stored (a stale refresh token
        # would trip oidc-provider's reuse detection: invalid_grant, then needs_reauth).
        world.oidc.set_access_token_ttl(3600)
        middle = {user: world.connection("oidc-demo", user) for user in USERS}
        run_sweep(world.devhost)

        def refreshed_again(user: str) -> bool:
            now = world.connection("oidc-demo", user)
            return released(now) and now.last_refreshed_at != middle[user].last_refreshed_at

        wait_until(lambda: all(refreshed_again(u) for u in USERS), timeout=30,
                   what="the next sweep to refresh every connection")  # fmt: skip
        assert refreshes(world) == counted + 2 * len(USERS)  # one refresh each time, no more
        for user in USERS:
            after = world.connection("oidc-demo", user)
            assert after.status == Status.ACTIVE, (user, after.last_error)
            assert after.refresh_failures == 0
            served = world.token("oidc-demo", user)
            assert served.status_code == 200, served.text
            expires = datetime.fromisoformat(served.json()["expires_at"])
            assert expires - datetime.now(UTC) > timedelta(minutes=30)
            assert active_at_server(world, served.json()["access_token"])
        assert world.audit_actions("connection.needs_reauth") == []


# -- 2. Providers that hang or reset the connection ------------------------------------------------


class BadUpstream:
    """A TCP server that reads each request, then never answers (``hang``) or resets the
    connection (``reset``: SO_LINGER 0, so closing sends RST)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.requests: list[str] = []  # request lines, in order
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = int(self._listener.getsockname()[1])
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"upstream-{mode}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def calls(self, path: str) -> int:
        return sum(1 for line in self.requests if f" {path} " in line)

    def __enter__(self) -> BadUpstream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._listener.close()
        for held in self._held:
            held.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(5)
            with contextlib.suppress(OSError):
                # The request arrived: the client now waits for an answer.
                head = conn.recv(65536).split(b"\r\n", 1)[0]
                self.requests.append(head.decode("ascii", "replace"))
            if self.mode == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
            else:
                self._held.append(conn)


TIMEOUT = 1  # KEYSTEWARD_PROVIDER_TIMEOUT_SECONDS of the devhost these tests call


@pytest.fixture(scope="module")
def quiet_world(
    app_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    """A world without timers: no sweep of its own races the refreshes these tests make."""
    with running_world(app_env, tmp_path_factory.mktemp("quiet"),
                       devhost_args=("--no-timers",)) as running:  # fmt: skip
        yield running


@contextmanager
def devhost_with_app(world: World, upstream: BadUpstream, directory: Path) -> Iterator[DevHost]:
    """One more devhost on the world's storage whose apps file adds ``<mode>-demo``: a PagerDuty
    app whose token and revocation endpoints are ``upstream``."""
    apps = yaml.safe_load(Path(world.env["KEYSTEWARD_APPS_FILE"]).read_text())
    apps["apps"][f"{upstream.mode}-demo"] = {
        "provider": "pagerduty", "client_id": "pd-client-id",
        "client_secret": "${PD_CLIENT_SECRET}", "scopes": ["incidents.read"],
        "authorize_url": f"{upstream.url}/oauth/authorize",
        "token_url": f"{upstream.url}/oauth/token",
        "revoke_url": f"{upstream.url}/oauth/revoke", "revocation": True,
    }  # fmt: skip
    apps_file = directory / "apps.yaml"
    apps_file.write_text(yaml.safe_dump(apps))
    env = {**world.env, "KEYSTEWARD_APPS_FILE": str(apps_file),
           "KEYSTEWARD_PROVIDER_TIMEOUT_SECONDS": str(TIMEOUT)}  # fmt: skip
    host = start_devhost(env, directory / "devhost.log", args=("--no-timers",))
    try:
        yield host
    finally:
        host.stop()


def seed(world: World, app: str, user: str) -> None:
    """A connection whose stored access token lives 2 more minutes (inside the 5-minute margin:
    due) with a refresh token, as if connected earlier."""
    now = datetime.now(UTC)
    ConnectionStore(world.store).save_new_or_existing(Connection(
        app=app, user_id=user, provider="pagerduty", status=Status.ACTIVE,
        scopes=["incidents.read"], created_at=now, updated_at=now, connected_at=now,
        redirect_uri="https://k/cb", access_token=Secret(f"pdus+_0_{user}"),
        access_expires_at=now + timedelta(minutes=2), refresh_token=Secret(f"pdus+_1_{user}"),
    ))  # fmt: skip


def forget(world: World, app: str, user: str) -> None:
    """Remove what a test left of a connection of an app other worlds on this storage lack (their
    sweeps would queue refreshes they cannot do)."""
    connection = world.store.read(Connection, app, user)
    if connection is not None and connection.schedule_bucket:
        Schedule(world.store).drop(connection.schedule_bucket, app, user)
    world.store.delete(Connection.TABLE, app, user)
    world.store.delete(UserConnection.TABLE, user, app)
    world.store.delete(PendingRevocation.TABLE, app, user)


def timed(call: Callable[[], requests.Response]) -> tuple[requests.Response, float]:
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


@pytest.mark.parametrize("mode", ["hang", "reset"])
def test_a_provider_that_hangs_or_resets_is_a_transient_failure(
    quiet_world: World, tmp_path: Path, mode: str
) -> None:
    """Refreshing (token endpoint and sweep worker) and revoking against a provider that never
    answers within KEYSTEWARD_PROVIDER_TIMEOUT_SECONDS, or resets the connection: transient
    failures, bounded in time, never a 500 or a lost connection."""
    world, app = quiet_world, f"{mode}-demo"
    asking, sweeping, revoking = (f"{mode}-{role}@contoso.com" for role in ("ask", "sweep", "rv"))
    bound = TIMEOUT + 3  # one provider call costs at most the timeout
    revoke_bound = 3 * TIMEOUT + 1.5 + 5  # three tries, backing off 0.5 s then 1 s
    headers = {"Authorization": f"Bearer {world.admin_key}"}
    with (
        BadUpstream(mode) as upstream,
        devhost_with_app(world, upstream, tmp_path) as host,
        contextlib.ExitStack() as cleanup,
    ):
        for user in (asking, sweeping, revoking):
            seed(world, app, user)
            cleanup.callback(forget, world, app, user)
        with ThreadPoolExecutor(1) as pool:
            # The revocation, the slowest, runs meanwhile.
            url = host.api(f"connections/{app}/{revoking}")
            deleting = pool.submit(timed, lambda: requests.delete(url, headers=headers, timeout=60))

            # The token endpoint: a forced refresh fails, and says so (503, not the old token)...
            forced, took = timed(lambda: world.token(app, asking, host=host, force_refresh="true",
                                                     min_ttl="60"))  # fmt: skip
            assert forced.status_code == 503, forced.text
            assert "last error: provider_unavailable" in forced.json()["message"]
            assert took < bound
            # ... and the stored token, which lives long enough, answers who does not force.
            served = world.token(app, asking, host=host, min_ttl="60")
            assert served.status_code == 200, served.text
            assert served.json()["access_token"] == f"pdus+_0_{asking}"
            conn = world.connection(app, asking)
            assert conn.status == Status.ACTIVE
            assert conn.refresh_failures == 1
            assert "provider_unavailable" in (conn.last_error or "")
            assert conn.next_attempt_at is not None
            assert conn.next_attempt_at > datetime.now(UTC)
            assert released(conn)
            # Asking for more than the stored token has: 503 with Retry-After, no upstream call.
            calls = upstream.calls("/oauth/token")
            refused, took = timed(lambda: world.token(app, asking, host=host, min_ttl="7200"))
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"] == "refresh_unavailable"
            assert int(refused.headers["Retry-After"]) >= 1
            assert took < bound
            assert upstream.calls("/oauth/token") == calls

            # The sweep's worker: the refresh fails, the connection stays active and backs off.
            message = json.dumps({"app": app, "user_id": sweeping})
            ran, took = timed(lambda: requests.post(
                f"{host.url}/admin/functions/refresh_connection", json={"input": message},
                timeout=60))  # fmt: skip
            assert ran.status_code == 202, ran.text  # the function did not raise
            assert took < bound
            conn = world.connection(app, sweeping)
            assert conn.status == Status.ACTIVE
            assert conn.refresh_failures == 1
            assert conn.next_attempt_at is not None
            assert conn.schedule_bucket is not None  # rescheduled for its next attempt
            assert released(conn)
            assert f"refresh of {app}/{sweeping}: refresh_unavailable" in host.log.read_text()

            # Revocation: the local copies are destroyed; upstream ends revoke_failed, listed.
            deleted, took = deleting.result()
        assert deleted.status_code == 200, deleted.text
        assert deleted.json()["local"] == "destroyed"
        assert deleted.json()["upstream"] == "revoke_failed"
        assert took < revoke_bound
        listed = requests.get(host.api("revocation-failures"), headers=headers, timeout=30)
        assert listed.status_code == 200, listed.text
        failures = {f["credential"]: f for f in listed.json()["failures"]}
        assert failures[f"{app}/{revoking}"]["state"] == "revoke_failed"
        assert world.connection(app, revoking).revoke_upstream == "revoke_failed"
        assert world.token(app, revoking, host=host).status_code == 410
        assert upstream.calls("/oauth/token") == 2  # one refresh each, not skipped or repeated
        assert upstream.calls("/oauth/revoke") == 3
        assert world.audit(f"{app}/{asking}", "connection.needs_reauth") == []
        assert world.audit(f"{app}/{sweeping}", "connection.needs_reauth") == []
        assert "Traceback" not in host.log.read_text()


# -- 3. An encryption key missing from the ring ----------------------------------------------------

LEASE_FIELDS = ("lease_owner", "lease_expires_at")


def keysteward(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ROOT / "keysteward"), *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip


def test_a_key_missing_from_the_ring_is_a_clear_error_and_overwrites_nothing(
    tmp_path: Path,
) -> None:
    """Connections sealed under k1, the app restarted with a ring of k2 only: every use of them
    is a clear 503 naming the kid (never a key), nothing stored is rewritten or wiped, the CLI
    still lists them, and with k1 every secret still opens."""
    ring_k1, ring_k2 = ring_spec("k1"), ring_spec("k2")
    keys = [item.partition(":")[2] for item in f"{ring_k1},{ring_k2}".split(",")]
    with (
        own_azurite(tmp_path / "azurite", on_disk=False) as azurite,
        running_world(base_env(azurite.connection_string, ring_k1), tmp_path / "world",
                      devhost_args=("--no-timers",)) as world,
    ):  # fmt: skip
        fresh, due = "kid-fresh@contoso.com", "kid-due@contoso.com"
        assert world.connect("oidc-demo", fresh).status_code == 200
        world.oidc.set_access_token_ttl(60)  # inside the margin: due for the sweep
        try:
            assert world.connect("oidc-demo", due).status_code == 200
        finally:
            world.oidc.set_access_token_ttl(3600)
        users = (fresh, due)
        before = {user: raw_row(world, "oidc-demo", user) for user in users}
        for row in before.values():
            assert row["access_token"].startswith("v1.k1.")
            assert row["refresh_token"].startswith("v1.k1.")
        counted = refreshes(world)
        # The same app, restarted on the same port with a ring that lost k1.
        port = world.devhost.port
        world.devhost.stop()
        k2_env = {**world.env, "KEYSTEWARD_ENCRYPTION_KEYS": ring_k2}
        k2_log = tmp_path / "devhost-k2.log"
        host = start_devhost(k2_env, k2_log, port=port, args=("--no-timers",))
        try:
            # Served from storage, refreshed (due), refreshed again, forced: each a clear 503 at
            # once (a failed refresh does not leave its lease for the next caller to wait out).
            for user, params in ((fresh, {}), (due, {}), (due, {}),
                                 (fresh, {"force_refresh": "true"})):  # fmt: skip
                response, took = timed(lambda u=user, p=params: world.token(  # type: ignore[misc]
                    "oidc-demo", u, host=host, **p))  # fmt: skip
                assert response.status_code == 503, response.text
                assert response.json()["error"] == "decryption_failed"
                assert "'k1'" in response.json()["message"]
                assert not any(key in response.text for key in keys)
                assert took < LEASE_SECONDS
            # Revoking cannot stash what it cannot open: refused, the connection left as it is.
            deleted = world.call("DELETE", f"connections/oidc-demo/{fresh}")
            assert deleted.status_code == 503, deleted.text
            assert deleted.json()["error"] == "decryption_failed"
            # The sweep enqueues the due connection; its worker fails on it, rewriting nothing.
            run_sweep(host)
            wait_until(lambda: "refresh_connection failed" in k2_log.read_text(), timeout=30,
                       what="the queued refresh to fail")  # fmt: skip
            # The CLI still lists everything.
            status = keysteward(k2_env, "status")
            assert status.returncode == 0, status.stderr
            lines = status.stdout.splitlines()
            for user in users:
                assert any(f"oidc-demo/{user}" in line and "active" in line for line in lines)
        finally:
            host.stop()
        logged = k2_log.read_text()
        assert "DecryptionError: ciphertext was sealed with key 'k1'" in logged  # the worker's
        assert not any(key in logged for key in keys)
        after = {user: raw_row(world, "oidc-demo", user) for user in users}
        for user in users:
            # Byte for byte, every field but the refresh lease (taken and let go).
            unchanged = {k: v for k, v in before[user].items() if k not in LEASE_FIELDS}
            assert {k: v for k, v in after[user].items() if k not in LEASE_FIELDS} == unchanged
            assert not after[user].get("lease_owner")
        assert world.store.read(PendingRevocation, "oidc-demo", fresh) is None
        assert refreshes(world) == counted  # nothing was sent upstream

        # With k1 (the test's store has it) every secret opens, and the grants live upstream.
        for user in users:
            connection = world.connection("oidc-demo", user)
            assert connection.status == Status.ACTIVE
            assert connection.refresh_failures == 0
            assert connection.refresh_token is not None
            assert active_at_server(world, connection.refresh_token.reveal())
