"""What every HTTP function shares: JSON bodies in and out, and errors mapped to 4xx/5xx.

A handler raises ``KeystewardError`` subclasses; the ``endpoint`` decorator turns them into
``{"error", "message"}`` bodies with their status. Anything else is a bug: it is logged with its
traceback and answered 500 without details, so no internal text (or secret) reaches a caller.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

import azure.functions as func

from shared.foundation.errors import InputError, KeystewardError, PayloadTooLarge

log = logging.getLogger("keysteward.http")

MAX_BODY_BYTES = 64 * 1024
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

Handler = Callable[[func.HttpRequest], func.HttpResponse]


def json_response(
    body: Mapping[str, Any] | list[Any],
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(body, default=str),
        status_code=status,
        mimetype="application/json",
        charset="utf-8",
        headers={**_NO_STORE, **(headers or {})},
    )


def error_response(
    error: str, message: str, status: int, headers: Mapping[str, str] | None = None
) -> func.HttpResponse:
    return json_response({"error": error, "message": message}, status, headers)


def endpoint(handler: Handler) -> Handler:
    @functools.wraps(handler)
    def wrapper(req: func.HttpRequest) -> func.HttpResponse:
        try:
            return handler(req)
        except KeystewardError as exc:
            status = exc.status if 400 <= exc.status < 600 else 500
            if status >= 500:
                log.error("%s %s failed: %s", req.method, _path(req), exc.error)
            retry = getattr(exc, "retry_after", None)
            headers = {"Retry-After": str(max(1, round(retry)))} if retry else None
            return error_response(exc.error, exc.message, status, headers)
        except Exception:
            log.exception("%s %s: unexpected error", req.method, _path(req))
            return error_response("internal_error", "an unexpected error occurred", 500)

    return wrapper


def read_json(req: func.HttpRequest, allowed: set[str] | None = None) -> dict[str, Any]:
    """The request's JSON object body, or InputError saying what is wrong with it.

    With ``allowed``, a field outside it is refused rather than silently ignored.
    """
    content_type = (req.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise InputError("the body must be JSON, sent with Content-Type: application/json")
    raw = req.get_body()
    if len(raw) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"the body is larger than {MAX_BODY_BYTES} bytes (64 KiB)")
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InputError("the body is not valid JSON") from None
    except (ValueError, RecursionError):
        # JSON that Python will not read: an integer of more than 4300 digits
        # (sys.get_int_max_str_digits), or nesting deeper than the recursion limit.
        raise InputError("the body nests too deeply or holds a number too long to read") from None
    if not isinstance(body, dict):
        raise InputError("the body must be a JSON object")
    unknown = set(body) - allowed if allowed is not None else set()
    if unknown:
        raise InputError(f"unknown field(s) {sorted(unknown)}; allowed: {sorted(allowed or ())}")
    return body


def _path(req: func.HttpRequest) -> str:
    # Only the path: query strings may carry codes or states.
    return str(req.url).split("?", 1)[0]
