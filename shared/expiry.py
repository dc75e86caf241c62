"""The nightly expiry sweep: warn before credentials expire, once per threshold.

Warnings go out ``WARN_DAYS`` (10 and 1) days before expiry. Each threshold is recorded on the
row when its warning is sent, so a credential is warned once per threshold however often the
sweep runs; a credential first seen past several thresholds gets one warning, for the nearest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from shared.apikeys import ApiKey, ApiKeys
from shared.audit import AuditLog
from shared.clock import Clock
from shared.errors import ConcurrencyConflict
from shared.events import APIKEY_EXPIRING, EventPublisher
from shared.store import Store

WARN_DAYS = (10, 1)
ACTOR = "system:expiry-sweep"


def thresholds_crossed(expires_at: datetime, now: datetime, warned: list[int]) -> list[int]:
    """The warning thresholds (days) that ``now`` has reached and that were not warned yet."""
    if expires_at <= now:
        return []
    left = expires_at - now
    return [days for days in WARN_DAYS if left <= timedelta(days=days) and days not in warned]


@dataclass
class SweepReport:
    checked: int = 0
    warned: list[str] = field(default_factory=list)


class ExpirySweep:
    def __init__(
        self,
        store: Store,
        keys: ApiKeys,
        audit: AuditLog,
        events: EventPublisher,
        clock: Clock,
    ) -> None:
        self._store = store
        self._keys = keys
        self._audit = audit
        self._events = events
        self._clock = clock

    def run(self) -> SweepReport:
        report = SweepReport()
        now = self._clock.now()
        for key in self._keys.list():
            report.checked += 1
            if self._warn_key(key, now):
                report.warned.append(f"key:{key.id}")
        return report

    def _warn_key(self, key: ApiKey, now: datetime) -> bool:
        crossed = thresholds_crossed(key.expires_at, now, key.warned_days)
        if not crossed:
            return False
        key.warned_days = sorted({*key.warned_days, *crossed}, reverse=True)
        try:
            # Record first: another sweep that raced us loses here and sends nothing.
            self._store.save(key)
        except ConcurrencyConflict:
            return False
        days_left = (key.expires_at - now).total_seconds() / 86400
        data = {
            "kind": "api_key",
            "id": key.id,
            "name": key.name,
            "owner": key.owner,
            "expires_at": key.expires_at.isoformat(),
            "threshold_days": min(crossed),
            "days_left": round(days_left, 2),
        }
        self._events.publish(APIKEY_EXPIRING, f"key:{key.id}", data)
        self._audit.record(ACTOR, "apikey.expiring", f"key:{key.id}", detail=data)
        return True
