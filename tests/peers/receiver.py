"""A local webhook receiver: verifies Standard Webhooks signatures and records what arrived.

It runs in a thread of the test process on 127.0.0.1 (a free port unless one is given) and can be
told to answer 500 to the next N requests. A "down" receiver is just a port nobody listens on.

It verifies as the Standard Webhooks reference library does (standard-webhooks/standard-webhooks,
libraries/python/standardwebhooks/webhooks.py), not with Keysteward's own code: a secret given as
text is what follows ``whsec_``, base64-decoded (unpadded allowed); bytes are the key itself.
Signatures are compared as decoded bytes, ``v1`` only, within five minutes either way.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.peers.processes import free_port

WHSEC = "whsec_"


def key_of(secret: bytes | str) -> bytes:
    """The HMAC key, as the reference library's ``Webhook(secret)`` derives it."""
    if isinstance(secret, bytes):
        return secret
    # The reference appends "==" so unpadded base64 decodes (extra padding is ignored).
    return base64.b64decode(secret.removeprefix(WHSEC) + "==")


def check(key: bytes, headers: dict[str, str], body: bytes, now: int, tolerance: int) -> str:
    """Why the request is refused, or "" when it verifies."""
    lowered = {name.lower(): value for name, value in headers.items()}
    msg_id = lowered.get("webhook-id")
    timestamp = lowered.get("webhook-timestamp")
    signatures = lowered.get("webhook-signature")
    if not (msg_id and timestamp and signatures):
        return "Missing required headers"
    try:
        at = int(float(timestamp))
    except ValueError:
        return "Invalid Signature Headers"
    if at < now - tolerance:
        return "Message timestamp too old"
    if at > now + tolerance:
        return "Message timestamp too new"
    expected = hmac.new(key, f"{msg_id}.{at}.".encode() + body, hashlib.sha256).digest()
    for versioned in signatures.split(" "):
        version, _, signature = versioned.partition(",")
        if version != "v1":
            continue
        try:
            given = base64.b64decode(signature)
        except binascii.Error:
            continue
        if hmac.compare_digest(expected, given):
            return ""
    return "No matching signature found"


@dataclass(frozen=True)
class Delivery:
    headers: dict[str, str]
    body: bytes
    status: int  # what the receiver answered
    reason: str = ""  # why it was rejected or failed

    @property
    def event(self) -> dict[str, Any]:
        value = json.loads(self.body)
        assert isinstance(value, dict)
        return value


class WebhookReceiver:
    def __init__(self, secret: bytes | str, port: int | None = None, tolerance: int = 300) -> None:
        self.key = key_of(secret)
        self.port = port or free_port()
        self.tolerance = tolerance
        self.accepted: list[Delivery] = []
        self.rejected: list[Delivery] = []  # bad signature or stale timestamp: 401
        self.failed: list[Delivery] = []  # answered 500 on purpose
        self._fail_next = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/keysteward"

    def fail_next(self, count: int) -> None:
        """Answer 500 to the next ``count`` requests (before verifying them)."""
        with self._lock:
            self._fail_next = count

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, _ = receiver._judge(dict(self.headers.items()), body)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output quiet

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _judge(self, headers: dict[str, str], body: bytes) -> tuple[int, str]:
        with self._lock:
            if self._fail_next > 0:
                self._fail_next -= 1
                self.failed.append(Delivery(headers, body, 500, "told to fail"))
                return 500, "told to fail"
        reason = check(self.key, headers, body, int(time.time()), self.tolerance)
        if reason:
            with self._lock:
                self.rejected.append(Delivery(headers, body, 401, reason))
            return 401, reason
        with self._lock:
            self.accepted.append(Delivery(headers, body, 204))
        return 204, ""
