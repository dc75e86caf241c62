"""Fresh access tokens: serve from storage when fresh, else refresh once, whoever asks.

The decision is pure (``satisfies``, ``due_at``); the refresh is single-flight across threads,
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
import random
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.config.apps import App, Apps
from shared.foundation.clock import Clock
from shared.foundation.errors import (
    ConcurrencyConflict,
    DecryptionError,
    Gone,
    GrantInvalid,
    InputError,
    LeaseLost,
    NotFound,
    ProviderError,
    ProviderUnavailable,
    RefreshUnavailable,
    StorageUnavailable,
    StoreError,
)
from shared.lifecycle.grants import grant_of, take_grant
from shared.providers.drivers import Drivers
from shared.storage.lease import Lease, Leases, clear
from shared.storage.store import Store
from shared.storage.tables.connections import Connection, ConnectionStore, Status
from shared.storage.tables.schedule import Schedule
from shared.trail.audit import AuditLog
from shared.trail.events import CONNECTION_NEEDS_REAUTH, EventPublisher

log = logging.getLogger("keysteward.tokens")

BACKOFF_BASE = 10.0
BACKOFF_CAP = 1800.0
MAX_MIN_TTL = 24 * 3600
_WAIT_POLL = 0.05
# How long a refreshed grant is kept in memory, retried, while storage does not answer.
STORE_PATIENCE = 120.0
STORE_RETRY = 0.5
# How long a taker-over waits for a predecessor that may still be storing a rotated token.
TAKEOVER_GRACE = 1.5


@dataclass(frozen=True)
class AccessToken:
    access_token: str
    token_type: str
    expires_at: datetime
    scope: list[str]

    def public(self) -> dict[str, object]:
        return {
            "access_token": self.access_token,
            "token_type": self.token_type,
            "expires_at": self.expires_at.isoformat(),
            "scope": " ".join(self.scope),
        }


def satisfies(
    connection: Connection,
    now: datetime,
    min_ttl: timedelta,
    asked_at: datetime | None = None,
    *,
    force: bool = False,
) -> bool:
    """Whether the stored access token answers a request made at ``asked_at``: it has not expired
    and it lives at least ``min_ttl`` more (unless the caller forces a refresh), or it was
    refreshed after the request arrived."""
    expires = connection.access_expires_at
    if connection.access_token is None or expires is None or expires <= now:
        return False
    if not force and expires - now >= min_ttl:
        return True
    refreshed = connection.last_refreshed_at
    return asked_at is not None and refreshed is not None and refreshed >= asked_at


def due_at(connection: Connection, app: App, now: datetime) -> datetime:
    """When the sweep should next refresh this connection: before the access token enters its
    refresh margin, before an idle refresh token lapses, or when back-off allows."""
    margin = timedelta(seconds=app.provider.refresh_margin)
    candidates = []
    if connection.access_expires_at is not None:
        # A little before the margin, so a caller rarely meets a due token.
        candidates.append(connection.access_expires_at - margin - margin / 2)
    if app.provider.keepalive_days:
        last = connection.last_refreshed_at or connection.connected_at
        # Refresh at two thirds of the idle lifetime: days of slack if a sweep is down.
        candidates.append(last + timedelta(days=app.provider.keepalive_days) * 2 / 3)
    # A token that never says when it expires is looked at daily.
    when = min(candidates) if candidates else now + timedelta(days=1)
    if connection.next_attempt_at is not None:
        when = max(when, connection.next_attempt_at)
    return max(when, now)


def backoff(failures: int, retry_after: float | None) -> float:
    delay = min(BACKOFF_BASE * 2.0 ** max(failures - 1, 0), BACKOFF_CAP)
    delay *= random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not security
    return max(delay, retry_after or 0.0)


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
        self._check_status(connection)
        # Judged after the read: a slow read must not hand out a token that expired meanwhile.
        if satisfies(connection, self._clock.now(), ttl, force=force_refresh):
            return _token(connection)
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
            self._reschedule(app, connection)
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
            self._check_status(current)
            if satisfies(current, self._clock.now(), ttl, asked_at, force=force):
                # Someone refreshed while we waited (or before we got here): theirs answers us.
                if lease is not None:
                    self._release(current)
                return _token(current)
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
            latest = self._needs_reauth(app, connection, exc)
            if latest is not None:
                return _token(latest)  # someone stored a newer grant: the one we used was stale
            raise GrantInvalid(
                f"the grant for '{connection.resource}' is no longer valid "
                f"({exc.oauth_error}): the user must connect again",
                oauth_error=exc.oauth_error,
            ) from None
        except ProviderError as exc:
            retry_in = self._failed(app, connection, exc)
            return self._backing_off(connection, self._clock.now(), ttl, retry_in)
        grant = fresh
        used = _sealed(connection)
        conflicts = 0
        give_up = time.monotonic() + STORE_PATIENCE
        while conflicts < 3:
            take_grant(connection, grant, now)
            connection.last_refreshed_at = now
            connection.refresh_failures = 0
            connection.last_error = None
            connection.next_attempt_at = None
            try:
                try:
                    self._write_released(app, connection)
                except ConcurrencyConflict:
                    # Our lease ran out while the provider answered and someone wrote the row. If
                    # nobody refreshed meanwhile, our rotated token must still be stored; if they
                    # did, theirs is the grant now.
                    conflicts += 1
                    latest = self._connections.get(app.id, connection.user_id)
                    self._check_status(latest)  # never write a grant over revoked/needs_reauth
                    if _sealed(latest) != used:
                        return _token(latest)
                    connection = latest
                    continue
            except StorageUnavailable:
                # The provider may have rotated the refresh token: the new one exists only in this
                # process and the stored one may be dead. Losing it loses the connection, so keep
                # it until storage answers again (a write that did land shows up as a conflict
                # whose row holds our grant).
                if time.monotonic() >= give_up:
                    log.error("the refreshed grant of %s could not be stored for %.0f s; it is "
                              "lost if the provider rotated the refresh token",
                              connection.resource, STORE_PATIENCE)  # fmt: skip
                    raise
                log.warning("storing the refreshed grant of %s failed (storage unavailable); "
                            "trying again", connection.resource)  # fmt: skip
                time.sleep(STORE_RETRY)
                continue
            return _token(connection)
        raise RefreshUnavailable("the refreshed grant could not be stored; retry", 1)

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

    def _release(self, connection: Connection) -> None:
        clear(connection)
        with contextlib.suppress(ConcurrencyConflict):  # lost it anyway: it expires by itself
            self._connections.save(connection)

    def _needs_reauth(
        self, app: App, connection: Connection, exc: ProviderError
    ) -> Connection | None:
        """Mark the grant dead, unless someone stored a newer one meanwhile (returned then)."""
        used = _sealed(connection)
        for _ in range(5):
            now = self._clock.now()
            connection.status = Status.NEEDS_REAUTH
            connection.needs_reauth_at = now
            connection.last_error = f"{exc.oauth_error}"
            try:
                self._write_released(app, connection)
                break
            except ConcurrencyConflict:
                latest = self._connections.get(app.id, connection.user_id)
                if latest.status != Status.ACTIVE:
                    return None  # already marked by whoever wrote: no second event
                if _sealed(latest) != used:
                    return latest
                connection = latest
        else:
            raise ConcurrencyConflict(f"'{connection.resource}' kept changing")
        # Only the lease holder writes this transition, so the event goes out once.
        data = {"app": app.id, "user_id": connection.user_id, "error": exc.oauth_error}
        self._events.publish(CONNECTION_NEEDS_REAUTH, connection.resource, data)
        self._audit.record("system:refresh", "connection.needs_reauth", connection.resource,
                           outcome="failure", detail=data)  # fmt: skip
        return None

    def _failed(self, app: App, connection: Connection, exc: ProviderError) -> float:
        connection.refresh_failures += 1
        retry_after = exc.retry_after if isinstance(exc, ProviderUnavailable) else None
        delay = backoff(connection.refresh_failures, retry_after)
        connection.next_attempt_at = self._clock.now() + timedelta(seconds=delay)
        connection.last_error = f"{exc.error}: {exc.oauth_error}"
        self._write_released(app, connection)
        self._audit.record(
            "system:refresh", "connection.refresh_failed", connection.resource, outcome="failure",
            detail={"error": exc.oauth_error, "attempts": connection.refresh_failures,
                    "retry_in_seconds": round(delay)},
        )  # fmt: skip
        log.warning(
            "refresh of %s failed (%s); attempt %d, next in %.0f s",
            connection.resource, exc.oauth_error, connection.refresh_failures, delay,
        )  # fmt: skip
        return delay

    def _backing_off(
        self,
        connection: Connection,
        now: datetime,
        ttl: timedelta,
        retry_in: float | None = None,
    ) -> AccessToken:
        if satisfies(connection, now, ttl, None):
            return _token(connection)
        if retry_in is None:
            retry_in = ((connection.next_attempt_at or now) - now).total_seconds()
        raise RefreshUnavailable(
            f"the provider is failing for '{connection.resource}' and the stored token does not "
            "live long enough; retry later",
            retry_in,
        )

    def _reschedule(self, app: App, connection: Connection) -> None:
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

    def _check_status(self, connection: Connection) -> None:
        if connection.status == Status.REVOKED:
            raise Gone(f"the connection '{connection.resource}' was revoked")
        if connection.status == Status.NEEDS_REAUTH:
            raise GrantInvalid(
                f"the connection '{connection.resource}' needs the user to connect again",
                oauth_error=connection.last_error or "invalid_grant",
            )

    def _app(self, app_id: str) -> App:
        try:
            return self._apps.get(app_id)
        except NotFound:
            raise NotFound(f"no connection for app '{app_id}' (no such app)") from None


def _sealed(connection: Connection) -> str | None:
    """What identifies the grant a refresh started from (its stored ciphertext)."""
    for secret in (connection.refresh_token, connection.msal_cache):
        if secret is not None:
            return getattr(secret, "token", None) or secret.reveal()
    return None


def _token(connection: Connection) -> AccessToken:
    assert connection.access_token is not None
    assert connection.access_expires_at is not None
    return AccessToken(
        access_token=connection.access_token.reveal(),
        token_type=connection.token_type,
        expires_at=connection.access_expires_at,
        scope=connection.scopes,
    )
