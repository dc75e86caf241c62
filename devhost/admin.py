"""The host's admin API, as far as development needs it (served outside the route prefix).

``GET /admin/functions`` lists the loaded functions with their trigger and route, schedule or
queue. ``POST /admin/functions/{name}`` with an optional JSON body ``{"input": "..."}`` runs a
timer function now (``past_due`` false) or a queue function with ``input`` as the message body
(a fresh id, dequeue count 1, no real message: nothing is retried or poisoned), output bindings
included. Function names match case-insensitively, as in the host.

Deliberate difference: the host answers 202 as soon as the invocation is queued; devhost runs
the function first and answers 202 (empty body) once it finished, or 500 JSON
``{"error": "function_failed", ...}`` if it raised, so a test or script can wait on the call
instead of polling for side effects. As with Core Tools, no master key is asked for: devhost
listens on loopback unless told otherwise.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from devhost.bindings import function_message, queue_argument
from devhost.invoker import Invoker
from devhost.loader import HTTP, TIMER, FunctionSpec
from devhost.timers import next_occurrence, timer_request

Reply = tuple[int, object]  # status and a JSON payload; None means an empty body


def describe(spec: FunctionSpec, base_url: str, prefix: str) -> dict[str, object]:
    """A function as ``GET /admin/functions`` lists it; ``detail`` is a one-line summary."""
    entry: dict[str, object] = {"name": spec.name, "trigger": spec.kind}
    if spec.trigger == HTTP:
        route = "/".join(part for part in (prefix, (spec.route or "").strip("/")) if part)
        methods = ",".join(spec.methods) if spec.methods else "*"
        entry.update(methods=list(spec.methods or []) or None, url=f"{base_url}/{route}")
        entry["detail"] = f"{methods} /{route}"
    elif spec.trigger == TIMER:
        entry.update(schedule=spec.schedule, runOnStartup=spec.run_on_startup)
        entry["detail"] = f"{spec.schedule}" + (" (and on start-up)" if spec.run_on_startup else "")
    else:
        entry.update(queue=spec.queue, connection=spec.connection or "AzureWebJobsStorage")
        entry["detail"] = f"queue {spec.queue}"
    if spec.outputs:
        entry["outputs"] = [output.queue for output in spec.outputs]
        entry["detail"] = f"{entry['detail']} -> queue {', '.join(o.queue for o in spec.outputs)}"
    return entry


def _input(body: bytes) -> str | None:
    if not body.strip():
        return ""
    try:
        value = json.loads(body).get("input", "")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def run_now(spec: FunctionSpec, invoker: Invoker, body: bytes) -> Reply:
    if spec.trigger == HTTP:
        return 400, _error("invalid_request", f"{spec.name} is an HTTP function: call its route")
    text = _input(body)
    if text is None:
        return 400, _error("invalid_request", 'the body, if any, must be {"input": "<string>"}')
    if spec.trigger == TIMER:
        assert spec.schedule is not None
        upcoming = next_occurrence(spec.schedule, datetime.now(UTC))
        argument: object = timer_request(False, None, upcoming)
    else:
        now = datetime.now(UTC)
        message = function_message(
            id=str(uuid.uuid4()), body=text.encode("utf-8"), dequeue_count=1, insertion_time=now
        )
        argument = queue_argument(spec, message)
    outcome = invoker.invoke(spec, argument, " admin")
    if not outcome.ok:
        return 500, _error("function_failed", f"{spec.name} raised; see the devhost log")
    return 202, None


def _error(code: str, message: str) -> dict[str, str]:
    return {"error": code, "message": message}
