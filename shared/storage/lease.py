"""A lease on a row, built on ETags: one holder at a time across threads, processes and instances.

The lease lives in two properties of the row it guards (``lease_owner``, ``lease_expires_at``),
written with an ETag-conditional merge, so exactly one of several racers wins. A lease that is not
renewed expires and can be taken over; a holder that crashed blocks others for at most the TTL.
A holder that writes the row itself should include ``released()`` in that conditional write, so
storing its result and letting go are one atomic step.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from shared.foundation.clock import Clock
from shared.foundation.errors import AlreadyExists, ConcurrencyConflict, KeystewardError, NotFound
from shared.storage.store import Row, Store

OWNER = "lease_owner"
EXPIRES = "lease_expires_at"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class LeaseLost(KeystewardError):
    error = "lease_lost"
    status = 409


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
        create: bool = False,
    ) -> Lease | None:
        """Take the lease if it is free or expired; None if someone else holds it or won the race.

        With ``create`` a missing row is created holding the lease; otherwise it is ``NotFound``.
        """
        now = self._clock.now()
        expires = now + ttl
        fields: dict[str, object] = {OWNER: owner, EXPIRES: expires}
        row = self._store.get(table, partition_key, row_key)
        if row is None:
            if not create:
                raise NotFound(f"{table}: no row to lease")
            try:
                written = self._store.insert(table, Row(partition_key, row_key, fields))
            except AlreadyExists:
                return None
        else:
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

    def wait(
        self,
        table: str,
        partition_key: str,
        row_key: str,
        *,
        owner: str,
        ttl: timedelta,
        timeout: float,
        create: bool = False,
    ) -> Lease | None:
        """Try to acquire until ``timeout`` seconds pass, backing off with jitter."""
        deadline = time.monotonic() + timeout
        delay = 0.02
        while True:
            lease = self.acquire(table, partition_key, row_key, owner=owner, ttl=ttl, create=create)
            if lease is not None or time.monotonic() >= deadline:
                return lease
            time.sleep(min(delay * random.uniform(0.5, 1.5), max(0.0, deadline - time.monotonic())))  # noqa: S311
            delay = min(delay * 2, 0.5)

    def renew(self, lease: Lease, ttl: timedelta) -> Lease:
        expires = self._clock.now() + ttl
        try:
            written = self._store.update(
                lease.table,
                Row(lease.partition_key, lease.row_key, {OWNER: lease.owner, EXPIRES: expires}),
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
