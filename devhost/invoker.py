"""Calling a user function: arguments in, outputs sent, one log line out.

Synchronous functions run on the calling thread (an HTTP connection's, a queue message's or a
timer's thread). ``async def`` functions run on one event loop shared by all invocations, as
in the Python worker, so objects an app caches on its loop (clients, sessions) stay usable.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
import uuid
from dataclasses import dataclass

import azure.functions as func

from devhost.bindings import Context, Invocation
from devhost.connections import Connections
from devhost.loader import FunctionSpec

log = logging.getLogger("devhost")


@dataclass(frozen=True)
class Outcome:
    ok: bool
    elapsed_ms: float
    value: object = None
    error: Exception | None = None


class Invoker:
    def __init__(self, connections: Connections, encoding: str, directory: str) -> None:
        self._connections = connections
        self._encoding = encoding
        self._directory = directory
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="devhost-async", daemon=True
        )
        self._thread.start()

    def invoke(self, spec: FunctionSpec, trigger_value: object, detail: str = "") -> Outcome:
        context = Context(str(uuid.uuid4()), spec.name, self._directory)
        invocation = Invocation(spec, trigger_value, context)
        started = time.monotonic()
        try:
            result = spec.function(**invocation.arguments())
            if inspect.iscoroutine(result):
                result = asyncio.run_coroutine_threadsafe(result, self._loop).result()
            for connection, queue, content in invocation.messages(result, self._encoding):
                self._connections.queue(connection, queue).send_message(content)
        except Exception as exc:
            elapsed = (time.monotonic() - started) * 1000
            log.error("function %s raised (invocation %s)", spec.name, context.invocation_id,
                      exc_info=exc)  # fmt: skip
            log.info("%s failed (%s%s) in %.0f ms", spec.name, spec.kind, detail, elapsed)
            return Outcome(False, elapsed, error=exc)
        elapsed = (time.monotonic() - started) * 1000
        status = f" -> {result.status_code}" if isinstance(result, func.HttpResponse) else ""
        log.info("%s succeeded (%s%s%s) in %.0f ms", spec.name, spec.kind, detail, status, elapsed)
        return Outcome(True, elapsed, value=result)

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
