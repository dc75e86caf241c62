"""``ExpiryWarnings``: which expiry warning went out for a credential Keysteward does not own a row
for (an app's client secret, a PAT a user made themselves). PartitionKey the credential
(``app:{id}:{date}``, ``pat:{authorization id}``), RowKey the threshold in days; inserted once, so
a warning goes out once."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from shared.storage.entities import Entity


@dataclass
class ExpiryWarning(Entity):
    TABLE = "ExpiryWarnings"
    PARTITION = "credential"
    ROW = "days"
    credential: str
    days: str
    at: datetime
