"""GET /api/connections/{app}/{user_id}/token (``tokens:read``): a valid access token."""

from __future__ import annotations

import azure.functions as func

from functions._auth import authorized
from functions._blueprint import blueprint
from functions._http import endpoint, error_response, json_response
from shared.access.api_keys import Principal
from shared.foundation.errors import InputError, RefreshUnavailable
from shared.lifecycle.access_tokens import MAX_MIN_TTL
from shared.runtime import get_runtime

bp = blueprint()
SCOPE = "tokens:read"


@bp.route(
    route="connections/{app}/{user_id}/token", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS
)
@endpoint
@authorized(SCOPE)
def get_token(req: func.HttpRequest, principal: Principal) -> func.HttpResponse:
    app, user_id = req.route_params["app"], req.route_params["user_id"]
    principal.require_resource(SCOPE, app, user_id)
    try:
        token = get_runtime().tokens.token(
            app,
            user_id,
            min_ttl=_min_ttl(req.params.get("min_ttl")),
            force_refresh=_flag(req.params.get("force_refresh")),
        )
    except RefreshUnavailable as exc:
        return error_response(exc.error, exc.message, 503, {"Retry-After": str(exc.retry_after)})
    return json_response(token.public())


def _min_ttl(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    if not (value.isascii() and value.isdigit()):
        raise InputError("'min_ttl' must be a whole number of seconds")
    digits = value.lstrip("0") or "0"
    if len(digits) > len(str(MAX_MIN_TTL)):
        # Out of range, and int() refuses more than 4300 digits: say so before it raises.
        raise InputError(f"'min_ttl' must be from 0 to {MAX_MIN_TTL} seconds")
    return int(digits)


def _flag(value: str | None) -> bool:
    if value is None or value.lower() in ("", "false", "0"):
        return False
    if value.lower() in ("true", "1"):
        return True
    raise InputError("'force_refresh' must be true or false")
