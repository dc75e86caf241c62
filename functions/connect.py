"""The connect flow: a link for a user (API), then the browser's way through the provider."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from http.cookies import CookieError, SimpleCookie

import azure.functions as func

from functions._auth import authorized
from functions._blueprint import blueprint
from functions._http import endpoint, json_response, read_json
from functions._pages import page, redirect
from shared.access.api_keys import Principal
from shared.foundation.errors import CallbackFailed, KeystewardError
from shared.lifecycle.browser_binding import WRONG_BROWSER
from shared.lifecycle.caller_requests import NewLink
from shared.runtime import get_runtime

bp = blueprint()
log = logging.getLogger("keysteward.connect")
# Refusals that leave the state unspent: the right browser can still finish.
UNSPENT = {"missing_state", "unknown_state", "wrong_app", WRONG_BROWSER}


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
    def begin() -> func.HttpResponse:
        started = get_runtime().connect.start(req.route_params["session"])
        return redirect(started.url, set_cookie=started.set_cookie)

    return _browser(begin)


@bp.route(route="oauth/{app}/callback", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def oauth_callback(req: func.HttpRequest) -> func.HttpResponse:
    state = req.params.get("state")
    spent: list[str] = []  # the Set-Cookie that forgets the binding, once the runtime is up

    def finish() -> func.HttpResponse:
        connect = get_runtime().connect
        if state:
            # Once the state is spent (whatever came of it), its binding cookie has no use left.
            spent.append(connect.binding.forget(state))
        params = {name: req.params[name] for name in req.params}
        connected = connect.callback(req.route_params["app"], params, _cookies(req))
        forget = spent[0] if spent else None
        if connected.redirect_to:
            return redirect(connected.redirect_to, set_cookie=forget)
        connection = connected.connection
        return page(200, "Connected", f"{connection.app} is connected for {connection.user_id}. "
                    "You can close this window.", set_cookie=forget)  # fmt: skip

    return _browser(finish, spent)


def _cookies(req: func.HttpRequest) -> dict[str, str]:
    jar = SimpleCookie()
    with contextlib.suppress(CookieError):
        jar.load(req.headers.get("Cookie") or "")
    return {name: morsel.value for name, morsel in jar.items()}


def _browser(
    step: Callable[[], func.HttpResponse], spent: list[str] | None = None
) -> func.HttpResponse:
    """Pages, never JSON, for what a browser opens; failures explained, never a stack trace."""
    try:
        return step()
    except CallbackFailed as failed:
        # A state refused before it was spent (wrong browser or app) keeps its cookie.
        forget = spent[0] if spent and failed.error not in UNSPENT else None
        return page(failed.status, "Could not connect", failed.message, failed.error,
                    set_cookie=forget)  # fmt: skip
    except KeystewardError as exc:
        log.warning("connect step failed: %s", exc.error)
        status = 503 if exc.status >= 500 else exc.status
        message = "Keysteward could not complete this step; try again shortly."
        return page(status, "Could not connect", message, exc.error)
    except Exception:
        log.exception("connect step failed unexpectedly")
        return page(500, "Could not connect", "Something went wrong on our side.", "internal_error")
