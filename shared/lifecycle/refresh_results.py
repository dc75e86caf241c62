"""What a refresh writes, always in the one conditional write that also ends the refresher's
lease: the refreshed grant (kept in memory and retried while storage does not answer, since a
rotated refresh token exists nowhere else), the move to ``needs_reauth`` (event and audit once,
only after the write), a transient failure with its back-off, or a new place in the schedule.
"""

from __future__ import annotations

import contextlib
import logging
import time
from datetime import datetime, timedelta

from shared.config.apps import App
from shared.foundation.clock import Clock
from shared.foundation.errors import (
    ConcurrencyConflict,
    ProviderError,
    ProviderUnavailable,
    StorageUnavailable,
)
from shared.lifecycle.grants import take_grant
from shared.lifecycle.refresh_policy import (
    AccessToken,
    backoff,
    check_servable,
    due_at,
    sealed_grant,
    token_of,
)
from shared.providers.oauth import Grant
from shared.storage.lease import clear
from shared.storage.retry import on_conflict
from shared.storage.tables.audit import AuditOutcome
from shared.storage.tables.connections import Connection, ConnectionStore, Status
from shared.storage.tables.schedule import Schedule
from shared.trail.audit import AuditLog
from shared.trail.events import CONNECTION_NEEDS_REAUTH, EventPublisher

log = logging.getLogger("keysteward.tokens")

# How long a refreshed grant is kept in memory, retried, while storage does not answer.
STORE_PATIENCE = 120.0
STORE_RETRY = 0.5


class RefreshWriter:
    def __init__(
        self,
        *,
        connections: ConnectionStore,
        schedule: Schedule,
        audit: AuditLog,
        events: EventPublisher,
        clock: Clock,
    ) -> None:
        self._connections = connections
        self._schedule = schedule
        self._audit = audit
        self._events = events
        self._clock = clock

    def store_refreshed(
        self, app: App, connection: Connection, grant: Grant, now: datetime
    ) -> AccessToken:
        """Store the refreshed grant in the write that ends our lease, before anyone is given the
        access token. A lost race means our lease ran out while the provider answered and someone
        wrote the row: if nobody refreshed meanwhile our rotated token must still be stored; if
        they did, theirs is the grant now."""
        used = sealed_grant(connection)
        rows = [connection]

        def attempt() -> AccessToken:
            row = rows[-1]
            take_grant(row, grant, now)
            row.last_refreshed_at, row.refresh_failures, row.refusals = now, 0, 0
            row.last_error = row.next_attempt_at = None
            try:
                self._write_patiently(app, row)
            except ConcurrencyConflict:
                latest = self._connections.get(app.id, row.user_id)
                check_servable(latest)  # never write a grant over revoked/needs_reauth
                if sealed_grant(latest) != used:
                    return token_of(latest)
                rows.append(latest)
                raise
            return token_of(row)

        return on_conflict(attempt, what=f"the connection '{connection.resource}'", tries=3)

    def _write_patiently(self, app: App, connection: Connection) -> None:
        """The provider may have rotated the refresh token: the new one exists only in this
        process and the stored one may be dead. Losing it loses the connection, so keep trying
        while storage does not answer (a write that did land shows up as a conflict whose row
        holds our grant)."""
        give_up = time.monotonic() + STORE_PATIENCE
        while True:
            try:
                self._write_released(app, connection)
                return
            except StorageUnavailable:
                if time.monotonic() >= give_up:
                    log.error("the refreshed grant of %s could not be stored for %.0f s; it is "
                              "lost if the provider rotated the refresh token",
                              connection.resource, STORE_PATIENCE)  # fmt: skip
                    raise
                log.warning("storing the refreshed grant of %s failed (storage unavailable); "
                            "trying again", connection.resource)  # fmt: skip
                time.sleep(STORE_RETRY)

    def _write_released(self, app: App, connection: Connection) -> None:
        """The one write that stores the result and ends the lease (it fails if we lost it)."""
        old_bucket = connection.schedule_bucket
        now = self._clock.now()
        connection.schedule_bucket = (
            self._schedule.put(app.id, connection.user_id, due_at(connection, app, now), "refresh")
            if connection.status == Status.ACTIVE
            else None
        )
        clear(connection)
        connection.refresh_started_at = None
        connection.updated_at = now
        self._connections.save(connection)
        if old_bucket and old_bucket != connection.schedule_bucket:
            self._schedule.drop(old_bucket, app.id, connection.user_id)

    def release(self, connection: Connection) -> None:
        clear(connection)
        with contextlib.suppress(ConcurrencyConflict):  # lost it anyway: it expires by itself
            self._connections.save(connection)

    def mark_needs_reauth(
        self, app: App, connection: Connection, exc: ProviderError
    ) -> Connection | None:
        """Mark the grant dead, unless someone stored a newer one meanwhile (returned then)."""
        used = sealed_grant(connection)
        rows = [connection]

        def attempt() -> tuple[bool, Connection | None]:
            """(whether we marked it, a newer grant someone stored meanwhile)."""
            row = rows[-1]
            row.status, row.needs_reauth_at = Status.NEEDS_REAUTH, self._clock.now()
            row.last_error = row.reauth_error = exc.oauth_error
            row.reauth_code = exc.provider_code
            try:
                self._write_released(app, row)
            except ConcurrencyConflict:
                latest = self._connections.get(app.id, row.user_id)
                if latest.status != Status.ACTIVE:
                    return False, None  # already marked by whoever wrote: no second event
                if sealed_grant(latest) != used:
                    return False, latest
                rows.append(latest)
                raise
            return True, None

        marked, newer = on_conflict(attempt, what=f"the connection '{connection.resource}'")
        if not marked:
            return newer
        # Only the lease holder writes this transition, so the event goes out once.
        data = {"app": app.id, "user_id": connection.user_id, "error": exc.oauth_error,
                "provider_code": exc.provider_code}  # fmt: skip
        self._events.publish(CONNECTION_NEEDS_REAUTH, connection.resource, data)
        self._audit.record("system:refresh", "connection.needs_reauth", connection.resource,
                           outcome=AuditOutcome.FAILURE, detail=data)  # fmt: skip
        return None

    def record_failure(
        self, app: App, connection: Connection, exc: ProviderError, *, refusal: bool = False
    ) -> float:
        """A failure that leaves the connection active: back off (``refusal``: an unrecognised
        refusal, counted towards ``UNRECOGNISED_RETRIES``)."""
        connection.refresh_failures += 1
        connection.refusals += 1 if refusal else 0
        retry_after = exc.retry_after if isinstance(exc, ProviderUnavailable) else None
        delay = backoff(connection.refresh_failures, retry_after)
        connection.next_attempt_at = self._clock.now() + timedelta(seconds=delay)
        connection.last_error = f"{exc.error}: {exc.oauth_error}"
        try:
            self._write_released(app, connection)
        except ConcurrencyConflict:
            # Our lease ran out during the call and someone wrote the row: theirs stands, and
            # nothing is audited about a write that did not happen.
            return delay
        self._audit.record(
            "system:refresh", "connection.refresh_failed", connection.resource,
            outcome=AuditOutcome.FAILURE,
            detail={"error": exc.oauth_error, "attempts": connection.refresh_failures,
                    "retry_in_seconds": round(delay)},
        )  # fmt: skip
        log.warning(
            "refresh of %s failed (%s); attempt %d, next in %.0f s",
            connection.resource, exc.oauth_error, connection.refresh_failures, delay,
        )  # fmt: skip
        return delay

    def reschedule(self, app: App, connection: Connection) -> None:
        when = due_at(connection, app, self._clock.now())
        bucket = self._schedule.put(app.id, connection.user_id, when, "refresh")
        if bucket != connection.schedule_bucket:
            old = connection.schedule_bucket
            connection.schedule_bucket = bucket
            try:
                self._connections.save(connection)
            except ConcurrencyConflict:
                return  # whoever wrote it rescheduled it
            if old:
                self._schedule.drop(old, app.id, connection.user_id)
