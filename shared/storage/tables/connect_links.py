"""``ConnectLinks`` and ``OAuthStates``: single-use connect links and OAuth states, keyed by the
SHA-256 of the token (never the token itself), each living ten minutes."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from shared.foundation.secret import Secret
from shared.storage.entities import Entity


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass
class ConnectLink(Entity):
    TABLE = "ConnectLinks"
    PARTITION = "digest"
    ROW = "kind"
    digest: str
    app: str
    user_id: str
    created_by: str
    created_at: datetime
    expires_at: datetime
    return_to: str | None = None
    allow_identity_change: bool = False
    kind: str = "link"


@dataclass
class OAuthState(Entity):
    TABLE = "OAuthStates"
    PARTITION = "digest"
    ROW = "kind"
    digest: str
    app: str
    user_id: str
    redirect_uri: str
    pending: Secret
    created_by: str
    created_at: datetime
    expires_at: datetime
    return_to: str | None = None
    # The digest of the value of the cookie set in the browser that opened the link: only that
    # browser can finish (RFC 9700 4.7). None on a row written before the binding existed.
    browser: str | None = None
    allow_identity_change: bool = False
    kind: str = "state"


@dataclass
class SessionExpiry(Entity):
    """``ConnectExpiry``: the index of links and states by the minute they expire.

    PartitionKey = ``expire-YYYYMMDDHHMM`` (UTC), RowKey = ``{kind}|{digest}``. Written before the
    link or state it points at, so every row it might leave behind is found by the sweep, which
    reads only the buckets of minutes that are over (a key range, never a scan)."""

    TABLE = "ConnectExpiry"
    PARTITION = "bucket"
    ROW = "key"
    bucket: str
    key: str

    @property
    def target(self) -> tuple[str, str]:
        """The ``(kind, digest)`` of the link or state this row points at."""
        kind, _, found = self.key.partition("|")
        return kind, found
