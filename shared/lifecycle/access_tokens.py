"""Fresh access tokens: serve from storage when fresh, else refresh once, whoever asks.

The decision is pure (``refresh_policy``) and what a refresh writes is ``refresh_results``; here
is who refreshes and when. The refresh is single-flight across threads,
processes and instances: take the lease on the connection row, re-read it, and only then call the
provider if the re-read row still does not satisfy the request. A token refreshed after a
request arrived satisfies it even if it lives shorter than ``min_ttl`` (no refresh storm when a
provider's tokens are short). The refreshed grant, with a rotated refresh token, is written in
the same conditional write that releases the lease, before anyone is given the access token.

Failures: a dead grant (``GrantInvalid``) moves the connection to ``needs_reauth`` once (event and
audit once: only the lease holder writes the transition); a transient one keeps it ``active``,
records the error and the attempt count, and schedules the next attempt with exponential back-off
and jitter (at least the provider's Retry-After). While backing off, a cached token that meets
``min_ttl`` is still served; otherwise the caller gets 503 with Retry-After.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import uuid
from datetime import datetime, timedelta

from shared.config.apps import App, Apps
from shared.foundation.clock import Clock
from shared.foundation.errors import (
    DecryptionError,
    GrantInvalid,
    InputError,
    LeaseLost,
    NotFound,
    ProviderError,
    RefreshUnavailable,
    StoreError,
)
from shared.lifecycle.grants import grant_of
from shared.lifecycle.refresh_policy import AccessToken, check_servable, due_at, satisfies, token_of
from shared.lifecycle.refresh_results import RefreshWriter
from shared.providers.drivers import Drivers
from shared.storage.lease import Lease, Leases
from shared.storage.store import Store
from shared.storage.tables.connections import Connection, ConnectionStore, Status
from shared.storage.tables.schedule import Schedule
from shared.trail.audit import AuditLog
from shared.trail.events import EventPublisher

log = logging.getLogger("keysteward.tokens")

MAX_MIN_TTL = 24 * 3600
_WAIT_POLL = 0.05
# How long a taker-over waits for a predecessor that may still be storing a rotated token.
TAKEOVER_GRACE = 1.5


class Tokens:
    def __init__(
        self,
        *,
        store: Store,
        connections: ConnectionStore,
        leases: Leases,
        schedule: Schedule,
        apps: Apps,
        drivers: Drivers,
        audit: AuditLog,
        events: EventPublisher,
        clock: Clock,
        lease_ttl: timedelta,
    ) -> None:
        self._store = store
        self._connections = connections
        self._leases = leases
        self._schedule = schedule
        self._apps = apps
        self._drivers = drivers
        self._audit = audit
        self._events = events
        self._clock = clock
        self._lease_ttl = lease_ttl
        self._writer = RefreshWriter(
            connections=connections, schedule=schedule, audit=audit, events=events, clock=clock
        )
        self._process = f"{socket.gethostname()}:{os.getpid()}"

    # -- the token endpoint ---------------------------------------------------------------------

    def token(
        self,
        app_id: str,
        user_id: str,
        *,
        min_ttl: int | None = None,
        force_refresh: bool = False,
    ) -> AccessToken:
        asked_at = self._clock.now()
        app = self._app(app_id)
        if min_ttl is not None and not 0 <= min_ttl <= MAX_MIN_TTL:
            raise InputError(f"'min_ttl' must be from 0 to {MAX_MIN_TTL} seconds")
        ttl = timedelta(seconds=app.provider.refresh_margin if min_ttl is None else min_ttl)
        connection = self._connections.get(app_id, user_id)
        check_servable(connection)
        # Judged after the read: a slow read must not hand out a token that expired meanwhile.
        if satisfies(connection, self._clock.now(), ttl, force=force_refresh):
            return token_of(connection)
        if connection.next_attempt_at and connection.next_attempt_at > asked_at:
            return self._backing_off(connection, asked_at, ttl)
        return self._refresh(app, connection, ttl, asked_at, force=force_refresh)

    # -- the sweep's worker ---------------------------------------------------------------------

    def refresh_if_due(self, app_id: str, user_id: str) -> str:
        """Refresh one connection for the sweep, idempotently: a connection that is no longer due
        (another worker or a caller refreshed it) is only rescheduled."""
        now = self._clock.now()
        app = self._app(app_id)
        connection = self._connections.find(app_id, user_id)
        if connection is None or connection.status != Status.ACTIVE:
            return "skipped"
        if due_at(connection, app, now) > now:
            self._writer.reschedule(app, connection)
            return "not_due"
        ttl = timedelta(seconds=app.provider.refresh_margin)
        last = connection.last_refreshed_at or connection.connected_at
        keepalive = app.provider.keepalive_days
        # Forced only for a keep-alive refresh (the access token is still good then); otherwise a
        # token a caller refreshed moments ago answers the sweep too.
        force = bool(keepalive) and now >= last + timedelta(days=keepalive or 0) * 2 / 3
        try:
            self._refresh(app, connection, ttl, now, force=force)
        except (GrantInvalid, RefreshUnavailable) as exc:
            return exc.error
        return "refreshed"

    # -- single flight --------------------------------------------------------------------------

    def _refresh(
        self,
        app: App,
        connection: Connection,
        ttl: timedelta,
        asked_at: datetime,
        *,
        force: bool = False,
    ) -> AccessToken:
        # A crashed holder blocks us at most one lease TTL; then we take the lease over.
        deadline = time.monotonic() + self._lease_ttl.total_seconds() + 5
        delay = _WAIT_POLL
        # One owner per attempt, not per process: threads of one instance must not share a lease.
        owner = f"{self._process}:{uuid.uuid4().hex[:12]}"
        grace_given = False
        while True:
            lease = self._leases.acquire(
                Connection.TABLE, app.id, connection.user_id, owner=owner, ttl=self._lease_ttl
            )
            current = self._connections.get(app.id, connection.user_id)
            check_servable(current)
            if satisfies(current, self._clock.now(), ttl, asked_at, force=force):
                # Someone refreshed while we waited (or before we got here): theirs answers us.
                if lease is not None:
                    self._writer.release(current)
                return token_of(current)
            if lease is not None and lease.etag == current.etag:
                if current.refresh_started_at is not None and not grace_given:
                    # We took over from a holder that called the provider and never stored the
                    # answer. If it is alive (storage was down), its retry lands within moments
                    # of storage answering again: let it, rather than spend a refresh token the
                    # provider may already have rotated (reuse detection would kill the grant).
                    grace_given = True
                    time.sleep(TAKEOVER_GRACE)
                    continue
                try:
                    token = self._refresh_held(app, current, ttl, lease)
                    if token is not None:
                        return token
                    continue  # the row changed under our lease before the call: look again
                except DecryptionError:
                    # Its key left the ring: nothing was sent or written. Let go at once (a merge
                    # of the lease alone) so other callers fail as fast, not after the lease.
                    with contextlib.suppress(StoreError):
                        self._leases.release(lease)
                    raise
            if time.monotonic() > deadline:
                raise RefreshUnavailable("a refresh is taking too long", 5)
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    def _refresh_held(
        self, app: App, connection: Connection, ttl: timedelta, lease: Lease
    ) -> AccessToken | None:
        """We hold the lease and the row is as we read it: call the provider and store first.
        None if the row changed before the call (nothing was sent)."""
        for secret in (connection.refresh_token, connection.msal_cache):
            if secret is not None:
                secret.reveal()  # a key missing from the ring fails here, before any write
        now = self._clock.now()
        # Renew the lease as the call starts, so it covers the call and the write after it, and
        # mark that a refresh token is being spent (a taker-over then knows to wait a moment).
        try:
            renewed = self._leases.renew(lease, self._lease_ttl, also={"refresh_started_at": now})
        except LeaseLost:
            return None
        connection.etag = renewed.etag
        connection.refresh_started_at = now
        grant = grant_of(connection)
        try:
            fresh = self._drivers.for_app(app).refresh(app, grant)
        except GrantInvalid as exc:
            latest = self._writer.mark_needs_reauth(app, connection, exc)
            if latest is not None:
                return token_of(latest)  # someone stored a newer grant: the one we used was stale
            raise GrantInvalid(
                f"the grant for '{connection.resource}' is no longer valid "
                f"({exc.oauth_error}): the user must connect again",
                oauth_error=exc.oauth_error,
            ) from None
        except ProviderError as exc:
            retry_in = self._writer.record_failure(app, connection, exc)
            return self._backing_off(connection, self._clock.now(), ttl, retry_in)
        return self._writer.store_refreshed(app, connection, fresh, now)

    def _backing_off(
        self,
        connection: Connection,
        now: datetime,
        ttl: timedelta,
        retry_in: float | None = None,
    ) -> AccessToken:
        if satisfies(connection, now, ttl, None):
            return token_of(connection)
        if retry_in is None:
            retry_in = ((connection.next_attempt_at or now) - now).total_seconds()
        raise RefreshUnavailable(
            f"the provider is failing for '{connection.resource}' and the stored token does not "
            "live long enough; retry later",
            retry_in,
        )

    def _app(self, app_id: str) -> App:
        try:
            return self._apps.get(app_id)
        except NotFound:
            raise NotFound(f"no connection for app '{app_id}' (no such app)") from None
