"""``Audit``: the append-only trail (PartitionKey = UTC day, RowKey = time-sortable unique id)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar

from shared.storage.entities import Entity


class AuditOutcome(enum.StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    PARTIAL = "partial"  # some of what was asked succeeded (a revocation with failures)


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
    outcome: AuditOutcome
    detail: dict[str, object] = field(default_factory=dict)
