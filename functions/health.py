"""GET /api/health: is Keysteward up, can it reach Table Storage, and which apps a provider
refuses outright (still 200: Keysteward itself is fine, an operator must fix the app)."""

from __future__ import annotations

import azure.functions as func

from functions._blueprint import blueprint
from functions._http import endpoint, json_response
from shared.foundation.version import VERSION
from shared.runtime import get_runtime

bp = blueprint()


@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint
def health(req: func.HttpRequest) -> func.HttpResponse:
    reachable = get_runtime().storage_reachable()
    return json_response(
        {
            "status": "ok" if reachable else "degraded",
            "version": VERSION,
            "storage": "ok" if reachable else "unreachable",
            "misconfigured_apps": get_runtime().misconfigured_apps() if reachable else [],
        },
        status=200 if reachable else 503,
    )
