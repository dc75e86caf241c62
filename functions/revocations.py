"""Revocation (``connections:revoke``): by user, by app or both, from the queue or over HTTP."""

from __future__ import annotations

import json
import logging

import azure.functions as func

from functions._auth import authorized
from functions._blueprint import blueprint
from functions._http import endpoint, json_response, read_json
from shared.access import globs
from shared.access.api_keys import Principal
from shared.foundation.errors import Conflict, Forbidden, InputError, NotFound
from shared.lifecycle.revocation_requests import (
    QUEUE,
    QUEUE_ACTOR,
    Handoff,
    RevocationRequest,
    parse_message,
)
from shared.runtime import Runtime, get_runtime
from shared.storage.tables.audit import AuditOutcome
from shared.storage.tables.revocations import QUEUE_OWNER, Revocation

bp = blueprint()
log = logging.getLogger("keysteward.revocation")
SCOPE = "connections:revoke"


def _require_cover(principal: Principal, app: str | None, user_id: str | None) -> None:
    """A key revokes only what its globs cover: an app's every user, a user in every app."""
    if app and user_id:
        principal.require_resource(SCOPE, app, user_id)
    elif app and not globs.covers_app(principal.resources, app):
        raise Forbidden(f"this API key's resources do not cover every user of '{app}'")
    elif user_id and not app and not globs.covers_user(principal.resources, user_id):
        raise Forbidden(f"this API key's resources do not cover '{user_id}' in every app")


@bp.route(route="revocations", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint
@authorized(SCOPE)
def request_revocation(req: func.HttpRequest, principal: Principal) -> func.HttpResponse:
    runtime = get_runtime()
    body = read_json(req, allowed={"app", "user_id", "reason", "request_id"})
    request = RevocationRequest.parse({**body, "requested_by": principal.actor})
    _require_cover(principal, request.app, request.user_id)
    revoker = runtime.revoker
    # The id is this key's: another key's, or the queue's, same id is another request.
    record = revoker.accept(request, owner=principal.actor, fallback_id=revoker.new_id())
    revoker.submit(record)
    return json_response({"id": record.id, "status_url": revoker.status_url(record.id)}, 202)


@bp.route(route="revocations/{id}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint
@authorized(SCOPE)
def get_revocation(req: func.HttpRequest, principal: Principal) -> func.HttpResponse:
    revoker = get_runtime().revoker
    # A key reads its own ids; a `*` key (which reads every audit row anyway) also the queue's.
    owners = [principal.actor] + ([QUEUE_OWNER] if globs.within("*", principal.resources) else [])
    record, outcomes = revoker.get(req.route_params["id"], owners)
    try:
        _require_cover(principal, record.app, record.user_id)
    except Forbidden:
        # As unknown as a missing one: a key learns nothing about requests it may not see.
        raise NotFound(f"no revocation request '{record.id}'") from None
    return json_response(record.public(outcomes, revoker.status_url(record.id)))


@bp.route(route="revocation-failures", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint
@authorized(SCOPE)
def list_revocation_failures(req: func.HttpRequest, principal: Principal) -> func.HttpResponse:
    runtime = get_runtime()
    failures = [
        {"type": "connection", **p.public()}
        for p in runtime.revoker.credentials.failures()
        if principal.covers(p.app, p.user_id)
    ] + [
        {"type": "managed_pat", "credential": f"pat:{p.id}", "state": p.status.value,
         "app": p.app, "user_id": p.user_id, "last_error": p.last_error}
        for p in runtime.pat_revocation.unfinished(runtime.clock.now())
        if principal.covers(p.app, p.user_id)
    ]  # fmt: skip
    return json_response({"failures": failures})


@bp.route(route="connections/{app}/{user_id}", methods=["DELETE"],
          auth_level=func.AuthLevel.ANONYMOUS)  # fmt: skip
@endpoint
@authorized(SCOPE)
def revoke_connection(req: func.HttpRequest, principal: Principal) -> func.HttpResponse:
    app = req.route_params["app"]
    # Checked (a %20 decoded into a trailing space is refused) and resolved to the first-given form.
    user_id = get_runtime().user_ids.resolve(req.route_params["user_id"])
    principal.require_resource(SCOPE, app, user_id)
    runtime = get_runtime()
    connection = runtime.connections.get(app, user_id)
    outcome, *pats = runtime.revoker.credentials.revoke_connection(connection, None)
    runtime.audit.record(principal.actor, "connection.revoke_requested", f"{app}/{user_id}",
                         detail={"upstream": outcome.upstream})  # fmt: skip
    return json_response({**outcome.public(), "pats": [p.public() for p in pats]})


@bp.queue_trigger(arg_name="msg", queue_name=QUEUE, connection="AzureWebJobsStorage")
def process_revocation(msg: func.QueueMessage) -> None:
    runtime = get_runtime()
    raw = msg.get_body()
    try:
        message = parse_message(json.loads(raw))
    except (ValueError, InputError) as exc:
        # Malformed: audited and parked on the poison queue now; retrying cannot fix it.
        _park(runtime, msg, exc.message if isinstance(exc, InputError) else "not JSON")
        return
    record: Revocation | None
    if isinstance(message, Handoff):
        record = runtime.revoker.handed_off(message)
        if record is None:
            _park(runtime, msg, "it names no request accepted over HTTP")
            return
    else:
        try:
            # Without a request_id it is known by its queue id (stable across redeliveries).
            record = runtime.revoker.accept(message, owner=QUEUE_OWNER,
                                            fallback_id=msg.id or raw.hex())  # fmt: skip
        except Conflict as exc:
            # The queue's own id, reused for another target: no retry changes that.
            subject = f"revocation:{message.request_id or msg.id}"
            _park(runtime, msg, exc.message, action="revocation.conflict", subject=subject)
            return
    done = runtime.revoker.run(record)
    log.info("revocation %s: %s (%d credentials)", done.id, done.status, done.total)


def _park(
    runtime: Runtime,
    msg: func.QueueMessage,
    reason: str,
    *,
    action: str = "revocation.malformed",
    subject: str | None = None,
) -> None:
    runtime.audit.record(QUEUE_ACTOR, action, subject or f"message:{msg.id}",
                         outcome=AuditOutcome.FAILURE,
                         detail={"reason": reason, "message": msg.id})  # fmt: skip
    runtime.revoker.park(msg.get_body().decode("utf-8", "replace"))
    log.error("revocation-requests: message %s parked (%s: %s)", msg.id, action, reason)
