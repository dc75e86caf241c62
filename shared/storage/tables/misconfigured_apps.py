"""``MisconfiguredApps``: apps the provider refused outright (PartitionKey ``misconfigured``, RowKey
the app id), one row per app, inserted once: whoever inserts it sends the event. Codes only."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.storage.entities import Entity

MISCONFIGURED_PARTITION = "misconfigured"


@dataclass
class MisconfiguredApp(Entity):
    TABLE = "MisconfiguredApps"
    PARTITION = "partition"
    ROW = "app"
    app: str
    error: str  # the OAuth error code (invalid_client, unauthorized_client)
    since: datetime
    provider_code: str | None = None  # AADSTS7000215, TF400813
    partition: str = MISCONFIGURED_PARTITION

    def public(self) -> dict[str, Any]:
        return {"app": self.app, "error": self.error, "provider_code": self.provider_code,
                "since": self.since.isoformat()}  # fmt: skip
