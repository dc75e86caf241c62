"""What a grant must satisfy before the connect flow stores it: no error from the provider, the
scopes that were asked, the person the link names (the app's identity policy) and, on a
reconnect, the account the connection was made with. Each refusal is a ``CallbackFailed`` whose
message fits the user's page."""

from __future__ import annotations

import re

from shared.config.apps import App
from shared.foundation.errors import CallbackFailed
from shared.providers import scopes
from shared.providers.identity import Identity
from shared.providers.oauth import Grant

IDENTITY_MISMATCH = "identity_mismatch"
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
    provider = app.provider
    return scopes.missing(provider.scope_check, app.scopes, grant.scopes, provider.implicit_scopes)


def insufficient_scope(app: App, missing: list[str]) -> CallbackFailed:
    return CallbackFailed(
        403,
        "insufficient_scope",
        f"{app.display_name} granted less than "
        f"was asked (missing: {' '.join(missing)}); nothing was stored.",
    )


def wrong_account(app: App, grant: Grant, user_id: str) -> CallbackFailed | None:
    """The refusal when the app's identity policy says another person signed in (None if not)."""
    policy = app.identity
    if policy is None:
        return None
    identity = grant.identity
    value = identity.claim(policy.claim) if identity else None
    if policy.accepts(value, user_id):
        return None
    shown = value or (identity.login if identity else None) or "an account that gives no name"
    provider = app.display_name
    return CallbackFailed(
        403,
        IDENTITY_MISMATCH,
        f"You signed in to {provider} as {shown}, but this link is for {user_id}. Nothing was "
        f"stored. Sign out of {provider} (or use a private window), open a new link and sign in "
        f"as {user_id}.",
        {"expected": user_id, "signed_in": shown, "claim": policy.claim},
    )


def changed_account(
    app: App, recorded: Identity | None, grant: Grant, allowed: bool
) -> CallbackFailed | None:
    """The refusal when a reconnect brings another account at the provider than the connection
    was made with, unless the link allows it (None if the account is the same or unknown)."""
    fresh = grant.identity
    if allowed or recorded is None or fresh is None or not identity_changed(recorded, grant):
        return None
    before = recorded.login or recorded.subject
    now = fresh.login or fresh.subject
    return CallbackFailed(
        403,
        IDENTITY_MISMATCH,
        f"This connection was made with the {app.display_name} account {before}, and you signed "
        f"in as {now}. Nothing was stored. Sign in as {before}, or ask for a new link that "
        "allows changing the account.",
        {"expected": str(before), "signed_in": str(now), "claim": "sub", "reason": "changed"},
    )


def identity_changed(recorded: Identity | None, grant: Grant) -> bool:
    """Whether the grant's subject differs from the recorded one (both must be known)."""
    fresh = grant.identity
    return bool(recorded and recorded.subject and fresh and fresh.subject
                and fresh.subject != recorded.subject)  # fmt: skip
