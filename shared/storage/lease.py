"""A lease on a row, built on ETags: one holder at a time across threads, processes and instances.

The lease lives in two properties of the row it guards (``lease_owner``, ``lease_expires_at``),
written with an ETag-conditional merge, so exactly one of several racers wins. A lease that is not
renewed expires and can be taken over; a holder that crashed blocks others for at most the TTL.
A holder that writes the row itself lets go in that same conditional write (``released()`` merged
into a raw row, ``clear()`` on a typed entity), so storing its result and letting go are one
atomic step. Nothing else sets or clears the lease fields: this module is their only writer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from shared.foundation.clock import Clock
from shared.foundation.errors import ConcurrencyConflict, LeaseLost, NotFound
from shared.storage.retry import on_conflict
from shared.storage.store import Row, Store

OWNER = "lease_owner"
EXPIRES = "lease_expires_at"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Lease:
    table: str
    partition_key: str
    row_key: str
    owner: str
    expires_at: datetime
    etag: str


def holder(row: Row, now: datetime) -> str | None:
    """Who holds an unexpired lease on ``row``, if anyone."""
    owner = row.data.get(OWNER) or None
    expires = row.data.get(EXPIRES)
    if owner and isinstance(expires, datetime) and expires > now:
        return str(owner)
    return None


def released() -> dict[str, object]:
    """Properties that end a lease, to merge into the holder's own final write."""
    return {OWNER: "", EXPIRES: _EPOCH}


class Leased(Protocol):
    """A typed row that carries a lease (its two lease fields)."""

    lease_owner: str | None
    lease_expires_at: datetime | None


def clear(entity: Leased) -> None:
    """End the lease in the entity the holder is about to write: its final write lets go."""
    entity.lease_owner = None
    entity.lease_expires_at = None


class Leases:
    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    def acquire(
        self,
        table: str,
        partition_key: str,
        row_key: str,
        *,
        owner: str,
        ttl: timedelta,
    ) -> Lease | None:
        """Take the lease if it is free or expired; None if someone else holds it or won the race.
        A missing row is ``NotFound``: a lease guards a row that exists."""
        now = self._clock.now()
        expires = now + ttl
        fields: dict[str, object] = {OWNER: owner, EXPIRES: expires}
        row = self._store.get(table, partition_key, row_key)
        if row is None:
            raise NotFound(f"{table}: no row to lease")
        current = holder(row, now)
        if current is not None and current != owner:
            return None
        assert row.etag is not None
        try:
            written = self._store.update(
                table, Row(partition_key, row_key, fields), etag=row.etag, merge=True
            )
        except ConcurrencyConflict:
            return None
        assert written.etag is not None
        return Lease(table, partition_key, row_key, owner, expires, written.etag)

    def renew(self, lease: Lease, ttl: timedelta, also: dict[str, object] | None = None) -> Lease:
        """Extend the lease, merging ``also`` into the same conditional write; ``LeaseLost`` if
        the row changed since the lease was taken or last renewed."""
        expires = self._clock.now() + ttl
        fields = {**(also or {}), OWNER: lease.owner, EXPIRES: expires}
        try:
            written = self._store.update(
                lease.table,
                Row(lease.partition_key, lease.row_key, fields),
                etag=lease.etag,
                merge=True,
            )
        except ConcurrencyConflict:
            raise LeaseLost(f"{lease.table}: the lease was taken over or the row changed") from None
        assert written.etag is not None
        return Lease(
            lease.table, lease.partition_key, lease.row_key, lease.owner, expires, written.etag
        )

    def release(self, lease: Lease) -> bool:
        """Let go; False if the lease had already been lost (someone else's now)."""
        try:
            self._store.update(
                lease.table,
                Row(lease.partition_key, lease.row_key, released()),
                etag=lease.etag,
                merge=True,
            )
        except ConcurrencyConflict:
            return False
        return True

    def release_held(self, table: str, partition_key: str, row_key: str, owner: str) -> bool:
        """Let go of a lease whose row the holder has written since taking it (so the lease's
        ETag is stale): only while ``owner`` still holds it. False if it is someone else's now."""

        def attempt() -> bool:
            row = self._store.get(table, partition_key, row_key)
            if row is None or row.data.get(OWNER) != owner:
                return False
            assert row.etag is not None
            self._store.update(
                table, Row(partition_key, row_key, released()), etag=row.etag, merge=True
            )
            return True

        return on_conflict(attempt, what=f"the lease on {table}")
