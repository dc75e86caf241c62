"""The refresh sweep: read what the Schedule index says is due, check each against its
connection, and hand the live ones to the ``refresh-requests`` queue (one message each), so
refreshes fan out across instances. Stale index rows are dropped. The sweep's cost grows with
what is due, not with how many connections exist."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from shared.foundation.clock import Clock
from shared.storage.tables.connections import ConnectionStore, Status
from shared.storage.tables.schedule import Schedule

REFRESH_QUEUE = "refresh-requests"


@dataclass
class SweepResult:
    messages: list[str] = field(default_factory=list)
    read: int = 0
    dropped: int = 0


class RefreshSweep:
    def __init__(self, schedule: Schedule, connections: ConnectionStore, clock: Clock) -> None:
        self._schedule = schedule
        self._connections = connections
        self._clock = clock

    def run(self, limit: int = 5000) -> SweepResult:
        result = SweepResult()
        for entry in self._schedule.due(self._clock.now(), limit=limit):
            result.read += 1
            app, user_id = entry.connection
            connection = self._connections.find(app, user_id)
            live = (
                connection is not None
                and connection.status == Status.ACTIVE
                and connection.schedule_bucket == entry.bucket
            )
            if not live:
                self._schedule.drop(entry.bucket, app, user_id)
                result.dropped += 1
                continue
            result.messages.append(json.dumps({"app": app, "user_id": user_id}))
        return result
