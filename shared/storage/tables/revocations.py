"""``Revocations`` (a request: PartitionKey ``<owner>/<request id>``, RowKey ``request``; and one
outcome row per credential in the same partition) and ``PendingRevocations`` (PartitionKey app,
RowKey user: the sealed tokens still to revoke upstream, deleted when done)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.foundation.secret import Secret
from shared.storage.entities import Entity


class RevocationStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    COMPLETED_WITH_FAILURES = "completed_with_failures"


class Upstream(enum.StrEnum):
    """What happened to a credential at its provider."""

    REVOKED = "revoked"
    NOT_SUPPORTED = "not_supported"
    REVOKE_FAILED = "revoke_failed"
    PENDING = "pending"  # another worker is revoking it upstream now


class Local(enum.StrEnum):
    """What a request did to the local copy of a credential."""

    DESTROYED = "destroyed"
    ALREADY_REVOKED = "already_revoked"


class PendingState(enum.StrEnum):
    PENDING = "pending"
    REVOKE_FAILED = "revoke_failed"


QUEUE_OWNER = "queue"


def storage_key(owner: str, request_id: str) -> str:
    """Where a request is stored: under its owner, so two principals' ids never meet. ``/`` is in
    no request id, so no such key is ever a bare id (the key of a row stored before owners)."""
    return f"{owner}/{request_id}"


def legacy_owner(requested_by: str) -> str:
    """Whose a row stored before owners is: ``requested_by`` was the key's actor over HTTP and the
    producer's claim on the queue, so only ``key:`` names a key."""
    return requested_by if requested_by.startswith("key:") else QUEUE_OWNER


@dataclass
class Revocation(Entity):
    """A request. ``owner`` is ``key:<id>`` (over HTTP) or ``queue`` (a producer's message); the id
    is the owner's, and ``requested_by`` on the queue is the producer's unverified claim."""

    TABLE = "Revocations"
    PARTITION = "key"
    ROW = "kind"
    key: str
    status: RevocationStatus
    reason: str
    requested_by: str
    created_at: datetime
    updated_at: datetime
    id: str = ""  # empty on a row stored before owners: its key is its id
    owner: str = ""
    app: str | None = None
    user_id: str | None = None
    completed_at: datetime | None = None
    total: int = 0
    kind: str = "request"

    def __post_init__(self) -> None:
        if not self.id:
            self.id, self.owner = self.key, self.owner or legacy_owner(self.requested_by)

    def public(self, outcomes: list[Outcome], status_url: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status.value,
            "status_url": status_url,
            "app": self.app,
            "user_id": self.user_id,
            "reason": self.reason,
            "owner": self.owner,
            "requested_by": self.requested_by,
            "created_at": self.created_at.isoformat(),
            "completed_at": self.completed_at.isoformat() if self.completed_at else None,
            "total": self.total,
            "outcomes": [o.public() for o in outcomes],
        }


@dataclass
class Outcome(Entity):
    """What one request did to one credential: a row in the request's partition."""

    TABLE = "Revocations"
    PARTITION = "request_id"
    ROW = "kind"
    request_id: str
    kind: str  # "credential|{app}|{user}"
    credential: str
    app: str
    user_id: str
    local: Local | None
    upstream: Upstream
    at: datetime
    error: str | None = None
    type: str = "connection"  # or managed_pat

    def public(self) -> dict[str, Any]:
        return {
            "credential": self.credential,
            "type": self.type,
            "app": self.app,
            "user_id": self.user_id,
            "local": self.local.value if self.local else "",
            "upstream": self.upstream.value,
            "error": self.error,
        }


@dataclass
class PendingRevocation(Entity):
    """The tokens still to revoke upstream for one credential; deleted when done."""

    TABLE = "PendingRevocations"
    PARTITION = "app"
    ROW = "user_id"
    app: str
    user_id: str
    state: PendingState
    created_at: datetime
    attempts: int = 0
    last_error: str | None = None
    last_attempt_at: datetime | None = None
    refresh_token: Secret | None = field(default=None, repr=False)
    access_token: Secret | None = field(default=None, repr=False)
    # Entra grants: what a later retry needs to get a bearer for revoking managed PATs.
    msal_cache: Secret | None = field(default=None, repr=False)
    msal_account: str | None = None
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None

    def public(self) -> dict[str, Any]:
        return {
            "credential": f"{self.app}/{self.user_id}",
            "state": self.state.value,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "last_attempt_at": self.last_attempt_at.isoformat() if self.last_attempt_at else None,
            "since": self.created_at.isoformat(),
        }
