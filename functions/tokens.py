"""GET /api/connections/{app}/{user_id}/token (``tokens:read``): a valid access token; and
POST .../token/rejected: the provider refused one, so the current token is refreshed once."""

from __future__ import annotations

import azure.functions as func

from functions._auth import authorized
from functions._blueprint import blueprint
from functions._http import endpoint, error_response, json_response, read_json
from shared.access.api_keys import Principal
from shared.foundation import inputs
from shared.foundation.errors import RefreshUnavailable
from shared.lifecycle.access_tokens import MAX_MIN_TTL
from shared.lifecycle.caller_requests import TokenRejection
from shared.runtime import get_runtime

bp = blueprint()
SCOPE = "tokens:read"


@bp.route(
    route="connections/{app}/{user_id}/token", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS
)
@endpoint
@authorized(SCOPE)
def get_token(req: func.HttpRequest, principal: Principal) -> func.HttpResponse:
    app = req.route_params["app"]
    # Checked (a %20 decoded into a trailing space is refused) and resolved to the first-given form.
    user_id = get_runtime().user_ids.resolve(req.route_params["user_id"])
    principal.require_resource(SCOPE, app, user_id)
    try:
        token = get_runtime().tokens.token(
            app,
            user_id,
            min_ttl=inputs.query_whole(req.params, "min_ttl", low=0, high=MAX_MIN_TTL),
            force_refresh=inputs.query_flag(req.params, "force_refresh"),
        )
    except RefreshUnavailable as exc:
        return _unavailable(exc)
    return json_response(token.public())


@bp.route(
    route="connections/{app}/{user_id}/token/rejected",
    methods=["POST"],
    auth_level=func.AuthLevel.ANONYMOUS,
)
@endpoint
@authorized(SCOPE)
def token_rejected(req: func.HttpRequest, principal: Principal) -> func.HttpResponse:
    app = req.route_params["app"]
    user_id = get_runtime().user_ids.resolve(req.route_params["user_id"])
    principal.require_resource(SCOPE, app, user_id)
    report = TokenRejection.parse(read_json(req))
    try:
        token = get_runtime().tokens.rejected(
            app, user_id, report.access_token_sha256, actor=principal.actor
        )
    except RefreshUnavailable as exc:
        return _unavailable(exc)
    return json_response(token.public())


def _unavailable(exc: RefreshUnavailable) -> func.HttpResponse:
    return error_response(exc.error, exc.message, 503, {"Retry-After": str(exc.retry_after)})
