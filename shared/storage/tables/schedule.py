"""The ``Schedule`` index: when each connection next needs a refresh, bucketed by minute.

PartitionKey = ``refresh-YYYYMMDDHHMM`` (UTC), RowKey = ``{app}|{user}``. Partition keys sort by
time, so the sweep's range query ``refresh- <= PartitionKey <= refresh-<now>`` reads only what is
due (and what is overdue), never the whole table. A connection records the bucket of its current
row; a row whose connection moved on (or is gone, revoked, or needs consent) is stale, and the
sweep drops it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from shared.storage.entities import Entity
from shared.storage.store import Store
from shared.storage.tablekeys import decode_key, encode_key

PREFIX = "refresh-"


def bucket(when: datetime) -> str:
    return f"{PREFIX}{when:%Y%m%d%H%M}"


def row_key(app: str, user_id: str) -> str:
    # Encoded parts joined by a character the encoding never produces, so the key splits back.
    return f"{encode_key(app)}|{encode_key(user_id)}"


@dataclass
class ScheduleEntry(Entity):
    TABLE = "Schedule"
    PARTITION = "bucket"
    ROW = "key"
    bucket: str
    key: str
    due_at: datetime
    reason: str

    @property
    def connection(self) -> tuple[str, str]:
        app, _, user = self.key.partition("|")
        return decode_key(app), decode_key(user)


class Schedule:
    def __init__(self, store: Store) -> None:
        self._store = store

    def put(self, app: str, user_id: str, due_at: datetime, reason: str) -> str:
        entry = ScheduleEntry(bucket(due_at), row_key(app, user_id), due_at, reason)
        self._store.save(entry)  # no ETag: an upsert
        return entry.bucket

    def drop(self, bucket_key: str, app: str, user_id: str) -> None:
        self._store.delete(ScheduleEntry.TABLE, bucket_key, row_key(app, user_id))

    def due(self, now: datetime, limit: int = 5000) -> list[ScheduleEntry]:
        entries = self._store.select(
            ScheduleEntry,
            "PartitionKey ge @low and PartitionKey le @high",
            {"low": encode_key(PREFIX), "high": encode_key(bucket(now))},
        )
        found = []
        for entry in entries:
            found.append(entry)
            if len(found) >= limit:
                break
        return found
