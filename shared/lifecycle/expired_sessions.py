"""The sweep of connect links and OAuth states that expired unused.

A link lives ten minutes and a state as long; one nobody used would stay for good (a state keeps a
sealed PKCE verifier or MSAL flow). Each is indexed in ``ConnectExpiry`` by the minute it expires,
before it is written, so a crash between the two leaves an index row and never an unindexed link.
The sweep reads only the buckets of minutes that are over (one key range, never a scan of the
links or states), deletes what each row points at if it is still there, then the row. A link or
state spent normally leaves its index row behind, for the sweep to drop once its minute is over:
finding nothing to delete is the common case, and costs a point read that returns nothing.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

from shared.foundation.clock import Clock
from shared.foundation.errors import ConcurrencyConflict
from shared.storage.store import Store
from shared.storage.tablekeys import encode_key
from shared.storage.tables.connect_links import ConnectLink, OAuthState, SessionExpiry

PREFIX = "expire-"
_KINDS: dict[str, type[ConnectLink] | type[OAuthState]] = {
    "link": ConnectLink,
    "state": OAuthState,
}


def bucket(when: datetime) -> str:
    return f"{PREFIX}{when.astimezone(UTC):%Y%m%d%H%M}"


class ExpiredSessions:
    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    def index(self, row: ConnectLink | OAuthState) -> None:
        """Index ``row`` by the minute it expires; call before writing ``row`` itself."""
        self._store.save(SessionExpiry(bucket(row.expires_at), f"{row.kind}|{row.digest}"))

    def run(self, limit: int = 5000) -> dict[str, int]:
        """Delete the links and states whose minute of expiry is over, and their index rows; at
        most ``limit`` index rows a run (the next run goes on where this one stopped)."""
        now = self._clock.now()
        # Every row in a bucket before this minute's expired before this minute began.
        due = self._store.select(
            SessionExpiry,
            "PartitionKey ge @low and PartitionKey lt @high",
            {"low": encode_key(PREFIX), "high": encode_key(bucket(now))},
        )
        swept = {"links": 0, "states": 0, "index_rows": 0}
        for entry in due:
            kind, found = entry.target
            cls = _KINDS.get(kind)
            target = self._store.read(cls, found, kind) if cls else None
            if target is not None:
                if target.expires_at > now:
                    continue  # indexed in a bucket it does not belong to: keep what finds it
                # A conflict means the flow spent it meanwhile: gone either way.
                with contextlib.suppress(ConcurrencyConflict):
                    if self._store.remove(target):
                        swept[f"{kind}s"] += 1
            with contextlib.suppress(ConcurrencyConflict):
                self._store.remove(entry)
            swept["index_rows"] += 1
            if swept["index_rows"] >= limit:
                break
        return swept
