"""devhost reproduces the Functions host semantics the app relies on, against a real Azurite.

Each devhost serves tests/devhost_app as a child process. Its functions append events (with
their process id) to one JSON-lines file, which the tests read. Devhosts that must not compete
for messages get their own queue prefix (``DEVHOST_TEST_PREFIX``), as separate apps would.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar, cast

import pytest
import requests
from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueClient, QueueServiceClient

from devhost.errors import StartupError
from devhost.hostjson import parse_timespan
from devhost.routes import Match, MethodNotAllowed, Router, RouteTemplate
from shared.storage.clients import encode_message
from tests.peers.azurite import Azurite, start_azurite
from tests.peers.processes import ROOT, free_port, spawn, stop, wait_until

pytestmark = pytest.mark.slow

APP = "tests/devhost_app"
SCHEDULE = "*/1 * * * * *"
MAX_DEQUEUE_COUNT = 3  # tests/devhost_app/host.json
T = TypeVar("T")
Event = dict[str, object]


@dataclass
class Devhost:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    prefix: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid


class Launch(Protocol):
    def __call__(self, prefix: str, *args: str) -> Devhost: ...


def until(condition: Callable[[], T], what: str, timeout: float = 20.0) -> T:
    return wait_until(condition, timeout=timeout, what=what)


class Events:
    def __init__(self, path: Path) -> None:
        self.path = path

    def all(self, fn: str | None = None, pid: int | None = None) -> list[Event]:
        if not self.path.exists():
            return []
        events = []
        for line in self.path.read_text(encoding="utf-8").splitlines(keepends=True):
            if line.endswith("\n"):  # a line still being written is read next time
                event = json.loads(line)
                if (fn is None or event["fn"] == fn) and (pid is None or event["pid"] == pid):
                    events.append(event)
        return events


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    server = start_azurite(log=tmp_path_factory.mktemp("azurite") / "azurite.log")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> Events:
    return Events(tmp_path_factory.mktemp("events") / "events.jsonl")


@pytest.fixture(scope="module")
def queues(azurite: Azurite) -> QueueServiceClient:
    return QueueServiceClient.from_connection_string(azurite.connection_string)


@pytest.fixture(scope="module")
def launch(
    azurite: Azurite, events: Events, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Launch]:
    """Start devhosts serving the test app; every one still running is stopped at the end."""
    started: list[subprocess.Popen[bytes]] = []
    logs = tmp_path_factory.mktemp("devhost")

    def start(prefix: str, *args: str) -> Devhost:
        port = free_port()
        log = logs / f"devhost-{prefix}-{port}.log"
        environment = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "AzureWebJobsStorage": azurite.connection_string,
            "DEVHOST_TEST_EVENTS": str(events.path),
            "DEVHOST_TEST_PREFIX": prefix,
            "DEVHOST_TEST_SCHEDULE": SCHEDULE,
        }
        command = [sys.executable, "-m", "devhost", "--port", str(port), "--root", APP, *args]
        proc = spawn(command, env=environment, log=log)
        started.append(proc)
        host = Devhost(proc, port, log, prefix)

        def listening() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"devhost exited {proc.returncode}: {log.read_text()[-3000:]}")
            return requests.get(f"{host.url}/admin/functions", timeout=2).status_code == 200

        wait_until(listening, timeout=30, what="devhost to listen")
        return host

    yield start
    for proc in started:
        stop(proc)


@pytest.fixture(scope="module")
def main(launch: Launch) -> Devhost:
    """The devhost most tests talk to: timers on, a small body limit."""
    return launch("main", "--max-body-bytes", "4096")


def queue(queues: QueueServiceClient, name: str) -> QueueClient:
    client = queues.get_queue_client(name)
    with contextlib.suppress(ResourceExistsError):
        client.create_queue()
    return client


def contents(client: QueueClient) -> list[str]:
    return [m.content for m in client.peek_messages(max_messages=32)]


# Route templates and host.json values, without processes.


def test_route_templates_match_as_azure_does() -> None:
    item = RouteTemplate.parse("items/{id:int}/{name?}")
    assert item.match("items/42/widget") == {"id": "42", "name": "widget"}
    assert item.match("ITEMS/42") == {"id": "42"}
    assert item.match("items/42/") == {"id": "42"}
    assert item.match("items/x") is None
    assert item.match("items/99999999999") is None  # int is 32-bit
    assert RouteTemplate.parse("files/{*path}").match("files/a/b%20c") == {"path": "a/b c"}
    assert RouteTemplate.parse("files/{*path}").match("files") == {}
    assert RouteTemplate.parse("f/{file}.{ext}").match("f/report.pdf") == {
        "file": "report",
        "ext": "pdf",
    }
    assert RouteTemplate.parse("p/{page:int:min(1)=1}").match("p") == {"page": "1"}
    assert RouteTemplate.parse("p/{page:int:min(1)=1}").match("p/0") is None
    assert RouteTemplate.parse("n/{name:alpha:length(2,3)}").match("n/abcd") is None
    for bad in ("a/{x", "a/{*rest}/b", "a/{x?}/b", "a/{x:regex(^a$)}", "a/{x:nonsense}"):
        with pytest.raises(StartupError):
            RouteTemplate.parse(bad)


def test_router_prefers_literals_and_reports_allowed_methods() -> None:
    router: Router[str] = Router()
    router.add("keys/{id}", ["GET", "DELETE"], "by id")
    router.add("keys/{*rest}", ["PUT"], "catch-all")
    router.add("keys/new", ["GET"], "literal")
    found = router.resolve("keys/new", "GET")
    assert isinstance(found, Match)
    assert found.target == "literal"
    found = router.resolve("keys/7", "get")
    assert isinstance(found, Match)
    assert (found.target, found.route_params) == ("by id", {"id": "7"})
    assert router.resolve("keys/7", "POST") == MethodNotAllowed(("DELETE", "GET", "PUT"))
    assert router.resolve("nothing", "GET") is None


def test_timespans_as_host_json_writes_them() -> None:
    assert parse_timespan("00:00:02", "x") == 2.0
    assert parse_timespan("00:00:00.200", "x") == pytest.approx(0.2)
    assert parse_timespan("1.02:00:00", "x") == 93600.0
    with pytest.raises(StartupError):
        parse_timespan("2s", "x")


# HTTP triggers.


def test_route_parameters_query_and_body_reach_the_function(main: Devhost) -> None:
    response = requests.post(
        f"{main.url}/api/Items/42/widget?q=first&q=second&empty=",
        data="the body",
        headers={"X-Probe": "probe"},
        timeout=10,
    )
    assert response.status_code == 200
    seen = response.json()
    assert seen["method"] == "POST"
    assert seen["url"] == f"{main.url}/api/Items/42/widget?q=first&q=second&empty="
    assert seen["route"] == {"id": "42", "name": "widget"}
    assert seen["params"] == {"q": "first", "empty": ""}
    assert seen["body"] == "the body"
    assert seen["probe"] == "probe"
    optional = requests.get(f"{main.url}/api/items/7", timeout=10).json()
    assert optional["route"] == {"id": "7"}

    hello = requests.get(f"{main.url}/api/hello/World", timeout=10)
    assert hello.text == "hello World"
    assert hello.headers["X-Multi"] == "one, two"  # two header lines, folded by the client
    assert requests.get(f"{main.url}/api/files/a/b%20c/d.txt", timeout=10).json() == {
        "path": "a/b c/d.txt"
    }
    assert requests.get(f"{main.url}/api/async", timeout=10).text == "async ok"


def test_unmatched_routes_are_404_and_wrong_methods_405(main: Devhost) -> None:
    for path in ("/api/nothing", "/api/items/abc", "/api/hello/w0rld", "/items/1", "/"):
        response = requests.get(main.url + path, timeout=10)
        assert response.status_code == 404, path
        assert response.json()["error"] == "not_found"
    response = requests.delete(f"{main.url}/api/items/1", timeout=10)
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, POST"
    assert response.json()["error"] == "method_not_allowed"


def test_a_raising_function_is_500_without_its_details(main: Devhost) -> None:
    response = requests.get(f"{main.url}/api/boom", timeout=10)
    assert response.status_code == 500
    assert response.json()["error"] == "internal_error"
    assert "secret" not in response.text
    wait_until(lambda: "secret detail" in main.log.read_text(), what="the traceback in the log")


def test_a_body_over_the_limit_is_413(main: Devhost) -> None:
    response = requests.post(f"{main.url}/api/items/1", data=b"x" * 4097, timeout=10)
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    assert requests.post(f"{main.url}/api/items/1", data=b"x" * 4096, timeout=10).ok


def test_a_chunked_body_is_read_and_limited(main: Devhost) -> None:
    def chunks(total: int) -> Iterator[bytes]:
        for _ in range(total // 1000):
            yield b"y" * 1000

    response = requests.post(f"{main.url}/api/items/1", data=chunks(3000), timeout=10)
    assert response.json()["body"] == "y" * 3000
    response = requests.post(f"{main.url}/api/items/1", data=chunks(5000), timeout=10)
    assert response.status_code == 413


# Queue outputs and triggers.


def test_queue_output_binding_sends_encoded_messages_after_success(
    main: Devhost, queues: QueueServiceClient
) -> None:
    out = queue(queues, "main-out")
    failed = requests.post(f"{main.url}/api/enqueue?fail=1", json=["lost"], timeout=10)
    assert failed.status_code == 500
    response = requests.post(f"{main.url}/api/enqueue", json=["one", "twö"], timeout=10)
    assert response.status_code == 202
    # Outputs are sent before the response, so they are there now.
    assert sorted(contents(out)) == sorted([encode_message("one"), encode_message("twö")])


def test_a_base64_message_reaches_the_function_decoded(
    main: Devhost, queues: QueueServiceClient, events: Events
) -> None:
    queue(queues, "main-echo").send_message(encode_message("héllo, wörld"))
    echoed = until(
        lambda: [e for e in events.all("queue_echo") if e["body"] == "héllo, wörld"],
        what="the decoded message",
    )
    assert [e["tries"] for e in echoed] == [1]


def test_a_message_that_is_not_base64_goes_to_poison(
    main: Devhost, queues: QueueServiceClient, events: Events
) -> None:
    poison = queue(queues, "main-echo-poison")
    queue(queues, "main-echo").send_message("not base64 at all!")
    wait_until(lambda: "not base64 at all!" in contents(poison), what="the poison message")
    assert not [e for e in events.all("queue_echo") if "not base64" in str(e["body"])]


def test_a_failing_message_is_poisoned_after_max_dequeue_count_tries(
    main: Devhost, queues: QueueServiceClient, events: Events
) -> None:
    poison = queue(queues, "main-fail-poison")
    source = queue(queues, "main-fail")
    source.send_message(encode_message("doomed"))
    wait_until(lambda: encode_message("doomed") in contents(poison), what="the poison message")
    tries = [e["tries"] for e in events.all("queue_fail") if e["body"] == "doomed"]
    assert sorted(cast(list[int], tries)) == list(range(1, MAX_DEQUEUE_COUNT + 1))
    assert source.get_queue_properties().approximate_message_count == 0


def test_two_devhosts_share_one_queue_and_run_each_message_once(
    launch: Launch, queues: QueueServiceClient, events: Events
) -> None:
    first = launch("shared", "--no-timers")
    second = launch("shared", "--no-timers")
    shared = queue(queues, "shared-shared")
    bodies = [f"message-{n:02d}" for n in range(40)]
    for body in bodies:
        shared.send_message(encode_message(body))

    def handled() -> list[Event]:
        mine = [e for e in events.all("queue_shared") if e["pid"] in (first.pid, second.pid)]
        return mine if {e["body"] for e in mine} == set(bodies) else []

    done = until(handled, what="every message to be handled")
    counts = Counter(e["body"] for e in done)
    assert max(counts.values()) == 1, "a message ran twice"
    by_process = Counter(e["pid"] for e in done)
    assert set(by_process) == {first.pid, second.pid}, by_process


# Timers and the admin API.


def test_timers_fire_on_schedule_and_on_start_up(main: Devhost, events: Events) -> None:
    wait_until(lambda: len(events.all("tick", main.pid)) >= 2, what="two scheduled ticks")
    assert len(events.all("on_start", main.pid)) == 1
    assert not any(e["past_due"] for e in events.all("tick", main.pid))


def test_admin_api_lists_and_runs_functions(main: Devhost, events: Events) -> None:
    listed = requests.get(f"{main.url}/admin/functions", timeout=10).json()
    by_name = {f["name"]: f for f in listed}
    assert (by_name["tick"]["trigger"], by_name["tick"]["schedule"]) == ("timer", SCHEDULE)
    assert by_name["queue_echo"]["queue"] == "main-echo"
    assert by_name["item"]["url"] == f"{main.url}/api/items/{{id:int}}/{{name?}}"

    response = requests.post(
        f"{main.url}/admin/functions/queue_echo", json={"input": "by admin"}, timeout=10
    )
    assert (response.status_code, response.text) == (202, "")
    # The call answers after the function ran: its event is already there.
    assert [e["tries"] for e in events.all("queue_echo") if e["body"] == "by admin"] == [1]
    failed = requests.post(
        f"{main.url}/admin/functions/queue_fail", json={"input": "x"}, timeout=10
    )
    assert failed.status_code == 500
    assert failed.json()["error"] == "function_failed"
    assert requests.post(f"{main.url}/admin/functions/nope", timeout=10).status_code == 404
    assert requests.post(f"{main.url}/api/admin/functions/tick", timeout=10).status_code == 404


def test_no_timers_stops_schedules_but_not_the_admin_call(
    launch: Launch, main: Devhost, events: Events
) -> None:
    quiet = launch("quiet", "--no-timers")
    assert events.all("on_start", quiet.pid) == []
    response = requests.post(f"{quiet.url}/admin/functions/tick", timeout=10)
    assert response.status_code == 202
    assert len(events.all("tick", quiet.pid)) == 1
    # main's schedule is the clock: two more of its ticks mean at least a second has passed.
    ticks = len(events.all("tick", main.pid))
    wait_until(lambda: len(events.all("tick", main.pid)) >= ticks + 2, what="main's ticks")
    assert len(events.all("tick", quiet.pid)) == 1

    os.killpg(quiet.proc.pid, signal.SIGTERM)
    started = time.monotonic()
    assert quiet.proc.wait(timeout=10) == 0
    assert time.monotonic() - started < 3


def test_a_missing_schedule_setting_stops_start_up(azurite: Azurite, tmp_path: Path) -> None:
    log = tmp_path / "devhost.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AzureWebJobsStorage": azurite.connection_string}
    env.pop("DEVHOST_TEST_SCHEDULE", None)
    env["DEVHOST_TEST_PREFIX"] = "unused"
    command = [sys.executable, "-m", "devhost", "--port", str(free_port()), "--root", APP]
    proc = spawn(command, env=env, log=log)
    try:
        assert proc.wait(timeout=30) == 2
    finally:
        stop(proc)
    assert "DEVHOST_TEST_SCHEDULE, which is not set" in log.read_text()


# Leases and shutdown.


def test_sigterm_gives_running_messages_back_and_exits_promptly(
    launch: Launch, queues: QueueServiceClient, events: Events
) -> None:
    host = launch("slow", "--no-timers", "--queue-lease-seconds", "1", "--grace-seconds", "0.5")
    slow = queue(queues, "slow-slow")
    slow.send_message(encode_message("take your time"))
    started = until(lambda: events.all("queue_slow_started", host.pid), what="the start")
    message_id = started[0]["id"]

    def beats() -> int:
        return len([e for e in events.all("queue_slow_beat") if e["id"] == message_id])

    # Eight beats take two seconds, twice the lease: only renewals kept the message hidden.
    wait_until(lambda: beats() >= 8, what="the function to outlive its lease")
    assert len([e for e in events.all("queue_slow_started") if e["id"] == message_id]) == 1
    assert contents(slow) == []

    os.killpg(host.proc.pid, signal.SIGTERM)
    stopping = time.monotonic()
    assert host.proc.wait(timeout=10) == 0
    assert time.monotonic() - stopping < 3
    returned = slow.peek_messages()
    assert [m.content for m in returned] == [encode_message("take your time")]
    assert base64.b64decode(returned[0].content) == b"take your time"


# --- slow and flooding clients (issue 16, point 7) --------------------------------------------


def _slow_client(
    port: int, partial: bytes = b"GET /api/hello/World HTTP/1.1\r\nHost: x\r\n"
) -> socket.socket:
    """A slowloris: the request line and part of the headers, then nothing."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(partial)
    return sock


def _closed_by_server(sock: socket.socket) -> bool:
    sock.settimeout(0.05)
    try:
        return sock.recv(1024) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


def test_slow_headers_lose_their_connection_and_others_are_served(launch: Launch) -> None:
    host = launch("slow", "--no-timers", "--max-connections", "64", "--header-seconds", "1")
    slow = [_slow_client(host.port) for _ in range(40)]
    try:
        # While forty clients stall mid-headers, a well-behaved one is answered at once.
        assert requests.get(f"{host.url}/api/hello/World", timeout=5).text == "hello World"
        wait_until(lambda: all(_closed_by_server(s) for s in slow), timeout=15,
                   what="the stalled connections to be closed")  # fmt: skip
    finally:
        for sock in slow:
            sock.close()
    assert "sent its request headers too slowly" in host.log.read_text()


def test_headers_trickled_in_are_cut_off_at_the_deadline(launch: Launch) -> None:
    host = launch("trickle", "--no-timers", "--header-seconds", "1")
    sock = _slow_client(host.port, b"GET /api/hello/World HTTP/1.1\r\n")
    pause = threading.Event()
    sent, started = 0, time.monotonic()
    try:
        with contextlib.suppress(OSError):
            while time.monotonic() - started < 15:
                sock.sendall(b"X")  # one byte of a header every 100 ms: never a whole request
                sent += 1
                if _closed_by_server(sock):
                    break
                pause.wait(0.1)
        assert time.monotonic() - started < 10, "the trickling client was never cut off"
    finally:
        sock.close()
    assert sent >= 3  # it did trickle for a while before the deadline


def test_connections_over_the_cap_are_answered_503_at_once(launch: Launch) -> None:
    host = launch("cap", "--no-timers", "--max-connections", "4", "--header-seconds", "5")
    held = [_slow_client(host.port) for _ in range(4)]

    def status() -> int:
        return requests.get(f"{host.url}/api/hello/World", timeout=5).status_code

    try:
        wait_until(lambda: status() == 503, timeout=10, what="the cap to be reached")
        busy = requests.get(f"{host.url}/api/hello/World", timeout=5)
        assert busy.json()["error"] == "busy"
        assert busy.headers["Retry-After"] == "1"
    finally:
        for sock in held:
            sock.close()
    # The slots come back when the held connections go.
    wait_until(lambda: status() == 200, timeout=10, what="a slot to be free again")


def test_an_idle_kept_alive_connection_outlives_the_header_deadline(launch: Launch) -> None:
    host = launch("idle", "--no-timers", "--header-seconds", "0.5")
    with requests.Session() as session:
        assert session.get(f"{host.url}/api/hello/a", timeout=5).text == "hello a"
        threading.Event().wait(1.5)  # idle longer than the header deadline, on purpose
        assert session.get(f"{host.url}/api/hello/b", timeout=5).text == "hello b"
