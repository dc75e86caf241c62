"""``ApiKeys``: scoped API keys (PartitionKey ``apikey``, RowKey the key id); only a hash of the
secret is stored."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.storage.entities import Entity

KEYS_PARTITION = "apikey"


@dataclass
class ApiKey(Entity):
    TABLE = "ApiKeys"
    PARTITION = "partition"
    ROW = "id"
    id: str
    name: str
    owner: str
    scopes: list[str]
    resources: list[str]
    created_at: datetime
    expires_at: datetime
    secret_hash: str = field(repr=False)
    created_by: str
    regenerated_at: datetime | None = None
    last_used_at: datetime | None = None
    warned_days: list[int] = field(default_factory=list)
    partition: str = KEYS_PARTITION

    def public(self) -> dict[str, Any]:
        """What callers may see of a key: everything but its hash."""
        return {
            "id": self.id,
            "name": self.name,
            "owner": self.owner,
            "scopes": self.scopes,
            "resources": self.resources,
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "created_by": self.created_by,
            "regenerated_at": self.regenerated_at.isoformat() if self.regenerated_at else None,
            "last_used_at": self.last_used_at.isoformat() if self.last_used_at else None,
        }
