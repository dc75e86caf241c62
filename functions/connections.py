"""Connections metadata (``connections:read``): never a secret, always within the key's globs."""

from __future__ import annotations

import azure.functions as func

from functions._auth import authorized
from functions._blueprint import blueprint
from functions._http import endpoint, json_response
from shared.access.api_keys import Principal
from shared.foundation import inputs
from shared.runtime import get_runtime
from shared.storage.tables.connections import Connection, Status

bp = blueprint()
READ = "connections:read"


@bp.route(route="connections", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint
@authorized(READ)
def list_connections(req: func.HttpRequest, principal: Principal) -> func.HttpResponse:
    app, given, status = (req.params.get(n) or None for n in ("app", "user_id", "status"))
    inputs.one_of(status, "status", tuple(s.value for s in Status))
    runtime = get_runtime()
    connections = runtime.connections
    user_id = None if given is None else runtime.user_ids.resolve(given)
    found: list[Connection]
    if app and user_id:
        one = connections.find(app, user_id)
        found = [one] if one else []
    elif app:
        found = connections.of_app(app)
    elif user_id:
        # Ids the backfill found differing only by case are listed too: what revoking reaches.
        found = [c for form in runtime.user_ids.forms(user_id) for c in connections.of_user(form)]
    else:
        found = connections.all()
    visible = [
        c.public()
        for c in found
        if principal.covers(c.app, c.user_id) and (status is None or c.status == status)
    ]
    return json_response({"connections": visible})


@bp.route(route="connections/{app}/{user_id}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint
@authorized(READ)
def get_connection(req: func.HttpRequest, principal: Principal) -> func.HttpResponse:
    app = req.route_params["app"]
    # Checked (a %20 decoded into a trailing space is refused) and resolved to the first-given form.
    user_id = get_runtime().user_ids.resolve(req.route_params["user_id"])
    principal.require_resource(READ, app, user_id)
    return json_response(get_runtime().connections.get(app, user_id).public())
