"""The refresh policy, pure: whether a stored access token answers a request (and may be served
at all), when the sweep should next refresh a connection, and how long to back off after a
failure. No I/O here, so the
rules are tested on their own and the token path and the sweep agree by construction."""

from __future__ import annotations

import hashlib
import hmac
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.config.apps import App
from shared.foundation.errors import Gone, GrantInvalid
from shared.storage.tables.connections import Connection, Status

BACKOFF_BASE = 10.0
BACKOFF_CAP = 1800.0


def satisfies(
    connection: Connection,
    now: datetime,
    min_ttl: timedelta,
    asked_at: datetime | None = None,
    *,
    force: bool = False,
    cooldown: timedelta | None = None,
) -> bool:
    """Whether the stored access token answers a request made at ``asked_at``: it has not expired
    and it lives at least ``min_ttl`` more (unless the caller forces a refresh), or it was
    refreshed after the request arrived, or within the ``cooldown`` (at most one refresh per
    cooldown: a provider whose tokens live less than ``min_ttl`` is not asked on every call)."""
    expires = connection.access_expires_at
    if connection.access_token is None or expires is None or expires <= now:
        return False
    if not force and expires - now >= min_ttl:
        return True
    refreshed = connection.last_refreshed_at
    if refreshed is None:
        return False
    return (asked_at is not None and refreshed >= asked_at) or (
        cooldown is not None and cooling(connection, now, cooldown) > 0
    )


def is_current(connection: Connection, token_sha256: str) -> bool:
    """Whether a caller's SHA-256 (hex) names the stored access token (compared in constant time:
    the hash stands for a live secret)."""
    if connection.access_token is None:
        return False
    digest = hashlib.sha256(connection.access_token.reveal().encode()).hexdigest()
    return hmac.compare_digest(digest, token_sha256.lower())


def cooling(connection: Connection, now: datetime, cooldown: timedelta) -> float:
    """Seconds left of the cooldown since the last refresh (0 when none is running). A connect
    is no refresh: a caller may force one, or report the new token refused, at once."""
    refreshed = connection.last_refreshed_at
    if refreshed is None or refreshed == connection.connected_at:
        return 0.0
    return max((refreshed + cooldown - now).total_seconds(), 0.0)


def due_at(connection: Connection, app: App, now: datetime) -> datetime:
    """When the sweep should next refresh this connection: before the access token enters its
    refresh margin, before an idle refresh token lapses, or when back-off allows."""
    margin = timedelta(seconds=app.provider.refresh_margin)
    candidates = []
    if connection.access_expires_at is not None:
        # A little before the margin, so a caller rarely meets a due token.
        candidates.append(connection.access_expires_at - margin - margin / 2)
    if app.provider.keepalive_days:
        last = connection.last_refreshed_at or connection.connected_at
        # Refresh at two thirds of the idle lifetime: days of slack if a sweep is down.
        candidates.append(last + timedelta(days=app.provider.keepalive_days) * 2 / 3)
    # A token that never says when it expires is looked at daily.
    when = min(candidates) if candidates else now + timedelta(days=1)
    if connection.next_attempt_at is not None:
        when = max(when, connection.next_attempt_at)
    return max(when, now)


def backoff(failures: int, retry_after: float | None) -> float:
    delay = min(BACKOFF_BASE * 2.0 ** max(failures - 1, 0), BACKOFF_CAP)
    delay *= random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not security
    return max(delay, retry_after or 0.0)


@dataclass(frozen=True)
class AccessToken:
    """What a caller is given. Its type is always ``Bearer`` (RFC 6750), whatever the provider
    wrote (legacy Azure DevOps writes ``jwt-bearer``, PagerDuty ``bearer``): every one of them is
    sent as ``Authorization: Bearer``. The provider's own value stays in the connection."""

    access_token: str
    expires_at: datetime
    scope: list[str]

    def public(self) -> dict[str, object]:
        return {
            "access_token": self.access_token,
            "token_type": "Bearer",
            "expires_at": self.expires_at.isoformat(),
            "scope": " ".join(self.scope),
        }


def check_servable(connection: Connection) -> None:
    """A revoked connection is gone (410); one that needs the user again is a dead grant (424)."""
    if connection.status == Status.REVOKED:
        raise Gone(f"the connection '{connection.resource}' was revoked")
    if connection.status == Status.NEEDS_REAUTH:
        raise GrantInvalid(
            f"the connection '{connection.resource}' needs the user to connect again",
            oauth_error=connection.reauth_error or connection.last_error or "invalid_grant",
            provider_code=connection.reauth_code,
        )


def sealed_grant(connection: Connection) -> str | None:
    """What identifies the grant a refresh started from (its stored ciphertext)."""
    for secret in (connection.refresh_token, connection.msal_cache):
        if secret is not None:
            return getattr(secret, "token", None) or secret.reveal()
    return None


def token_of(connection: Connection) -> AccessToken:
    assert connection.access_token is not None
    assert connection.access_expires_at is not None
    return AccessToken(
        access_token=connection.access_token.reveal(),
        expires_at=connection.access_expires_at,
        scope=connection.scopes,
    )
