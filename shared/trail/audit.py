"""The append-only audit trail, and the one redaction used by everything that writes outside.

Entries live in the ``Audit`` table: PartitionKey = UTC day ``YYYYMMDD``, RowKey =
``<16-digit microseconds since the epoch>-<8 random hex>``, so keys sort by time across days and
two writers in the same microsecond still get distinct rows (a collision, one in 2**32, retries
with a new suffix). Entries are only ever inserted: never updated, never deleted.

One exception, for what anyone can cause at will (a junk OAuth callback): ``count`` keeps one
row per actor, action, subject, detail and minute, whose RowKey is the minute's followed by
``-count-`` and a digest of what it counts (never a random key's form, so the two cannot meet).
Only its ``count`` and ``last_at`` change, each call adding one; it is never deleted.

Nothing secret may enter the trail: every detail goes through ``shared.foundation.redaction``.

``actor``, ``action``, ``subject`` and ``outcome`` are identifiers, not free text: one that looks
secret is a programming error and is refused with ``ValueError`` before anything is written.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta

from shared.foundation.clock import Clock
from shared.foundation.errors import AlreadyExists, ConcurrencyConflict
from shared.foundation.redaction import check_identifier, redact
from shared.storage.retry import on_conflict
from shared.storage.store import Store
from shared.storage.tablekeys import encode_key
from shared.storage.tables.audit import AuditEntry, AuditOutcome

REDACTED = "[redacted]"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_DEPTH = 16
_MAX_DETAIL_CHARS = 30_000  # a Table string property holds 32K UTF-16 characters
_MAX_FIELD_CHARS = 1024
_INSERT_TRIES = 5


class AuditLog:
    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    def record(
        self,
        actor: str,
        action: str,
        subject: str,
        outcome: AuditOutcome = AuditOutcome.SUCCESS,
        detail: Mapping[str, object] | None = None,
    ) -> AuditEntry:
        """Append one entry. Storage failures propagate: an action that cannot be audited fails."""
        _check(actor, action, subject, outcome)
        safe = _bounded(redact(detail or {}))
        at = self._clock.now().astimezone(UTC)
        for _ in range(_INSERT_TRIES):
            entry = AuditEntry(
                day=day_key(at),
                id=row_key(at),
                at=at,
                actor=actor,
                action=action,
                subject=subject,
                outcome=outcome,
                detail=safe,
            )
            try:
                return self._store.create(entry)
            except AlreadyExists:
                continue  # same microsecond and same random suffix: draw again
        raise AlreadyExists("Audit: could not find a free row key")  # pragma: no cover

    def count(
        self,
        actor: str,
        action: str,
        subject: str,
        outcome: AuditOutcome,
        detail: Mapping[str, str],
    ) -> AuditEntry:
        """Add one to this minute's row for ``(actor, action, subject, outcome, detail)``: for
        refusals anyone can cause at will, where a row each would let anonymous traffic grow the
        trail without bound. ``detail`` names the cause (a few short identifiers)."""
        _check(actor, action, subject, outcome)
        safe = _bounded(redact(detail))
        at = self._clock.now().astimezone(UTC)
        minute = at.replace(second=0, microsecond=0)
        what = json.dumps([actor, action, subject, outcome, safe], sort_keys=True)
        key = f"{_micros_key(minute)}-count-{hashlib.sha256(what.encode()).hexdigest()[:16]}"

        def attempt() -> AuditEntry:
            entry = self._store.read(AuditEntry, day_key(minute), key)
            if entry is None:
                entry = AuditEntry(day_key(minute), key, minute, actor, action, subject, outcome)
                entry.detail = {**safe, "count": 1, "last_at": at.isoformat()}
                try:
                    return self._store.create(entry)
                except AlreadyExists:
                    raise ConcurrencyConflict("Audit: the counted row was just created") from None
            counted = entry.detail.get("count")
            entry.detail["count"] = (counted if isinstance(counted, int) else 0) + 1
            entry.detail["last_at"] = at.isoformat()
            return self._store.save(entry)  # on this row's ETag: no count is lost to a race

        return on_conflict(attempt, what="the counted audit row")

    def read(
        self,
        since: datetime,
        until: datetime | None = None,
        subject: str | None = None,
        limit: int = 1000,
        visible: Callable[[AuditEntry], bool] | None = None,
    ) -> list[AuditEntry]:
        """Entries at or after ``since`` and before ``until`` (open-ended when None), oldest first.

        Only the day partitions from ``since`` on are read (one range query); the time bounds are
        row-key bounds, so no partition is scanned beyond them. ``visible`` filters what the
        reader may see before ``limit`` counts.
        """
        if since.tzinfo is None or (until is not None and until.tzinfo is None):
            raise ValueError("audit reads take timezone-aware datetimes")
        if limit < 1:
            raise ValueError("limit must be at least 1")
        since = since.astimezone(UTC)
        clauses = ["PartitionKey ge @day_low", "RowKey ge @row_low"]
        params: dict[str, object] = {
            "day_low": encode_key(day_key(since)),
            "row_low": encode_key(_micros_key(since)),
        }
        if until is not None:
            until = until.astimezone(UTC)
            if until <= since:
                return []
            clauses += ["PartitionKey le @day_high", "RowKey lt @row_high"]
            params["day_high"] = encode_key(day_key(until - timedelta(microseconds=1)))
            params["row_high"] = encode_key(_micros_key(until))
        if subject is not None:
            clauses.append("subject eq @subject")
            params["subject"] = subject
        entries: list[AuditEntry] = []
        query = " and ".join(clauses)
        for entry in self._store.select(AuditEntry, query, params, page_size=min(limit, 1000)):
            if visible is not None and not visible(entry):
                continue  # counted against nothing: ``limit`` bounds what the caller may see
            entries.append(entry)
            if len(entries) >= limit:
                break
        return entries


# -- keys -------------------------------------------------------------------------------------


def day_key(at: datetime | date) -> str:
    if isinstance(at, datetime):
        at = at.astimezone(UTC).date()
    return at.strftime("%Y%m%d")


def row_key(at: datetime) -> str:
    return f"{_micros_key(at)}-{secrets.token_hex(4)}"


def _micros_key(at: datetime) -> str:
    micros = (at.astimezone(UTC) - _EPOCH) // timedelta(microseconds=1)
    if micros < 0:
        raise ValueError("audit times start at the epoch")
    return f"{micros:016d}"


def _check(actor: str, action: str, subject: str, outcome: AuditOutcome) -> None:
    for name, value in (
        ("actor", actor),
        ("action", action),
        ("subject", subject),
        ("outcome", outcome),
    ):
        check_identifier(f"audit {name}", value)


def _bounded(detail: dict[str, object]) -> dict[str, object]:
    """Keep the detail within one Table property; an oversized one keeps only its field names."""
    if len(json.dumps(detail, separators=(",", ":"), sort_keys=True)) <= _MAX_DETAIL_CHARS:
        return detail
    return {"truncated": True, "fields": [name[:64] for name in sorted(detail)[:100]]}
