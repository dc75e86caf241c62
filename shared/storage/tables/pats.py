"""``Pats`` (one row per managed PAT: PartitionKey the PAT id, RowKey ``pat``) and
``PatsByConnection`` (PartitionKey ``{app}/{user}``, RowKey the PAT id): the index that finds a
connection's PATs."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.foundation.secret import Secret
from shared.storage.entities import Entity


class PatStatus(enum.StrEnum):
    CREATING = "creating"
    ACTIVE = "active"
    REVOKING = "revoking"  # secrets destroyed here; Azure DevOps not yet told
    REVOKED = "revoked"
    REVOKE_FAILED = "revoke_failed"
    # Revoked or expired at Azure DevOps, outside Keysteward: secrets destroyed, never served.
    REVOKED_UPSTREAM = "revoked_upstream"


class RotationStep(enum.StrEnum):
    """The staged rotation's steps, in order (see ``shared.lifecycle.pats.rotation``)."""

    CREATE = "create"
    TEST = "test"
    PROMOTE = "promote"
    REVOKE = "revoke"


@dataclass
class ManagedPat(Entity):
    TABLE = "Pats"
    PARTITION = "id"
    ROW = "kind"
    id: str
    app: str
    user_id: str
    organization: str
    display_name: str
    scope: str
    lifetime_days: int
    all_orgs: bool
    rotate_before_days: int
    auto_rotate: bool
    status: PatStatus
    created_at: datetime
    updated_at: datetime
    created_by: str
    authorization_id: str | None = None
    secret: Secret | None = field(default=None, repr=False)
    valid_to: datetime | None = None
    pending_authorization_id: str | None = None
    pending_secret: Secret | None = field(default=None, repr=False)
    pending_valid_to: datetime | None = None
    previous_authorization_id: str | None = None
    previous_revoke_after: datetime | None = None
    rotation_id: str | None = None
    rotation_step: RotationStep | None = None
    rotation_started_at: datetime | None = None
    rotation_tests: int = 0
    intent_name: str | None = None  # the display name of a PAT about to be POSTed
    rotated_at: datetime | None = None
    rotations: int = 0
    event_due: bool = False
    last_error: str | None = None
    # Why the last rotation was refused by an organisation policy (its patTokenError), and when.
    rotation_refused: str | None = None
    rotation_refused_message: str | None = None
    rotation_refused_at: datetime | None = None
    warned_days: list[int] = field(default_factory=list)
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    kind: str = "pat"

    def public(self) -> dict[str, Any]:
        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {
            "id": self.id,
            "app": self.app,
            "user_id": self.user_id,
            "organization": self.organization,
            "display_name": self.display_name,
            "scope": self.scope,
            "lifetime_days": self.lifetime_days,
            "all_orgs": self.all_orgs,
            "rotate_before_days": self.rotate_before_days,
            "auto_rotate": self.auto_rotate,
            "status": self.status.value,
            "authorization_id": self.authorization_id,
            "valid_to": iso(self.valid_to),
            "rotation": {
                "id": self.rotation_id,
                "step": self.rotation_step,
                "started_at": iso(self.rotation_started_at),
                "pending_authorization_id": self.pending_authorization_id,
                "previous_authorization_id": self.previous_authorization_id,
                "previous_revoke_after": iso(self.previous_revoke_after),
            }
            if self.rotation_id
            else None,
            "rotation_refused": {
                "policy": self.rotation_refused,
                "message": self.rotation_refused_message,
                "at": iso(self.rotation_refused_at),
            }
            if self.rotation_refused
            else None,
            "rotated_at": iso(self.rotated_at),
            "rotations": self.rotations,
            "last_error": self.last_error,
            "created_at": iso(self.created_at),
            "created_by": self.created_by,
        }


@dataclass
class PatOfConnection(Entity):
    """The PatsByConnection index row."""

    TABLE = "PatsByConnection"
    PARTITION = "connection"
    ROW = "pat_id"
    connection: str
    pat_id: str


def index_partition(app: str, user_id: str) -> str:
    return f"{app}/{user_id}"
