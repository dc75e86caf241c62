"""What keeps devhost serving others under a slow or flooding client: at most ``max_connections``
connections at once (each has a thread; one more is answered 503 and closed at once, never
queued behind the rest), and a deadline for a request's line and headers, counted from their
first byte, so a client that trickles them in (slowloris) loses its connection instead of holding
a thread. An idle kept-alive connection waits ``idle_seconds`` for its next request, as before.

devhost is a development tool, but `make run` is what people expose on their machines.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time

log = logging.getLogger("devhost")

MAX_CONNECTIONS = 256
HEADER_SECONDS = 10.0
_BUSY_BODY = b'{"error": "busy", "message": "devhost has too many open connections; retry"}'
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
    b"Connection: close\r\nContent-Length: "
    + str(len(_BUSY_BODY)).encode()
    + b"\r\n\r\n"
    + _BUSY_BODY
)


class HeaderDeadlines:
    """One watchdog thread for every connection reading its request line and headers: a
    connection past its deadline is shut down, which ends the read that holds its thread."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._due: dict[int, tuple[float, socket.socket]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        threading.Thread(target=self._watch, name="devhost-deadlines", daemon=True).start()

    def start(self, sock: socket.socket) -> int:
        token = id(sock)
        with self._lock:
            self._due[token] = (time.monotonic() + self.seconds, sock)
        return token

    def stop(self, token: int) -> None:
        with self._lock:
            self._due.pop(token, None)

    def _watch(self) -> None:
        while True:
            self._wake.wait(min(self.seconds / 4, 0.5))
            now = time.monotonic()
            with self._lock:
                late = [(t, s) for t, (due, s) in self._due.items() if due <= now]
                for token, _ in late:
                    del self._due[token]
            for _, sock in late:
                log.warning("a client sent its request headers too slowly; connection closed")
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


class ConnectionCap:
    """Counts connections; ``admit`` says whether one more may have a thread."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._slots = threading.BoundedSemaphore(limit)

    def admit(self, sock: socket.socket) -> bool:
        if self._slots.acquire(blocking=False):
            return True
        log.warning("more than %d connections at once: one answered 503 and closed", self.limit)
        with contextlib.suppress(OSError):
            sock.settimeout(1.0)  # never let the refused client hold the accepting thread
            sock.sendall(_BUSY)
        return False

    def release(self) -> None:
        self._slots.release()
