"""The nightly expiry sweep: warn before credentials expire, once per threshold, and start the
rotations whose policy says so.

Warnings go out ``WARN_DAYS`` (10 and 1) days before expiry, for API keys
(``keysteward.apikey.expiring``), and with ``keysteward.credential.expiring`` for managed PATs
that do not rotate themselves, unmanaged PATs found in connected users' inventories, and apps'
client secrets with a declared ``client_secret_expires_at``. Managed PATs with ``auto_rotate``
within ``rotate_before_days`` of expiry start a rotation instead. Each threshold is recorded when
its warning is sent (on the row, or as a row in ``ExpiryWarnings``), so a credential is warned
once per threshold however often the sweep runs; one first seen past several thresholds gets one
warning, for the nearest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from shared.access.api_keys import ApiKeys
from shared.config.apps import Apps
from shared.foundation.clock import Clock
from shared.foundation.errors import AlreadyExists, ConcurrencyConflict, KeystewardError
from shared.lifecycle.pats.records import ManagedPats
from shared.lifecycle.pats.rotation import Rotations
from shared.storage.retry import on_conflict
from shared.storage.store import Store
from shared.storage.tables.api_keys import ApiKey
from shared.storage.tables.connections import ConnectionStore, Status
from shared.storage.tables.expiry_warnings import ExpiryWarning
from shared.storage.tables.pats import ManagedPat, PatStatus
from shared.trail.audit import AuditLog
from shared.trail.events import APIKEY_EXPIRING, CREDENTIAL_EXPIRING, EventPublisher

WARN_DAYS = (10, 1)
ACTOR = "system:expiry-sweep"

Warned = ApiKey | ManagedPat


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
    rotations: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class ExpirySweep:
    def __init__(
        self,
        store: Store,
        keys: ApiKeys,
        audit: AuditLog,
        events: EventPublisher,
        clock: Clock,
        *,
        pats: ManagedPats | None = None,
        rotations: Rotations | None = None,
        apps: Apps | None = None,
        connections: ConnectionStore | None = None,
    ) -> None:
        self._store = store
        self._keys = keys
        self._audit = audit
        self._events = events
        self._clock = clock
        self._pats = pats
        self._rotations = rotations
        self._apps = apps
        self._connections = connections

    def run(self) -> SweepReport:
        report = SweepReport()
        now = self._clock.now()
        for key in self._keys.list():
            report.checked += 1
            if self._warn_key(key, now):
                report.warned.append(f"key:{key.id}")
        if self._pats is not None and self._rotations is not None:
            self._managed_pats(now, report)
        if self._apps is not None:
            self._app_secrets(now, report)
        if self._pats is not None and self._apps is not None and self._connections is not None:
            self._unmanaged_pats(now, report)
        return report

    def _managed_pats(self, now: datetime, report: SweepReport) -> None:
        assert self._pats is not None
        assert self._rotations is not None
        for pat in self._pats.all():
            if pat.status != PatStatus.ACTIVE or pat.valid_to is None:
                continue
            report.checked += 1
            due = pat.valid_to - timedelta(days=pat.rotate_before_days)
            if pat.auto_rotate:
                if now >= due and not pat.rotation_id:
                    try:
                        self._rotations.start(pat.id, actor=ACTOR, reason="expiring")
                        report.rotations.append(f"pat:{pat.id}")
                    except KeystewardError as exc:
                        report.errors.append(f"pat:{pat.id}: {exc.error}")
                continue
            if self._warn_pat(pat, now):
                report.warned.append(f"pat:{pat.id}")

    def _warn_pat(self, pat: ManagedPat, now: datetime) -> bool:
        assert pat.valid_to is not None
        crossed = self._record_crossed(pat, pat.valid_to, now)
        if not crossed:
            return False
        self._expiring(f"pat:{pat.id}", pat.valid_to, now, crossed, {
            "type": "managed_pat", "id": pat.id, "app": pat.app, "user_id": pat.user_id,
            "organization": pat.organization, "authorization_id": pat.authorization_id,
            "managed": True,
        })  # fmt: skip
        return True

    def _app_secrets(self, now: datetime, report: SweepReport) -> None:
        assert self._apps is not None
        for app in self._apps.all():
            expires = app.client_secret_expires_at
            if expires is None:
                continue
            report.checked += 1
            key = f"app:{app.id}:{expires.date().isoformat()}"
            crossed = [d for d in thresholds_crossed(expires, now, []) if self._first(key, d)]
            if crossed:
                self._expiring(f"app:{app.id}", expires, now, crossed, {
                    "type": "app_client_secret", "app": app.id, "provider": app.provider.name,
                    "note": "regenerating a legacy Azure DevOps app secret kills every token "
                    "issued with it" if app.provider.name == "azure-devops-oauth" else None,
                })  # fmt: skip
                report.warned.append(f"app:{app.id}")

    def _unmanaged_pats(self, now: datetime, report: SweepReport) -> None:
        """PATs users made themselves, found in the inventory of each connected Entra user."""
        assert self._pats is not None
        assert self._apps is not None
        assert self._connections is not None
        for app in self._apps.all():
            if app.provider.driver != "msal" or not app.organization:
                continue
            for connection in self._connections.of_app(app.id):
                if connection.status != Status.ACTIVE:
                    continue
                try:
                    inventory = self._pats.inventory(app.id, connection.user_id, None)
                except KeystewardError as exc:
                    report.errors.append(f"{connection.resource}: {exc.error}")
                    continue
                for item in inventory:
                    if item["managed"]:
                        continue
                    report.checked += 1
                    valid_to = datetime.fromisoformat(item["valid_to"])
                    key = f"pat:{item['authorization_id']}"
                    crossed = [
                        d for d in thresholds_crossed(valid_to, now, []) if self._first(key, d)
                    ]
                    if crossed:
                        self._expiring(key, valid_to, now, crossed, {
                            "type": "pat", "managed": False, "app": app.id,
                            "user_id": connection.user_id, "organization": app.organization,
                            "authorization_id": item["authorization_id"],
                            "display_name": item["display_name"],
                        })  # fmt: skip
                        report.warned.append(key)

    def _first(self, key: str, days: int) -> bool:
        """Record that the ``days`` warning for ``key`` went out; False if it already had."""
        try:
            self._store.create(ExpiryWarning(key, str(days), self._clock.now()))
        except AlreadyExists:
            return False
        return True

    def _expiring(
        self,
        subject: str,
        expires_at: datetime,
        now: datetime,
        crossed: list[int],
        data: dict[str, object],
    ) -> None:
        payload = {
            **{k: v for k, v in data.items() if v is not None},
            "expires_at": expires_at.isoformat(),
            "threshold_days": min(crossed),
            "days_left": round((expires_at - now).total_seconds() / 86400, 2),
        }
        self._events.publish(CREDENTIAL_EXPIRING, subject, payload)
        self._audit.record(ACTOR, "credential.expiring", subject, detail=payload)

    def _record_crossed(self, entity: Warned, expires_at: datetime, now: datetime) -> list[int]:
        """Record the thresholds newly crossed, before any warning goes out: a sweep that raced
        us finds them recorded on its re-read and sends nothing; any other write in between
        (a rotation, a key's use) is read again, never overwritten. [] when nothing is new."""
        rows: list[Warned] = [entity]

        def attempt() -> list[int]:
            row = rows[-1]
            crossed = thresholds_crossed(expires_at, now, row.warned_days)
            if crossed:
                row.warned_days = sorted({*row.warned_days, *crossed}, reverse=True)
                try:
                    self._store.save(row)
                except ConcurrencyConflict:
                    found = self._store.read(type(row), *row.keys())
                    if found is None:
                        return []
                    rows.append(found)
                    raise
            return crossed

        return on_conflict(attempt, what=f"{entity.TABLE} row being warned about")

    def _warn_key(self, key: ApiKey, now: datetime) -> bool:
        crossed = self._record_crossed(key, key.expires_at, now)
        if not crossed:
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
