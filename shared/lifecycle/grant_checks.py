"""What a grant must satisfy before the connect flow stores it: no error from the provider, the
scopes that were asked. Each refusal is a ``CallbackFailed`` whose message fits the user's page."""

from __future__ import annotations

import re

from shared.config.apps import App
from shared.foundation.errors import CallbackFailed
from shared.providers.oauth import Grant

_CODE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def provider_error(app: App, params: dict[str, str]) -> None:
    """Refuse a callback that carries the provider's ``error`` (RFC 6749 §4.1.2.1)."""
    error = params.get("error")
    if not error:
        return
    code = error if _CODE.match(error) else "invalid_error"
    if code == "access_denied":
        raise CallbackFailed(
            403,
            "access_denied",
            f"You declined to connect {app.display_name}: nothing was stored.",
        )
    raise CallbackFailed(
        502,
        f"provider_{code}",
        f"{app.display_name} answered with an error ({code}); nothing was stored.",
    )


def missing_scopes(app: App, grant: Grant) -> list[str]:
    """The asked scopes the grant lacks (none when the provider's scopes are not checked)."""
    if not app.provider.scope_check:
        return []
    granted = set(grant.scopes)
    return [s for s in app.scopes if s not in granted and s not in app.provider.implicit_scopes]


def insufficient_scope(app: App, missing: list[str]) -> CallbackFailed:
    return CallbackFailed(
        403,
        "insufficient_scope",
        f"{app.display_name} granted less than "
        f"was asked (missing: {' '.join(missing)}); nothing was stored.",
    )
