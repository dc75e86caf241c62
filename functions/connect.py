"""The connect flow: a link for a user (API), then the browser's way through the provider."""

from __future__ import annotations

import logging
from collections.abc import Callable

import azure.functions as func

from functions._auth import authorized
from functions._blueprint import blueprint
from functions._http import endpoint, json_response, read_json
from functions._pages import page, redirect
from shared.access.api_keys import Principal
from shared.foundation.errors import CallbackFailed, KeystewardError
from shared.lifecycle.caller_requests import NewLink
from shared.runtime import get_runtime

bp = blueprint()
log = logging.getLogger("keysteward.connect")


@bp.route(route="connect-sessions", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint
@authorized("connections:write")
def create_connect_session(req: func.HttpRequest, principal: Principal) -> func.HttpResponse:
    request = NewLink.parse(read_json(req))
    principal.require_resource("connections:write", request.app, request.user_id)
    link = get_runtime().connect.create_link(request, actor=principal.actor)
    return json_response(link, status=201)


@bp.route(route="connect/{session}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def open_connect_link(req: func.HttpRequest) -> func.HttpResponse:
    return _browser(lambda: redirect(get_runtime().connect.start(req.route_params["session"])))


@bp.route(route="oauth/{app}/callback", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def oauth_callback(req: func.HttpRequest) -> func.HttpResponse:
    def finish() -> func.HttpResponse:
        params = {name: req.params[name] for name in req.params}
        connected = get_runtime().connect.callback(req.route_params["app"], params)
        if connected.redirect_to:
            return redirect(connected.redirect_to)
        connection = connected.connection
        return page(200, "Connected", f"{connection.app} is connected for {connection.user_id}. "
                    "You can close this window.")  # fmt: skip

    return _browser(finish)


def _browser(step: Callable[[], func.HttpResponse]) -> func.HttpResponse:
    """Pages, never JSON, for what a browser opens; failures explained, never a stack trace."""
    try:
        return step()
    except CallbackFailed as failed:
        return page(failed.status, "Could not connect", failed.message, failed.error)
    except KeystewardError as exc:
        log.warning("connect step failed: %s", exc.error)
        status = 503 if exc.status >= 500 else exc.status
        message = "Keysteward could not complete this step; try again shortly."
        return page(status, "Could not connect", message, exc.error)
    except Exception:
        log.exception("connect step failed unexpectedly")
        return page(500, "Could not connect", "Something went wrong on our side.", "internal_error")
