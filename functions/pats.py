"""Managed Azure DevOps PATs: create, inventory, state, extend, revoke, rotate, current secret."""

from __future__ import annotations

import logging

import azure.functions as func

from functions._auth import authorized
from functions._blueprint import blueprint
from functions._http import endpoint, json_response, read_json
from shared.access.api_keys import Principal
from shared.foundation.errors import InputError
from shared.lifecycle.caller_requests import NewPat, PatExtension, RotationMessage
from shared.lifecycle.pats.rotation import ROTATION_QUEUE
from shared.runtime import get_runtime
from shared.storage.tables.pats import ManagedPat

bp = blueprint()
log = logging.getLogger("keysteward.pats")
READ, MANAGE, SECRET = "pats:read", "pats:manage", "pats:read-secret"


def _pat(req: func.HttpRequest, principal: Principal, scope: str) -> ManagedPat:
    pat = get_runtime().managed_pats.get(req.route_params["id"])
    principal.require_resource(scope, pat.app, pat.user_id)
    return pat


@bp.route(route="connections/{app}/{user_id}/pats", methods=["POST"],
          auth_level=func.AuthLevel.ANONYMOUS)  # fmt: skip
@endpoint
@authorized(MANAGE)
def create_pat(req: func.HttpRequest, principal: Principal) -> func.HttpResponse:
    app = req.route_params["app"]
    # Checked (a %20 decoded into a trailing space is refused) and resolved to the first-given form.
    user_id = get_runtime().user_ids.resolve(req.route_params["user_id"])
    principal.require_resource(MANAGE, app, user_id)
    request = NewPat.parse(read_json(req))
    pat, secret = get_runtime().managed_pats.create(app, user_id, request, actor=principal.actor)
    return json_response({**pat.public(), "secret": secret.reveal()}, status=201)


@bp.route(route="connections/{app}/{user_id}/pats", methods=["GET"],
          auth_level=func.AuthLevel.ANONYMOUS)  # fmt: skip
@endpoint
@authorized(READ)
def list_pats(req: func.HttpRequest, principal: Principal) -> func.HttpResponse:
    app = req.route_params["app"]
    # Checked (a %20 decoded into a trailing space is refused) and resolved to the first-given form.
    user_id = get_runtime().user_ids.resolve(req.route_params["user_id"])
    principal.require_resource(READ, app, user_id)
    pats = get_runtime().managed_pats.inventory(app, user_id, req.params.get("organization"))
    return json_response({"pats": pats})


@bp.route(route="pats/{id}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint
@authorized(READ)
def get_pat(req: func.HttpRequest, principal: Principal) -> func.HttpResponse:
    pat = _pat(req, principal, READ)  # the caller may see it before Azure DevOps is asked
    return json_response(get_runtime().pat_upstream.check(pat.id).public())


@bp.route(route="pats/{id}", methods=["PATCH"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint
@authorized(MANAGE)
def extend_pat(req: func.HttpRequest, principal: Principal) -> func.HttpResponse:
    pat = _pat(req, principal, MANAGE)
    request = PatExtension.parse(read_json(req))
    return json_response(
        get_runtime().managed_pats.extend(pat.id, request, actor=principal.actor).public()
    )


@bp.route(route="pats/{id}", methods=["DELETE"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint
@authorized(MANAGE)
def revoke_pat(req: func.HttpRequest, principal: Principal) -> func.HttpResponse:
    pat = _pat(req, principal, MANAGE)
    revoked = get_runtime().pat_revocation.revoke(pat.id, actor=principal.actor)
    return json_response(revoked.public())


@bp.route(route="pats/{id}/rotate", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint
@authorized(MANAGE)
def rotate_pat(req: func.HttpRequest, principal: Principal) -> func.HttpResponse:
    pat = _pat(req, principal, MANAGE)
    pat, started = get_runtime().pat_rotations.start(pat.id, actor=principal.actor,
                                                     reason="requested")  # fmt: skip
    return json_response({"id": pat.id, "rotation_id": pat.rotation_id, "step": pat.rotation_step,
                          "started": started}, status=202)  # fmt: skip


@bp.route(route="pats/{id}/secret", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint
@authorized(SECRET)
def get_pat_secret(req: func.HttpRequest, principal: Principal) -> func.HttpResponse:
    pat = _pat(req, principal, SECRET)
    return json_response(get_runtime().managed_pats.secret(pat.id))


@bp.queue_trigger(arg_name="msg", queue_name=ROTATION_QUEUE, connection="AzureWebJobsStorage")
def rotate_pat_step(msg: func.QueueMessage) -> None:
    try:
        message = RotationMessage.parse(msg.get_body())
    except InputError:
        log.error("rotation-requests: malformed message %s dropped", msg.id)
        return
    pat_id, rotation_id = message.pat_id, message.rotation_id
    service = get_runtime().pat_rotations
    wait = service.run(pat_id, rotation_id)
    if wait is not None:
        # The next step later (grace period, back-off): a delayed message survives restarts.
        service.enqueue(pat_id, rotation_id, delay=max(wait, 1))
    log.info("rotation %s of %s: %s", rotation_id, pat_id,
             "done" if wait is None else f"next in {wait:.0f} s")  # fmt: skip
