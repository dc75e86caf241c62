"""The one authorisation path of every non-public function.

``@authorized(scope)`` verifies the caller's API key (401 for a missing, malformed, unknown,
expired, regenerated-away or deleted key) and its scope (403), then calls the handler with the
verified ``Principal``. Resource globs are checked by the handler with
``principal.require_resource``, once it knows which ``{app}/{user_id}`` the call touches.
"""

from __future__ import annotations

from collections.abc import Callable

import azure.functions as func

from functions._http import Handler
from shared.access.api_keys import Principal
from shared.runtime import get_runtime

AuthorizedHandler = Callable[[func.HttpRequest, Principal], func.HttpResponse]


def authorized(scope: str) -> Callable[[AuthorizedHandler], Handler]:
    def decorate(handler: AuthorizedHandler) -> Handler:
        def wrapper(req: func.HttpRequest) -> func.HttpResponse:
            principal = get_runtime().api_keys.verify(req.headers.get("Authorization"))
            principal.require(scope)
            return handler(req, principal)

        # Copy the name but not __wrapped__: the Functions worker matches the visible signature
        # (req only) against the bindings, and the handler's extra parameter is not a binding.
        wrapper.__name__ = handler.__name__
        wrapper.__qualname__ = handler.__qualname__
        wrapper.__doc__ = handler.__doc__
        wrapper.__module__ = handler.__module__
        return wrapper

    return decorate
