"""``UserIds``: each user id in the form first given, under its folded form, so every later
spelling of the same id (another case) resolves to the one the other tables are keyed by.

PartitionKey is ``inputs.fold(user_id)``, RowKey ``id``. A registration never changes its
``user_id``; ``shadowed`` lists stored ids that differed only by case when the backfill found
them (two users before ids folded), kept so revocation by user still reaches them. The row with
PartitionKey ``""`` (never a user id) marks the backfill done.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from shared.storage.entities import Entity

BACKFILLED = ("", "backfilled")


@dataclass
class UserId(Entity):
    TABLE = "UserIds"
    PARTITION = "folded"
    ROW = "kind"
    folded: str
    user_id: str
    created_at: datetime
    shadowed: list[str] = field(default_factory=list)
    kind: str = "id"
