"""The shared machinery of the provider fakes: a stdlib HTTP server on 127.0.0.1 in a thread.

A fake records every request it receives, collects ``violations`` (human-readable reasons a
request was not what the provider documents), can be told to fail or stall the next requests to an
endpoint, and reads time from an injectable clock that tests move with ``advance`` instead of
sleeping. Subclasses implement ``_route``; it runs under the fake's lock, so provider state needs no
locking of its own.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

from tests.fakes.tokens import Token, TokenRegistry, TokenState
from tests.peers.processes import free_port

FORM = "application/x-www-form-urlencoded"


@dataclass(frozen=True)
class Recorded:
    """One request as the fake saw it, with what it answered and why it refused (if it did)."""

    method: str
    path: str  # without the query string
    headers: dict[str, str]  # names lower-cased
    query: dict[str, str]
    form: dict[str, str]  # empty unless the body was form-encoded
    body: bytes
    status: int = 0
    reason: str = ""  # the violation this request caused, if any


@dataclass
class Incoming:
    """A parsed request handed to ``_route``."""

    method: str
    path: str
    headers: dict[str, str]
    query: dict[str, str]
    form: dict[str, str]
    body: bytes
    repeated: list[str] = field(default_factory=list)  # parameter names sent more than once

    @property
    def content_type(self) -> str:
        """The media type alone: ``application/x-www-form-urlencoded; charset=utf-8`` → ``...``."""
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    def bearer(self) -> str | None:
        scheme, _, value = self.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        return value.strip() or None


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, value: Any, headers: dict[str, str] | None = None) -> Response:
        return cls(
            status,
            json.dumps(value).encode(),
            {"Content-Type": "application/json; charset=utf-8", **(headers or {})},
        )

    @classmethod
    def text(cls, status: int, text: str, content_type: str = "text/plain") -> Response:
        return cls(status, text.encode(), {"Content-Type": f"{content_type}; charset=utf-8"})

    @classmethod
    def redirect(cls, location: str) -> Response:
        return cls(302, b"", {"Location": location})


class Refusal(Exception):
    """Raised by a route handler to answer ``response`` at once (a refused request)."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


@dataclass
class _Failure:
    path_suffix: str
    status: int | None  # None: answer normally, only late
    remaining: int
    body: bytes | str | dict[str, Any] | None
    retry_after: int | str | None
    delay: float


def _parse_pairs(text: str, repeated: list[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for name, value in parse_qsl(text, keep_blank_values=True):
        if name in values and name not in repeated:
            repeated.append(name)
        values.setdefault(name, value)
    return values


class FakeServer:
    """Base of the provider fakes; see the module docstring."""

    def __init__(self, *, now: Callable[[], float] = time.time, port: int | None = None) -> None:
        self.port = port or free_port()
        self.requests: list[Recorded] = []
        self.violations: list[str] = []
        self.grants: Counter[str] = Counter()  # successful token grants by wire grant_type
        self._clock = now
        self._offset = 0.0
        self._failures: list[_Failure] = []
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._tokens = TokenRegistry(self.now)
        self._reason = threading.local()

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                fake._handle(self)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output quiet

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self._stopping.clear()
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes requests stalled by fail_next(delay=...)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- test controls ---------------------------------------------------------------------------

    def now(self) -> float:
        """The fake's time: the injected clock plus everything ``advance`` added."""
        return self._clock() + self._offset

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._offset += seconds

    def fail_next(
        self,
        path_suffix: str,
        status: int | None,
        count: int = 1,
        *,
        body: bytes | str | dict[str, Any] | None = None,
        retry_after: int | str | None = None,
        delay: float = 0.0,
    ) -> None:
        """Answer ``status`` to the next ``count`` requests whose path ends with ``path_suffix``.

        ``delay`` stalls each of them first (a client with a shorter timeout sees a timeout).
        ``status=None`` with a delay processes the request for real but answers late: the provider
        did the work (e.g. rotated a refresh token) and the client never heard about it.
        """
        with self._lock:
            self._failures.append(_Failure(path_suffix, status, count, body, retry_after, delay))

    def authorize_redirect(self, authorize_url: str) -> str:
        """GET ``authorize_url`` as a browser would, without following: the ``Location`` sent back.

        The fakes approve at once (no UI), so this is where the user's browser would land next.
        """
        url = urlsplit(authorize_url)
        if (url.hostname, url.port) != ("127.0.0.1", self.port):
            raise ValueError(f"{authorize_url!r} does not point at this fake ({self.url})")
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", f"{url.path}?{url.query}" if url.query else url.path)
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        location = response.getheader("Location")
        if response.status != 302 or location is None:
            raise AssertionError(f"authorize answered {response.status}, not a redirect: {body!r}")
        return location

    def requests_to(self, path_suffix: str) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.path.endswith(path_suffix)]

    def is_active(self, token: str) -> bool:
        with self._lock:
            return self._tokens.state(token) is TokenState.ACTIVE

    def token_state(self, token: str) -> TokenState:
        with self._lock:
            return self._tokens.state(token)

    def issued(self, kind: str | None = None) -> list[Token]:
        """Copies of every token issued so far (``kind``: "access" or "refresh")."""
        with self._lock:
            return self._tokens.snapshot(kind)

    def expire_access_tokens(self) -> None:
        with self._lock:
            self._tokens.expire_access_tokens()

    # -- for subclasses --------------------------------------------------------------------------

    def _route(self, request: Incoming) -> Response:
        raise NotImplementedError

    def _violation(self, request: Incoming, reason: str) -> None:
        """Record that ``request`` broke the documented contract (the caller answers the error)."""
        text = f"{request.method} {request.path}: {reason}"
        self.violations.append(text)
        self._reason.text = text

    # -- plumbing --------------------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        request = self._parse(handler)
        if request is None:
            # The client went away before its body arrived (a worker killed mid-request): a real
            # server never sees a request, so nothing is answered or recorded.
            handler.close_connection = True
            return
        failure = self._take_failure(request.path)
        if failure is not None and failure.delay > 0:
            self._stopping.wait(failure.delay)
        self._reason.text = ""
        with self._lock:
            if failure is not None and failure.status is not None:
                response = self._failure_response(failure)
            else:
                try:
                    response = self._route(request)
                except Refusal as refusal:
                    response = refusal.response
            self.requests.append(
                Recorded(
                    request.method,
                    request.path,
                    request.headers,
                    request.query,
                    request.form,
                    request.body,
                    response.status,
                    self._reason.text,
                )
            )
        self._send(handler, response)

    def _parse(self, handler: BaseHTTPRequestHandler) -> Incoming | None:
        url = urlsplit(handler.path)
        headers = {name.lower(): value for name, value in handler.headers.items()}
        length = int(headers.get("content-length") or 0)
        body = handler.rfile.read(length)
        if len(body) < length:
            return None
        repeated: list[str] = []
        query = _parse_pairs(url.query, repeated)
        form: dict[str, str] = {}
        if headers.get("content-type", "").split(";")[0].strip().lower() == FORM:
            form = _parse_pairs(body.decode("utf-8", errors="replace"), repeated)
        return Incoming(handler.command, url.path, headers, query, form, body, repeated)

    def _take_failure(self, path: str) -> _Failure | None:
        with self._lock:
            for failure in self._failures:
                if failure.remaining > 0 and path.endswith(failure.path_suffix):
                    failure.remaining -= 1
                    return failure
        return None

    @staticmethod
    def _failure_response(failure: _Failure) -> Response:
        assert failure.status is not None
        body = failure.body
        if isinstance(body, dict):
            response = Response.json(failure.status, body)
        elif body is None:
            response = Response.text(failure.status, HTTPStatus(failure.status).phrase)
        else:
            response = Response(failure.status, body.encode() if isinstance(body, str) else body)
        if failure.retry_after is not None:
            response.headers["Retry-After"] = str(failure.retry_after)
        return response

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, response: Response) -> None:
        try:
            handler.send_response(response.status)
            for name, value in response.headers.items():
                handler.send_header(name, value)
            handler.send_header("Content-Length", str(len(response.body)))
            handler.end_headers()
            handler.wfile.write(response.body)
        except OSError:
            pass  # the client gave up (a timeout test); nothing left to tell it
