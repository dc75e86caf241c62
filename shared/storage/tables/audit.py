"""``Audit``: the append-only trail (PartitionKey = UTC day, RowKey = time-sortable unique id)."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar

from shared.storage.entities import Entity

_APP = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?")  # an app id (shared/config/apps.py)


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

    @property
    def resource(self) -> tuple[str, str] | None:
        """The ``(app, user_id)`` the entry is about: its subject when that is ``app/user``, else
        the detail's ``app`` and ``user_id``; None for entries about no one resource (keys,
        whole revocations, settings), which only a ``*`` key may read."""
        app, sep, user = self.subject.partition("/")
        if sep and _APP.fullmatch(app) and user:
            return app, user
        app_, user_ = self.detail.get("app"), self.detail.get("user_id")
        if isinstance(app_, str) and isinstance(user_, str) and app_ and user_:
            return app_, user_
        return None
