"""Connections: one user's grant to one app, with the index that finds a user's connections.

``Connections`` (PartitionKey = app, RowKey = user) answers "this user in this app" with a point
read and "everything this app holds" with one partition query; ``ConnectionsByUser``
(PartitionKey = user, RowKey = app) answers "everything this user holds". The index row is
written before the connection, so a crash between the two leaves an index row pointing at
nothing (harmless: readers re-check the main row), never a connection that revocation by user
cannot find.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.foundation.errors import NotFound
from shared.foundation.secret import Secret
from shared.storage.entities import Entity
from shared.storage.store import Row, Store
from shared.storage.tables.revocations import Upstream


class Status(enum.StrEnum):
    ACTIVE = "active"
    NEEDS_REAUTH = "needs_reauth"
    REVOKED = "revoked"


@dataclass
class Connection(Entity):
    TABLE = "Connections"
    PARTITION = "app"
    ROW = "user_id"
    app: str
    user_id: str
    provider: str
    status: Status
    scopes: list[str]
    created_at: datetime
    updated_at: datetime
    connected_at: datetime
    redirect_uri: str
    token_type: str = "Bearer"  # noqa: S105 - a token type, not a password
    access_token: Secret | None = None
    access_expires_at: datetime | None = None
    refresh_token: Secret | None = None
    msal_cache: Secret | None = None
    msal_account: str | None = None
    # Who signed in at the provider ({subject, login, tenant?}), recorded at connect.
    identity: dict[str, str] | None = None
    subject: str | None = None  # rows written before ``identity``: the Entra login, if any
    last_refreshed_at: datetime | None = None
    refresh_failures: int = 0
    last_error: str | None = None
    next_attempt_at: datetime | None = None
    needs_reauth_at: datetime | None = None
    # Why it needs the user again: the OAuth error and the provider's own code (AADSTS70008).
    reauth_error: str | None = None
    reauth_code: str | None = None
    # Unrecognised refusals since the last success (shared.providers.refusals).
    refusals: int = 0
    revoked_at: datetime | None = None
    revoke_upstream: Upstream | None = None
    revoke_error: str | None = None
    schedule_bucket: str | None = None  # the Schedule partition of this connection's next refresh
    refresh_started_at: datetime | None = None  # a refresh token is being spent (cleared on store)
    # The refresh lease (shared.storage.lease) lives on this row; declared so replacing writes
    # keep it.
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None

    @property
    def resource(self) -> str:
        return f"{self.app}/{self.user_id}"

    def public(self) -> dict[str, Any]:
        """Metadata only: never a token, a cache or a lease."""

        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {
            "app": self.app,
            "user_id": self.user_id,
            "provider": self.provider,
            "status": self.status.value,
            "scopes": self.scopes,
            "provider_token_type": self.token_type,  # callers are always given Bearer
            "identity": self.identity or ({"login": self.subject} if self.subject else None),
            "created_at": iso(self.created_at),
            "connected_at": iso(self.connected_at),
            "updated_at": iso(self.updated_at),
            "access_token_expires_at": iso(self.access_expires_at),
            "has_refresh_token": self.refresh_token is not None or self.msal_cache is not None,
            "last_refreshed_at": iso(self.last_refreshed_at),
            "refresh_failures": self.refresh_failures,
            "last_error": self.last_error,
            "next_attempt_at": iso(self.next_attempt_at),
            "needs_reauth_at": iso(self.needs_reauth_at),
            "reauth_reason": (
                {"error": self.reauth_error, "provider_code": self.reauth_code}
                if self.status == Status.NEEDS_REAUTH and self.reauth_error
                else None
            ),
            "revoked_at": iso(self.revoked_at),
            "revoke_upstream": self.revoke_upstream,
        }


@dataclass
class UserConnection(Entity):
    """The ConnectionsByUser index row."""

    TABLE = "ConnectionsByUser"
    PARTITION = "user_id"
    ROW = "app"
    user_id: str
    app: str
    created_at: datetime | None = None


class ConnectionStore:
    """Reads and the index-first write of connections."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def find(self, app: str, user_id: str) -> Connection | None:
        return self._store.read(Connection, app, user_id)

    def get(self, app: str, user_id: str) -> Connection:
        connection = self.find(app, user_id)
        if connection is None:
            raise NotFound(f"no connection for '{app}/{user_id}'")
        return connection

    def of_app(self, app: str) -> list[Connection]:
        return list(self._store.entities_in(Connection, app))

    def of_user(self, user_id: str) -> list[Connection]:
        found = []
        for index in self._store.entities_in(UserConnection, user_id):
            connection = self.find(index.app, user_id)
            if connection is not None:  # a stale index row: nothing to return
                found.append(connection)
        return found

    def all(self) -> list[Connection]:
        return list(self._store.select(Connection, "PartitionKey ne @none", {"none": ""}))

    def save(self, connection: Connection) -> Connection:
        """Replace the row if it still has the connection's ETag."""
        return self._store.save(connection)

    def save_new_or_existing(self, connection: Connection) -> Connection:
        """Write a connection (conditionally, when it carries an ETag), index row first."""
        index = Row(connection.user_id, connection.app, {"created_at": connection.created_at})
        self._store.upsert(UserConnection.TABLE, index)
        return self._store.save(connection)
