"""GET /api/audit (scope ``audit:read``): the audit trail, newest last."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import azure.functions as func

from functions._auth import authorized
from functions._blueprint import blueprint
from functions._http import endpoint, json_response
from shared.apikeys import Principal
from shared.errors import InputError
from shared.runtime import get_runtime

bp = blueprint()
MAX_DAYS = 31


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
    entries = runtime.audit.read(since, until, subject=req.params.get("subject"), limit=limit)
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
    except ValueError:
        raise InputError(f"'{name}' must be an ISO 8601 time, e.g. 2026-11-22T00:00:00Z") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _limit(value: str | None) -> int:
    if value is None:
        return 1000
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= 1000:
        raise InputError("'limit' must be a whole number from 1 to 1000")
    return int(value)
