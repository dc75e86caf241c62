"""HTTP triggers under host.json's route prefix, and the admin API, on a threaded server.

Each connection has its own thread, so requests run concurrently as in the host, up to a bound
(devhost/limits.py: more connections are answered 503, headers sent too slowly lose their
connection). A request
body larger than ``max_body_bytes`` is refused with 413 before it is read. Errors are JSON
``{"error": code, "message": text}``: 404 ``not_found`` when no route matches, 405
``method_not_allowed`` (with ``Allow``) when routes match the path but not the method, 500
``internal_error`` when a function raises; the exception is logged, never sent.
"""

from __future__ import annotations

import json
import logging
import re
import select
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import azure.functions as func

from devhost import admin
from devhost.invoker import Invoker
from devhost.limits import HEADER_SECONDS, MAX_CONNECTIONS, ConnectionCap, HeaderDeadlines
from devhost.loader import HTTP, FunctionSpec
from devhost.routes import Match, MethodNotAllowed, Router

log = logging.getLogger("devhost")
UNROUTED = "(no route)"

Headers = list[tuple[str, str]]
# Framing is the server's job; a function's own values for these would corrupt the response.
_HOP_HEADERS = {"content-length", "transfer-encoding", "connection", "keep-alive"}


class Reply:
    def __init__(self, status: int, headers: Headers | None = None, body: bytes = b"") -> None:
        self.status = status
        self.headers = headers or []
        self.body = body
        # What the log names: the route template, never the path (a connect link's token is a
        # path segment, and a log reader must not be able to use it).
        self.route = UNROUTED

    @classmethod
    def json(cls, status: int, payload: object, headers: Headers | None = None) -> Reply:
        if payload is None:
            return cls(status, headers)
        body = json.dumps(payload).encode("utf-8")
        return cls(status, [("Content-Type", "application/json"), *(headers or [])], body)

    @classmethod
    def error(cls, status: int, code: str, message: str, headers: Headers | None = None) -> Reply:
        return cls.json(status, {"error": code, "message": message}, headers)


def _from_function(value: object) -> Reply | None:
    if isinstance(value, func.HttpResponse):
        headers = [(k, v) for k, v in value.headers.items() if k.lower() not in _HOP_HEADERS]
        if not any(k.lower() == "content-type" for k, _ in headers):
            # What the Python worker adds when a response names no Content-Type.
            mimetype, charset = value.mimetype, value.charset
            text = mimetype.startswith("text/")
            headers.append(("Content-Type", f"{mimetype}; charset={charset}" if text else mimetype))
        return Reply(value.status_code, headers, value.get_body())
    if isinstance(value, str):
        return Reply(200, [("Content-Type", "text/plain; charset=utf-8")], value.encode("utf-8"))
    if value is None:
        return Reply(204)
    return None


class Dispatcher:
    """What answers a request: a function's route or the admin API."""

    def __init__(
        self, specs: Sequence[FunctionSpec], prefix: str, invoker: Invoker, base_url: str
    ) -> None:
        self.prefix = prefix
        self.base_url = base_url
        self._invoker = invoker
        self._specs = {spec.name.lower(): spec for spec in specs}
        self._router: Router[FunctionSpec] = Router()
        for spec in specs:
            if spec.trigger == HTTP:
                self._router.add(spec.route or spec.name, spec.methods, spec)

    def functions(self) -> list[dict[str, object]]:
        return [admin.describe(s, self.base_url, self.prefix) for s in self._specs.values()]

    def handle(
        self, method: str, target: str, host: str, headers: dict[str, str], body: bytes
    ) -> Reply:
        parts = urlsplit(target)
        path = parts.path
        segments = [s for s in path.split("/") if s]
        if [s.lower() for s in segments[:1]] == ["admin"]:
            return self._admin(method, segments[1:], body)
        if self.prefix:
            head, _, rest = path.lstrip("/").partition("/")
            if head.lower() != self.prefix.lower():
                return Reply.error(404, "not_found", f"no function serves {path}")
            path = rest
        found = self._router.resolve(path, method)
        if found is None:
            return Reply.error(404, "not_found", f"no function serves {parts.path}")
        if isinstance(found, MethodNotAllowed):
            allow = ", ".join(found.allow)
            return Reply.error(
                405, "method_not_allowed", f"{parts.path} allows {allow}", [("Allow", allow)]
            )
        url = f"http://{host}{target}"
        return self._call(found, method, url, query=parts.query, headers=headers, body=body)

    def _call(
        self,
        match: Match[FunctionSpec],
        method: str,
        url: str,
        *,
        query: str,
        headers: dict[str, str],
        body: bytes,
    ) -> Reply:
        params = {k: v[0] for k, v in parse_qs(query, keep_blank_values=True).items()}
        request = func.HttpRequest(
            method, url, headers=headers, params=params, route_params=match.route_params, body=body
        )
        spec = match.target
        template = spec.route or spec.name
        route = f"/{self.prefix}/{template}" if self.prefix else f"/{template}"
        outcome = self._invoker.invoke(spec, request, f" {method} {route}")
        reply = _from_function(outcome.value) if outcome.ok else None
        if outcome.ok and reply is None:
            kind = type(outcome.value).__name__
            log.error("function %s returned a %s, not an HttpResponse", spec.name, kind)
        if reply is None:
            reply = Reply.error(500, "internal_error", "the function failed; see the host log")
        reply.route = route
        return reply

    def _admin(self, method: str, segments: list[str], body: bytes) -> Reply:
        if segments == ["functions"]:
            if method != "GET":
                return Reply.error(405, "method_not_allowed", "use GET", [("Allow", "GET")])
            return Reply.json(200, self.functions())
        if len(segments) != 2 or segments[0] != "functions":
            return Reply.error(404, "not_found", "admin API: /admin/functions[/{name}]")
        if method != "POST":
            return Reply.error(405, "method_not_allowed", "use POST", [("Allow", "POST")])
        spec = self._specs.get(segments[1].lower())
        if spec is None:
            return Reply.error(404, "not_found", f"no function named {segments[1]}")
        status, payload = admin.run_now(spec, self._invoker, body)
        return Reply.json(status, payload)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(
        self,
        address: tuple[str, int],
        max_body_bytes: int,
        *,
        max_connections: int = MAX_CONNECTIONS,
        header_seconds: float = HEADER_SECONDS,
    ) -> None:
        super().__init__(address, Handler)
        self.max_body_bytes = max_body_bytes
        self.dispatcher: Dispatcher | None = None
        self.cap = ConnectionCap(max_connections)
        self.deadlines = HeaderDeadlines(header_seconds)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.cap.admit(request):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.cap.release()  # no thread was started to release it
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.cap.release()


class Handler(BaseHTTPRequestHandler):
    server: Server
    protocol_version = "HTTP/1.1"
    server_version = "devhost"
    # Headers and body go out in separate writes; without this, Nagle's algorithm holds the
    # second write back for ~40 ms on a kept-alive connection.
    disable_nagle_algorithm = True
    # Idle keep-alive connections are dropped rather than holding a thread for ever.
    timeout = 30

    def handle_one_request(self) -> None:
        # Idle between requests for up to ``timeout``; once the next request's first byte is
        # here, its line and headers must all arrive within the header deadline.
        try:
            ready = select.select([self.connection], [], [], self.timeout)[0]
        except (OSError, ValueError):
            ready = []
        if not ready:
            self.close_connection = True
            return
        self._deadline = self.server.deadlines.start(self.connection)
        try:
            super().handle_one_request()
        finally:
            self.server.deadlines.stop(self._deadline)

    def _dispatch(self) -> None:
        self.server.deadlines.stop(self._deadline)  # the headers are in: the body has its own
        dispatcher = self.server.dispatcher
        assert dispatcher is not None
        self._route = UNROUTED
        try:
            body = self._read_body()
        except ValueError:
            self.close_connection = True
            self._send(Reply.error(400, "invalid_request", "malformed chunked request body"))
            return
        if body is None:
            self.close_connection = True
            limit = self.server.max_body_bytes
            reply = Reply.error(
                413, "payload_too_large", f"request bodies are limited to {limit} bytes"
            )
        else:
            headers: dict[str, str] = {}
            for name, value in self.headers.items():
                # Repeated fields combine into one comma-separated value, as HTTP allows.
                key = name.lower()
                headers[key] = f"{headers[key]}, {value}" if key in headers else value
            host = self.headers.get("Host") or "{}:{}".format(*self.server.server_address[:2])
            try:
                reply = dispatcher.handle(self.command, self.path, host, headers, body)
            except Exception:
                log.exception("request %s failed", self.command)  # the path may hold a secret
                reply = Reply.error(500, "internal_error", "devhost failed; see its log")
        self._route = reply.route
        self._send(reply)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _dispatch

    def _read_body(self) -> bytes | None:
        """The request body, or None when it is over the limit (and left unread)."""
        limit = self.server.max_body_bytes
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked(limit)
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        if length > limit:
            return None
        return self.rfile.read(length) if length > 0 else b""

    def _read_chunked(self, limit: int) -> bytes | None:
        body = b""
        while True:
            size = int(self.rfile.readline(1024).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline(1024).strip():
                    pass  # trailers
                return body
            if len(body) + size > limit:
                return None
            body += self.rfile.read(size)
            self.rfile.readline(16)

    def _send(self, reply: Reply) -> None:
        self.send_response(reply.status)
        for name, value in reply.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply.body)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # The route template, never the path or the query: a connect link's token is a path
        # segment, an OAuth callback's code and state are query parameters.
        log.debug("%s %s %s -> %s", self.address_string(), self.command,
                  getattr(self, "_route", UNROUTED), code)  # fmt: skip

    def log_message(self, format: str, *args: Any) -> None:
        # Errors before a route is known (a malformed request line): whatever of the request
        # line they quote is dropped with it.
        line = format % args
        for raw in {getattr(self, "requestline", ""), getattr(self, "path", "")} - {""}:
            line = line.replace(raw, "(request line)")
        line = re.sub(r"/\S*", "/…", line)
        log.debug("%s %s", self.address_string(), line)
