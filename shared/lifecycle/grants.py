"""Between a stored connection and the provider-neutral ``Grant`` the drivers speak."""

from __future__ import annotations

from datetime import datetime

from shared.providers.oauth import Grant
from shared.storage.tables.connections import Connection


def grant_of(connection: Connection) -> Grant:
    """The grant a connection holds, as a driver takes it."""
    return Grant(
        access_token=connection.access_token,
        token_type=connection.token_type,
        expires_at=connection.access_expires_at,
        refresh_token=connection.refresh_token,
        scopes=tuple(connection.scopes),
        msal_cache=connection.msal_cache,
        msal_account=connection.msal_account,
        extra={"redirect_uri": connection.redirect_uri},
    )


def take_grant(connection: Connection, grant: Grant, now: datetime) -> None:
    """Take a fresh grant's tokens; a grant without a refresh token keeps the old one."""
    connection.access_token = grant.access_token
    connection.token_type = grant.token_type
    connection.access_expires_at = grant.expires_at
    connection.refresh_token = grant.refresh_token or connection.refresh_token
    connection.msal_cache = grant.msal_cache or connection.msal_cache
    connection.msal_account = grant.msal_account or connection.msal_account
    if grant.identity is not None:
        connection.identity = grant.identity.public()
    if grant.scopes:
        connection.scopes = list(grant.scopes)
    connection.updated_at = now
