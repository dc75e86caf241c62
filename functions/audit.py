"""GET /api/audit (scope ``audit:read``): the audit trail, newest last; only the rows about
resources inside the key's globs (all of them for a ``*``-glob key)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import azure.functions as func

from functions._auth import authorized
from functions._blueprint import blueprint
from functions._http import endpoint, json_response
from shared.access.api_keys import Principal
from shared.foundation.errors import InputError
from shared.runtime import get_runtime

bp = blueprint()
MAX_DAYS = 31
MAX_SUBJECT = 1024  # the longest subject the audit trail records
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # the audit trail's row keys count from here


@bp.route(route="audit", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint
@authorized("audit:read")
def read_audit(req: func.HttpRequest, principal: Principal) -> func.HttpResponse:
    runtime = get_runtime()
    now = runtime.clock.now()
    since = _time(req.params.get("since"), "since") or now - timedelta(days=1)
    until = _time(req.params.get("until"), "until") or now
    if until - since > timedelta(days=MAX_DAYS):
        raise InputError(f"at most {MAX_DAYS} days per request: narrow 'since' and 'until'")
    limit = _limit(req.params.get("limit"))
    subject = req.params.get("subject")
    if subject is not None and len(subject) > MAX_SUBJECT:
        # None is stored, and a filter this long could exceed what Table Storage takes in a URL.
        raise InputError(f"'subject' is at most {MAX_SUBJECT} characters")
    entries = runtime.audit.read(since, until, subject=subject, limit=limit, visible=principal.sees)
    return json_response(
        {
            "entries": [
                {
                    "at": e.at.isoformat(),
                    "actor": e.actor,
                    "action": e.action,
                    "subject": e.subject,
                    "outcome": e.outcome,
                    "detail": e.detail,
                }
                for e in entries
            ]
        }
    )


def _time(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        # In UTC here: an offset can push a time at either end of the calendar out of range.
        parsed = (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError):
        raise InputError(f"'{name}' must be an ISO 8601 time, e.g. 2026-11-22T00:00:00Z") from None
    if parsed < _EPOCH:
        raise InputError(f"'{name}' must not be before 1970-01-01T00:00:00Z")
    return parsed


def _limit(value: str | None) -> int:
    if value is None:
        return 1000
    # Without leading zeros, and the length first: int() refuses more than 4300 digits.
    digits = value.lstrip("0") or "0"
    if not (value.isascii() and value.isdigit()) or len(digits) > 4 or not 1 <= int(digits) <= 1000:
        raise InputError("'limit' must be a whole number from 1 to 1000")
    return int(digits)
