"""Scoped API keys over HTTP (``keys:admin``): create, list, read, regenerate, edit, delete; each
only for keys that grant nothing the calling key does not (shared/access/api_keys.py)."""

from __future__ import annotations

import azure.functions as func

from functions._auth import authorized
from functions._blueprint import blueprint
from functions._http import endpoint, json_response, read_json
from shared.access.api_keys import Principal
from shared.access.key_requests import KeyChange, NewKey
from shared.runtime import get_runtime

bp = blueprint()
ADMIN = "keys:admin"


@bp.route(route="keys", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint
@authorized(ADMIN)
def create_key(req: func.HttpRequest, principal: Principal) -> func.HttpResponse:
    request = NewKey.parse(read_json(req))
    key, secret = get_runtime().api_keys.create(request, actor=principal.actor, by=principal)
    return json_response({**key.public(), "key": secret}, status=201)


@bp.route(route="keys", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint
@authorized(ADMIN)
def list_keys(req: func.HttpRequest, principal: Principal) -> func.HttpResponse:
    return json_response({"keys": [key.public() for key in get_runtime().api_keys.list(principal)]})


@bp.route(route="keys/{id}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint
@authorized(ADMIN)
def get_key(req: func.HttpRequest, principal: Principal) -> func.HttpResponse:
    return json_response(get_runtime().api_keys.get(req.route_params["id"], principal).public())


@bp.route(route="keys/{id}/regenerate", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint
@authorized(ADMIN)
def regenerate_key(req: func.HttpRequest, principal: Principal) -> func.HttpResponse:
    key, secret = get_runtime().api_keys.regenerate(
        req.route_params["id"], actor=principal.actor, by=principal
    )
    return json_response({**key.public(), "key": secret})


@bp.route(route="keys/{id}", methods=["PATCH"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint
@authorized(ADMIN)
def update_key(req: func.HttpRequest, principal: Principal) -> func.HttpResponse:
    change = KeyChange.parse(read_json(req))
    key = get_runtime().api_keys.update(
        req.route_params["id"], change, actor=principal.actor, by=principal
    )
    return json_response(key.public())


@bp.route(route="keys/{id}", methods=["DELETE"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint
@authorized(ADMIN)
def delete_key(req: func.HttpRequest, principal: Principal) -> func.HttpResponse:
    get_runtime().api_keys.delete(req.route_params["id"], actor=principal.actor, by=principal)
    return func.HttpResponse(status_code=204, headers={"Cache-Control": "no-store"})
