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
``min_ttl`` is still served; otherwise the caller gets 503 with Retry-After. A forced refresh (or
a rejected token) that cannot happen now is a 503 too, never the old token as if refreshed.
A rejection of a token refreshed within the cooldown gets that token back without a refresh.

No storms: at most one refresh per connection per cooldown (``KEYSTEWARD_REFRESH_COOLDOWN_SECONDS``)
through the token endpoint, ``force_refresh`` and rejection reports together; callers within it
get the token just refreshed, even when it lives less than they asked.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.config.apps import App, Apps
from shared.foundation.clock import Clock
from shared.foundation.errors import (
    ClientInvalid,
    DecryptionError,
    GrantInvalid,
    InputError,
    KeystewardError,
    LeaseLost,
    NotFound,
    ProviderError,
    RefreshUnavailable,
    RefusalUnrecognised,
    StoreError,
)
from shared.lifecycle.app_health import AppHealth
from shared.lifecycle.grants import grant_of
from shared.lifecycle.refresh_policy import (
    AccessToken,
    check_servable,
    cooling,
    due_at,
    is_current,
    satisfies,
    token_of,
)
from shared.lifecycle.refresh_results import RefreshWriter
from shared.providers.drivers import Drivers
from shared.providers.refusals import UNRECOGNISED_RETRIES
from shared.storage.lease import Lease, Leases
from shared.storage.store import Store
from shared.storage.tables.audit import AuditOutcome
from shared.storage.tables.connections import Connection, ConnectionStore, Status
from shared.storage.tables.schedule import Schedule
from shared.trail.audit import AuditLog
from shared.trail.events import EventPublisher

log = logging.getLogger("keysteward.tokens")

MAX_MIN_TTL = 24 * 3600
_WAIT_POLL = 0.05
# How long a taker-over waits for a predecessor that may still be storing a rotated token.
TAKEOVER_GRACE = 1.5


@dataclass(frozen=True)
class Ask:
    """What a refresh must answer: a token living ``ttl`` more, asked at ``asked_at``, forced
    or not, within a cooldown or not; or one other than the token a caller reported refused."""

    ttl: timedelta
    asked_at: datetime
    force: bool = False
    cooldown: timedelta | None = None
    rejected: str | None = None  # the refused token's SHA-256

    def answered_by(self, current: Connection, now: datetime) -> bool:
        if self.rejected is not None and not is_current(current, self.rejected):
            return satisfies(current, now, timedelta(0))  # replaced: any live token answers
        return satisfies(current, now, self.ttl, self.asked_at, force=self.force,
                         cooldown=self.cooldown)  # fmt: skip


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
        cooldown: timedelta,
        app_health: AppHealth,
    ) -> None:
        self._app_health = app_health
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
        self._cooldown = cooldown
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
        return self._serve(app, connection, ttl, asked_at, force=force_refresh)

    def _serve(
        self, app: App, connection: Connection, ttl: timedelta, asked_at: datetime, *, force: bool
    ) -> AccessToken:
        cooldown = self._cooldown
        # Judged after the read: a slow read must not hand out a token that expired meanwhile.
        if satisfies(connection, self._clock.now(), ttl, force=force, cooldown=cooldown):
            return token_of(connection)
        if connection.next_attempt_at and connection.next_attempt_at > asked_at:
            return self._backing_off(connection, asked_at, ttl, force=force)
        return self._refresh(app, connection, Ask(ttl, asked_at, force, cooldown))

    def rejected(self, app_id: str, user_id: str, token_sha256: str, *, actor: str) -> AccessToken:
        """A caller says the provider refused a token (named by its SHA-256, never the token).
        The current token is refreshed once (single flight); a token already replaced, or one
        Keysteward never served, gets the current token without a refresh. Audited either way."""
        asked_at = self._clock.now()
        app = self._app(app_id)
        connection = self._connections.get(app_id, user_id)
        check_servable(connection)
        current = is_current(connection, token_sha256)
        ttl = timedelta(seconds=app.provider.refresh_margin)
        try:
            token = (
                self._replace(app, connection, token_sha256, asked_at)
                if current
                else self._serve(app, connection, ttl, asked_at, force=False)
            )
        except KeystewardError as exc:
            self._audit.record(actor, "token.rejected", connection.resource,
                               outcome=AuditOutcome.FAILURE,
                               detail={"current": current, "error": exc.error})  # fmt: skip
            raise
        replaced = hashlib.sha256(token.access_token.encode()).hexdigest() != token_sha256
        self._audit.record(actor, "token.rejected", connection.resource,
                           detail={"current": current, "replaced": replaced})  # fmt: skip
        return token

    def _replace(
        self, app: App, connection: Connection, token_sha256: str, asked_at: datetime
    ) -> AccessToken:
        ttl = timedelta(seconds=app.provider.refresh_margin)
        if connection.next_attempt_at and connection.next_attempt_at > asked_at:
            return self._backing_off(connection, asked_at, ttl, force=True)
        if cooling(connection, asked_at, self._cooldown):
            # Refreshed moments ago and refused already: one more refresh now is the storm; the
            # token just refreshed answers (the caller sees its expiry), as for force_refresh.
            return token_of(connection)
        return self._refresh(app, connection, Ask(ttl, asked_at, force=True, rejected=token_sha256))

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
            self._refresh(app, connection, Ask(ttl, now, force))
        except (GrantInvalid, RefreshUnavailable) as exc:
            return exc.error
        return "refreshed"

    # -- single flight --------------------------------------------------------------------------

    def _refresh(self, app: App, connection: Connection, ask: Ask) -> AccessToken:
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
            if ask.answered_by(current, self._clock.now()):
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
                    token = self._refresh_held(app, current, ask.ttl, lease, force=ask.force)
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
        self, app: App, connection: Connection, ttl: timedelta, lease: Lease, *, force: bool
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
        except ProviderError as exc:
            return self._refused(app, connection, exc, ttl, force=force)
        token = self._writer.store_refreshed(app, connection, fresh, now)
        self._app_health.working(app.id, actor="system:refresh")
        return token

    def _refused(
        self, app: App, connection: Connection, exc: ProviderError, ttl: timedelta, *, force: bool
    ) -> AccessToken:
        """What a failed refresh leaves (shared.providers.refusals): a dead grant needs the user
        again; anything else backs off, an app refused outright is marked, and an unrecognised
        refusal that keeps coming is at last taken for a dead grant (no silent loop)."""
        unrecognised = isinstance(exc, RefusalUnrecognised)
        if isinstance(exc, GrantInvalid) or (
            unrecognised and connection.refusals >= UNRECOGNISED_RETRIES
        ):
            return self._dead(app, connection, exc)
        retry_in = self._writer.record_failure(app, connection, exc, refusal=unrecognised)
        if isinstance(exc, ClientInvalid):
            self._app_health.refused(app.id, exc, actor="system:refresh")
        return self._backing_off(connection, self._clock.now(), ttl, retry_in, force=force)

    def _dead(self, app: App, connection: Connection, exc: ProviderError) -> AccessToken:
        """Mark the grant dead (424), unless a newer one was stored meanwhile (served then)."""
        latest = self._writer.mark_needs_reauth(app, connection, exc)
        if latest is not None:
            return token_of(latest)  # someone stored a newer grant: the one we used was stale
        raise GrantInvalid(
            f"the grant for '{connection.resource}' is no longer valid "
            f"({exc.oauth_error}): the user must connect again",
            oauth_error=exc.oauth_error,
            provider_code=exc.provider_code,
        ) from None

    def _backing_off(
        self,
        connection: Connection,
        now: datetime,
        ttl: timedelta,
        retry_in: float | None = None,
        *,
        force: bool = False,
    ) -> AccessToken:
        if not force and satisfies(connection, now, ttl, None):
            return token_of(connection)
        if retry_in is None:
            retry_in = ((connection.next_attempt_at or now) - now).total_seconds()
        error = connection.last_error
        why = (
            "a forced refresh cannot happen now" if force else "the stored token does not live "
            "long enough"
        )  # fmt: skip
        raise RefreshUnavailable(
            f"the provider is failing for '{connection.resource}' (last error: {error}) and {why}; "
            "retry later",
            retry_in,
        )

    def _app(self, app_id: str) -> App:
        try:
            return self._apps.get(app_id)
        except NotFound:
            raise NotFound(f"no connection for app '{app_id}' (no such app)") from None
