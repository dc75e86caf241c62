"""Revoking one credential, in two phases, idempotently; and the nightly second chance.

1. Local: the tokens to revoke upstream are stashed, sealed, in ``PendingRevocations`` (one row
   per credential, created by a conditional insert: whoever creates it owns the upstream
   revocation, so overlapping requests make one upstream call per credential). Then the
   connection is marked ``revoked`` and its secrets wiped in one conditional write (from then on
   the token endpoint answers 410), and its managed PATs' secrets are destroyed.
2. Upstream: the PATs are DELETEd at Azure DevOps first (while the grant still gives a bearer),
   then RFC 7009 where the provider has it (refresh token, then access token), with retries and
   back-off; ``not_supported`` where it has none (Entra; PagerDuty unless turned on). Past the
   retry budget the pending row stays as ``revoke_failed``: listed, and retried nightly, never
   dropped. A finished pending row is deleted, taking the last copy of the secrets.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from shared.config.apps import Apps
from shared.foundation.clock import Clock
from shared.foundation.errors import (
    AlreadyExists,
    ConcurrencyConflict,
    KeystewardError,
    NotFound,
    ProviderError,
    ProviderUnavailable,
)
from shared.foundation.secret import Secret
from shared.lifecycle.grants import grant_of
from shared.lifecycle.pats.records import ManagedPats
from shared.lifecycle.pats.revocation import PatRevocation
from shared.providers.drivers import Drivers
from shared.providers.oauth import Grant
from shared.storage.lease import Leases, clear
from shared.storage.retry import on_conflict
from shared.storage.store import Store
from shared.storage.tables.audit import AuditOutcome
from shared.storage.tables.connections import Connection, ConnectionStore, Status
from shared.storage.tables.pats import PatStatus
from shared.storage.tables.revocations import (
    Local,
    Outcome,
    PendingRevocation,
    PendingState,
    Upstream,
)
from shared.storage.tables.schedule import Schedule
from shared.trail.audit import AuditLog
from shared.trail.events import CREDENTIAL_REVOKED, EventPublisher

UPSTREAM_TRIES = 3
UPSTREAM_BACKOFF = 0.5  # seconds, doubled per try within one attempt
REVOKED, NOT_SUPPORTED, REVOKE_FAILED = (
    Upstream.REVOKED,
    Upstream.NOT_SUPPORTED,
    Upstream.REVOKE_FAILED,
)


@dataclass
class LocallyRevoked:
    """What the local phase leaves for the upstream one."""

    app: str
    user_id: str
    local: Local | None
    bearer: str | None = field(default=None, repr=False)
    pats: list[str] = field(default_factory=list)
    done: list[Outcome] | None = None


class CredentialRevoker:
    def __init__(
        self,
        *,
        store: Store,
        connections: ConnectionStore,
        schedule: Schedule,
        apps: Apps,
        drivers: Drivers,
        audit: AuditLog,
        events: EventPublisher,
        clock: Clock,
        pats: ManagedPats | None = None,
        pat_revocation: PatRevocation | None = None,
        provider_timeout: float = 20.0,
    ) -> None:
        # Long enough for one upstream attempt (every try timing out, plus back-off), so a live
        # holder keeps it; a crashed holder's credential is picked up again after it.
        self._lease = timedelta(seconds=provider_timeout * UPSTREAM_TRIES + 5)
        self._store = store
        self._connections = connections
        self._schedule = schedule
        self._apps = apps
        self._drivers = drivers
        self._audit = audit
        self._events = events
        self._clock = clock
        self._leases = Leases(store, clock)
        self._pats = pats
        self._pat_revocation = pat_revocation if pats is not None else None

    def revoke_connection(self, connection: Connection, request_id: str | None) -> list[Outcome]:
        """One connection, both phases; the connection's outcome first, then one per PAT."""
        return self.upstream_phase(self.local_phase(connection, request_id), request_id)

    def local_phase(self, connection: Connection, request_id: str | None) -> LocallyRevoked:
        """Destroy every local copy: the connection's grant and its managed PATs' secrets."""
        app, user = connection.app, connection.user_id
        if request_id:
            done = self._store.read(Outcome, request_id, _outcome_key(app, user))
            if done is not None and done.upstream != Upstream.PENDING:
                return LocallyRevoked(app, user, None, done=[done])  # finished before a redelivery
        pats = [
            p.id for p in (self._pats.of_connection(app, user) if self._pats else [])
            if p.status not in (PatStatus.REVOKED, PatStatus.REVOKED_UPSTREAM)
        ]  # fmt: skip
        # A bearer for Azure DevOps while the grant still lives: taken in memory, used after.
        bearer = self._pats.bearer_or_none(app, user) if pats and self._pats else None
        local = self._destroy_locally(app, user, request_id)
        for pat_id in pats:
            assert self._pat_revocation is not None
            self._pat_revocation.destroy_locally(pat_id)
        return LocallyRevoked(app, user, local, bearer=bearer, pats=pats)

    def upstream_phase(self, local: LocallyRevoked, request_id: str | None) -> list[Outcome]:
        if local.done is not None:
            return local.done
        app, user = local.app, local.user_id
        pat_outcomes = [self._revoke_pat(pat_id, local.bearer, request_id) for pat_id in local.pats]
        pats_left = any(o.upstream == REVOKE_FAILED for o in pat_outcomes)
        upstream, error = self._revoke_upstream(app, user, keep=pats_left)
        outcome = Outcome(
            request_id=request_id or "direct", kind=_outcome_key(app, user),
            credential=f"{app}/{user}", app=app, user_id=user, local=local.local,
            upstream=upstream, at=self._clock.now(), error=error,
        )  # fmt: skip
        if request_id:
            self._store.save(outcome)
        return [outcome, *pat_outcomes]

    def _revoke_pat(self, pat_id: str, bearer: str | None, request_id: str | None) -> Outcome:
        assert self._pats is not None
        assert self._pat_revocation is not None
        result = self._pat_revocation.revoke_upstream(
            pat_id, actor="system:revocation", bearer=bearer
        )
        pat = self._pats.get(pat_id)
        outcome = Outcome(
            request_id=request_id or "direct", kind=f"pat|{pat_id}", credential=f"pat:{pat_id}",
            app=pat.app, user_id=pat.user_id, local=Local.DESTROYED,
            upstream=REVOKE_FAILED if result.failed else REVOKED, at=self._clock.now(),
            error=json.dumps(result.upstream) if result.failed else None, type="managed_pat",
        )  # fmt: skip
        if request_id:
            self._store.save(outcome)
        return outcome

    def _destroy_locally(self, app: str, user: str, request_id: str | None) -> Local:
        def attempt() -> Local:
            connection = self._connections.find(app, user)
            if connection is None or connection.status == Status.REVOKED:
                return Local.ALREADY_REVOKED
            self._stash(connection)
            now = self._clock.now()
            connection.status = Status.REVOKED
            connection.revoked_at = connection.updated_at = now
            connection.access_token = connection.refresh_token = connection.msal_cache = None
            connection.access_expires_at = None
            old_bucket, connection.schedule_bucket = connection.schedule_bucket, None
            clear(connection)  # a revoked row holds no lease
            self._connections.save(connection)  # a refresh that wrote meanwhile: wipe it too
            if old_bucket:
                self._schedule.drop(old_bucket, app, user)
            return Local.DESTROYED

        local = on_conflict(attempt, what=f"the connection '{app}/{user}' being revoked")
        if local == Local.DESTROYED:
            data = {"app": app, "user_id": user, "type": "connection", "request": request_id}
            self._events.publish(CREDENTIAL_REVOKED, f"{app}/{user}", data)
            self._audit.record("system:revocation", "credential.revoked", f"{app}/{user}",
                               detail=data)  # fmt: skip
        return local

    def _stash(self, connection: Connection) -> None:
        """The tokens to revoke upstream, sealed in their own row, before the connection is
        wiped: the upstream copy survives a crash. An overlapping request may have stashed them
        already, and the connection is still ours to wipe."""
        grant = grant_of(connection)
        pending = PendingRevocation(
            app=connection.app, user_id=connection.user_id, state=PendingState.PENDING,
            created_at=self._clock.now(), refresh_token=_plain(grant.refresh_token),
            access_token=_plain(grant.access_token), msal_cache=_plain(grant.msal_cache),
            msal_account=grant.msal_account,
        )  # fmt: skip
        with contextlib.suppress(AlreadyExists):
            self._store.create(pending)

    def _revoke_upstream(
        self, app_id: str, user: str, *, keep: bool = False
    ) -> tuple[Upstream, str | None]:
        """Revoke the stashed tokens once, whoever asks; the stored result for everyone else."""
        deadline = time.monotonic() + self._lease.total_seconds() + 5
        while True:
            pending = self._store.read(PendingRevocation, app_id, user)
            if pending is None:
                return self._recorded_upstream(app_id, user)
            if pending.state == PendingState.REVOKE_FAILED:
                return REVOKE_FAILED, pending.last_error
            lease = self._leases.acquire(
                PendingRevocation.TABLE, app_id, user, owner=uuid.uuid4().hex, ttl=self._lease
            )
            if lease is not None:
                fresh = self._store.read(PendingRevocation, app_id, user)
                if fresh is None:
                    return self._recorded_upstream(app_id, user)
                return self._attempt(fresh, keep=keep)
            if time.monotonic() > deadline:
                return Upstream.PENDING, "another worker is revoking this credential upstream"
            time.sleep(0.1)

    def _attempt(self, pending: PendingRevocation, *, keep: bool) -> tuple[Upstream, str | None]:
        app_id, user = pending.app, pending.user_id
        grant = Grant(access_token=pending.access_token, token_type="Bearer",  # noqa: S106
                      expires_at=None, refresh_token=pending.refresh_token, scopes=())  # fmt: skip
        error: str | None = None
        result = REVOKE_FAILED
        for attempt in range(UPSTREAM_TRIES):
            try:
                app = self._apps.get(app_id)
                result = Upstream(self._drivers.for_app(app).revoke(app, grant))
                error = None
                break
            except NotFound:
                error = f"app '{app_id}' is not configured: cannot revoke upstream"
                break
            except ProviderError as exc:
                error = f"{exc.error}: {exc.oauth_error}"
                if not isinstance(exc, ProviderUnavailable) or attempt == UPSTREAM_TRIES - 1:
                    break
                time.sleep(max(UPSTREAM_BACKOFF * 2**attempt, exc.retry_after or 0.0))
        now = self._clock.now()
        self._record_upstream(app_id, user, result if error is None else REVOKE_FAILED, error)
        if error is None and not keep:
            self._store.remove(pending)  # the last copy of the secrets goes with it
            return result, None
        if error is None:
            # The grant itself is done, but managed PATs still wait for their DELETE: keep what
            # gets a bearer for them, listed as failed, for the nightly retry.
            pending.state, pending.last_error = (
                PendingState.REVOKE_FAILED,
                "managed PATs not yet revoked",
            )
            pending.refresh_token = pending.access_token = None
            pending.attempts, pending.last_attempt_at = pending.attempts + 1, now
            clear(pending)
            self._store.save(pending)
            return result, None
        pending.state = PendingState.REVOKE_FAILED
        pending.attempts += 1
        pending.last_error = error
        pending.last_attempt_at = now
        clear(pending)
        self._store.save(pending)
        self._audit.record("system:revocation", "credential.revoke_failed", f"{app_id}/{user}",
                           outcome=AuditOutcome.FAILURE, detail={"error": error})  # fmt: skip
        return REVOKE_FAILED, error

    def _record_upstream(self, app: str, user: str, upstream: Upstream, error: str | None) -> None:
        def attempt() -> None:
            connection = self._connections.find(app, user)
            if connection is not None:
                connection.revoke_upstream, connection.revoke_error = upstream, error
                self._connections.save(connection)

        on_conflict(attempt, what=f"the connection '{app}/{user}'")

    def _recorded_upstream(self, app: str, user: str) -> tuple[Upstream, str | None]:
        connection = self._connections.find(app, user)
        if connection is None or connection.revoke_upstream is None:
            return NOT_SUPPORTED, "nothing was left to revoke upstream"
        return connection.revoke_upstream, connection.revoke_error

    # -- what is left ---------------------------------------------------------------------------

    def failures(self) -> list[PendingRevocation]:
        return [
            p for p in self._store.select(PendingRevocation, "PartitionKey ne @none", {"none": ""})
            if p.state == PendingState.REVOKE_FAILED
        ]  # fmt: skip

    def retry_failures(self) -> dict[str, int]:
        """The nightly second chance for upstream revocations that kept failing: managed PATs
        first (while a grant still gives a bearer for them), then the grants themselves."""
        counts: dict[str, int] = {REVOKED: 0, NOT_SUPPORTED: 0, REVOKE_FAILED: 0}
        if self._pat_revocation is not None:
            pats = self._pat_revocation.retry(self._clock.now(), self._bearer_for)
            counts.update({f"pats_{name}": n for name, n in pats.items()})
        for pending in self.failures():
            keep = self._pats_left(pending.app, pending.user_id)
            pending.state = PendingState.PENDING
            try:
                self._store.save(pending)
            except ConcurrencyConflict:
                continue
            upstream, _ = self._revoke_upstream(pending.app, pending.user_id, keep=keep)
            counts[upstream] = counts.get(upstream, 0) + 1
        return counts

    def _pats_left(self, app: str, user: str) -> bool:
        """Whether some managed PAT of the connection is still not revoked upstream."""
        return self._pats is not None and any(
            p.status in (PatStatus.REVOKE_FAILED, PatStatus.REVOKING)
            for p in self._pats.of_connection(app, user)
        )

    def _bearer_for(self, app_id: str, user: str) -> str | None:
        """The user's Entra token for the PAT API: from the live connection, else from the grant
        stashed when the connection was revoked (kept for exactly this)."""
        assert self._pats is not None
        connection = self._connections.find(app_id, user)
        if connection is not None and connection.status == Status.ACTIVE:
            return self._pats.bearer_or_none(app_id, user)
        pending = self._store.read(PendingRevocation, app_id, user)
        if pending is None:
            return None
        try:
            app = self._apps.get(app_id)
            grant = Grant(
                access_token=None,
                token_type="Bearer",  # noqa: S106 - a token type
                expires_at=None,
                refresh_token=pending.refresh_token,
                scopes=(),
                msal_cache=pending.msal_cache,
                msal_account=pending.msal_account,
            )
            fresh = self._drivers.for_app(app).refresh(app, grant)
        except KeystewardError:
            return None
        if fresh.msal_cache is not None:
            pending.msal_cache = fresh.msal_cache  # a rotated refresh token must not be lost
            with contextlib.suppress(ConcurrencyConflict):
                self._store.save(pending)
        return fresh.access_token.reveal() if fresh.access_token else None


def _plain(secret: Secret | None) -> Secret | None:
    # Re-sealed under the pending row's own place (a sealed value is bound to its row).
    return Secret(secret.reveal()) if secret is not None else None


def _outcome_key(app: str, user: str) -> str:
    return f"credential|{app}|{user}"
