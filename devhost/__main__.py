"""``python -m devhost``: serve a function app locally until SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from azure.core.exceptions import AzureError

from devhost.connections import Connections
from devhost.errors import StartupError
from devhost.hostjson import read_host_json
from devhost.http import Dispatcher, Server
from devhost.invoker import Invoker
from devhost.limits import HEADER_SECONDS, MAX_CONNECTIONS
from devhost.loader import HTTP, QUEUE, TIMER, apply_local_settings, import_app, load_functions
from devhost.queues import QueueListener
from devhost.timers import TimerRunner
from shared.storage.clients import MESSAGE_ENCODING

log = logging.getLogger("devhost")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m devhost", description="Local stand-in for the Azure Functions host."
    )
    parser.add_argument("--port", type=int, default=7071)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--app", default="function_app:app", help="module:attribute to serve")
    parser.add_argument("--root", default=".", help="the app's folder, with host.json")
    parser.add_argument(
        "--no-timers",
        action="store_true",
        help="do not run timers on their schedules (the admin API still runs them)",
    )
    parser.add_argument(
        "--queue-lease-seconds",
        type=int,
        default=60,
        help="how long a message being processed stays invisible; renewed every half",
    )
    parser.add_argument("--max-body-bytes", type=int, default=1024 * 1024)
    parser.add_argument(
        "--max-connections",
        type=int,
        default=MAX_CONNECTIONS,
        help="connections served at once (each has a thread); more are answered 503",
    )
    parser.add_argument(
        "--header-seconds",
        type=float,
        default=HEADER_SECONDS,
        help="how long a request's line and headers may take to arrive once begun",
    )
    parser.add_argument(
        "--grace-seconds",
        type=float,
        default=3.0,
        help="at shutdown, how long running queue invocations get to finish",
    )
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING"))
    args = parser.parse_args(argv)
    if args.queue_lease_seconds < 1:
        parser.error("--queue-lease-seconds must be at least 1")
    if args.max_connections < 1 or args.header_seconds <= 0:
        parser.error("--max-connections must be at least 1 and --header-seconds above 0")
    return args


class Signals:
    """SIGTERM and SIGINT as something the main thread can wait for.

    The handler only records the signal; the wake-up fd ends the main thread's blocking read. A
    second signal exits at once, for when a function will not finish.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._reader, self._writer = socket.socketpair()
        self._writer.setblocking(False)
        signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:
            os._exit(128 + signum)
        self.received = signum

    def wait(self) -> None:
        while self.received is None:
            self._reader.recv(64)


def _banner(dispatcher: Dispatcher, target: str, timers: bool) -> str:
    lines = [f"devhost serving {target} on {dispatcher.base_url}"]
    for entry in dispatcher.functions():
        off = entry["trigger"] == "timer" and not timers
        detail = f"{entry['detail']}" + ("  (schedule off: --no-timers)" if off else "")
        lines.append(f"  {entry['trigger']:<6} {entry['name']:<28} {detail}")
    lines.append(f"  admin  GET|POST {dispatcher.base_url}/admin/functions[/{{name}}]")
    return "\n".join(lines)


def serve(args: argparse.Namespace, signals: Signals) -> int:
    root = Path(args.root).resolve()
    # The host runs functions from the app's folder; relative paths in the app mean the same here.
    os.chdir(root)
    apply_local_settings(root, os.environ)
    host_config = read_host_json(root)
    encoding = host_config.queues.message_encoding
    if encoding != MESSAGE_ENCODING:
        log.warning(
            "host.json messageEncoding is %s; shared.storage writes %s", encoding, MESSAGE_ENCODING
        )
    specs = load_functions(import_app(args.app, root), host_config, os.environ)
    connections = Connections(os.environ)
    needed = {s.connection for s in specs if s.trigger == QUEUE}
    needed |= {output.connection for s in specs for output in s.outputs}
    for connection in needed:
        connections.check(connection)
    try:
        server = Server((args.host, args.port), args.max_body_bytes,
                        max_connections=args.max_connections,
                        header_seconds=args.header_seconds)  # fmt: skip
    except OSError as exc:
        raise StartupError(f"cannot listen on {args.host}:{args.port} ({exc})") from None
    base_url = f"http://{args.host}:{server.server_address[1]}"
    invoker = Invoker(connections, encoding, str(root))
    dispatcher = Dispatcher(specs, host_config.route_prefix, invoker, base_url)
    server.dispatcher = dispatcher
    stop = threading.Event()
    listeners: list[QueueListener] = []
    for spec in specs:
        if spec.trigger == QUEUE:
            try:
                listener = QueueListener(
                    spec,
                    connections,
                    host_config.queues,
                    invoker,
                    lease_seconds=args.queue_lease_seconds,
                    stop=stop,
                )
            except AzureError as exc:
                raise StartupError(f"function {spec.name}: queue {spec.queue}: {exc}") from None
            listeners.append(listener)
    timers = [
        TimerRunner(s, invoker, stop) for s in specs if s.trigger == TIMER and not args.no_timers
    ]
    http_thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    http_thread.start()
    for listener in listeners:
        listener.start()
    for runner in timers:
        runner.start()
    print(_banner(dispatcher, args.app, not args.no_timers), flush=True)
    if not any(s.trigger == HTTP for s in specs):
        log.info("no HTTP functions; the admin API is still served")

    signals.wait()
    log.info("stopping (signal %s)", signals.received)
    stop.set()
    deadline = time.monotonic() + args.grace_seconds
    server.shutdown()
    for listener in listeners:
        listener.drain(max(deadline - time.monotonic(), 0.0))
    for runner in timers:
        runner.join(max(deadline - time.monotonic(), 0.0))
    server.server_close()
    invoker.close()
    log.info("stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.log_level != "DEBUG":
        # The storage SDK logs every request and response at INFO.
        logging.getLogger("azure").setLevel(logging.WARNING)
    signals = Signals()
    try:
        return serve(args, signals)
    except StartupError as exc:
        print(f"devhost: {exc}", file=sys.stderr, flush=True)
        return 2
    except Exception:
        log.exception("devhost: the function app failed to load")
        return 1


if __name__ == "__main__":
    sys.exit(main())
