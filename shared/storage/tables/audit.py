"""``Audit``: the append-only trail (PartitionKey = UTC day, RowKey = time-sortable unique id)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar

from shared.storage.entities import Entity


@dataclass
class AuditEntry(Entity):
    TABLE: ClassVar[str] = "Audit"
    PARTITION: ClassVar[str] = "day"
    ROW: ClassVar[str] = "id"

    day: str
    id: str
    at: datetime
    actor: str
    action: str
    subject: str
    outcome: str
    detail: dict[str, object] = field(default_factory=dict)
