"""Revocation by user, by app, or both: local secrets first, then upstream, idempotently.

A request (from the ``revocation-requests`` queue or ``POST /api/revocations``) selects
connections by user (``ConnectionsByUser``), by app (the app's ``Connections`` partition) or both
(one point read), and revokes each with bounded concurrency:

1. The tokens to revoke upstream are stashed, sealed, in ``PendingRevocations`` (one row per
   credential, created by a conditional insert: whoever creates it owns the upstream revocation,
   so overlapping requests make one upstream call per credential).
2. The connection is marked ``revoked`` and its secrets are wiped in one conditional write: from
   then on the token endpoint answers 410.
3. Upstream: RFC 7009 where the provider has it (refresh token, then access token), with retries
   and back-off; ``not_supported`` where it has none (Entra; PagerDuty unless turned on). Past the
   retry budget the pending row stays as ``revoke_failed``: listed, and retried by the nightly
   sweep, never dropped. A finished pending row is deleted, taking the last copy of the secrets.

Every step reads what is stored before acting, so a redelivered message (or a worker killed half
way) resumes where the stored state says and finishes the job.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from azure.storage.queue import QueueServiceClient

from shared.config.apps import Apps
from shared.foundation.clock import Clock
from shared.foundation.errors import (
    AlreadyExists,
    ConcurrencyConflict,
    Conflict,
    InputError,
    KeystewardError,
    NotFound,
    ProviderError,
    ProviderUnavailable,
)
from shared.foundation.redaction import looks_secret
from shared.foundation.secret import Secret
from shared.lifecycle.grants import grant_of
from shared.lifecycle.pats.records import ManagedPats
from shared.lifecycle.pats.revocation import PatRevocation
from shared.providers.drivers import Drivers
from shared.providers.oauth import Grant
from shared.storage.clients import send
from shared.storage.lease import Leases, clear
from shared.storage.store import Store
from shared.storage.tablekeys import encode_key
from shared.storage.tables.connections import Connection, ConnectionStore, Status
from shared.storage.tables.pats import PatStatus
from shared.storage.tables.revocations import (
    Local,
    Outcome,
    PendingRevocation,
    PendingState,
    Revocation,
    RevocationStatus,
    Upstream,
)
from shared.storage.tables.schedule import Schedule
from shared.trail.audit import AuditLog
from shared.trail.events import CREDENTIAL_REVOKED, REVOCATION_COMPLETED, EventPublisher

QUEUE = "revocation-requests"
CONCURRENCY = 8
UPSTREAM_TRIES = 3
UPSTREAM_BACKOFF = 0.5  # seconds, doubled per try within one attempt
MAX_REASON = 500
_REQUEST_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")

PENDING, RUNNING, COMPLETED, WITH_FAILURES = (
    RevocationStatus.PENDING, RevocationStatus.RUNNING, RevocationStatus.COMPLETED,
    RevocationStatus.COMPLETED_WITH_FAILURES,
)  # fmt: skip
REVOKED, NOT_SUPPORTED, REVOKE_FAILED = (
    Upstream.REVOKED,
    Upstream.NOT_SUPPORTED,
    Upstream.REVOKE_FAILED,
)


@dataclass(frozen=True)
class RevocationRequest:
    """The message contract (docs/revocation.md): unknown fields are ignored."""

    request_id: str | None
    user_id: str | None
    app: str | None
    reason: str
    requested_by: str

    @classmethod
    def parse(cls, body: Any) -> RevocationRequest:
        if not isinstance(body, dict):
            raise InputError("a revocation request is a JSON object")

        def text(name: str, limit: int, required: bool = False) -> str | None:
            value = body.get(name)
            if value is None and not required:
                return None
            if not isinstance(value, str) or not value.strip() or len(value) > limit:
                raise InputError(f"'{name}' must be a non-empty string of at most {limit} chars")
            return value.strip()

        request_id = text("request_id", 64)
        if request_id is not None and not _REQUEST_ID.match(request_id):
            raise InputError("'request_id' is letters, digits and . _ : - (at most 64)")
        if request_id is not None and looks_secret(request_id):
            # It becomes an audit subject, and the audit trail refuses secret-looking ones.
            raise InputError("'request_id' looks like a credential (a token or key)")
        user_id, app = text("user_id", 256), text("app", 64)
        if user_id is None and app is None:
            raise InputError("give 'user_id', 'app' or both: what should be revoked?")
        return cls(
            request_id=request_id,
            user_id=user_id,
            app=app,
            reason=text("reason", MAX_REASON, required=True) or "",
            requested_by=text("requested_by", 200, required=True) or "",
        )


@dataclass
class _Local:
    """What the local phase leaves for the upstream one."""

    app: str
    user_id: str
    local: Local | None
    bearer: str | None = field(default=None, repr=False)
    pats: list[str] = field(default_factory=list)
    done: list[Outcome] | None = None


class Revoker:
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
        public_url: str,
        queues: QueueServiceClient,
        pats: ManagedPats | None = None,
        pat_revocation: PatRevocation | None = None,
        provider_timeout: float = 20.0,
        concurrency: int = CONCURRENCY,
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
        self._public_url = public_url.rstrip("/")
        self._pats = pats
        self._pat_revocation = pat_revocation if pats is not None else None
        self._queues = queues
        self._concurrency = concurrency

    def status_url(self, request_id: str) -> str:
        return f"{self._public_url}/api/revocations/{request_id}"

    # -- requests -------------------------------------------------------------------------------

    def accept(self, request: RevocationRequest, *, fallback_id: str) -> Revocation:
        """The request's record, created once (a redelivered message finds it)."""
        request_id = request.request_id or _derived_id(fallback_id)
        existing = self._store.read(Revocation, request_id, "request")
        if existing is not None:
            if (existing.app, existing.user_id) != (request.app, request.user_id):
                raise Conflict(f"request_id '{request_id}' names another revocation already")
            return existing
        now = self._clock.now()
        record = Revocation(
            id=request_id, status=PENDING, reason=request.reason,
            requested_by=request.requested_by, created_at=now, updated_at=now,
            app=request.app, user_id=request.user_id,
        )  # fmt: skip
        try:
            self._store.create(record)
        except AlreadyExists:
            found = self._store.read(Revocation, request_id, "request")
            assert found is not None
            return found
        self._audit.record(
            request.requested_by, "revocation.requested", f"revocation:{request_id}",
            detail={"app": request.app, "user_id": request.user_id, "reason": request.reason},
        )  # fmt: skip
        return record

    def submit(self, message: dict[str, Any]) -> None:
        """Queue an accepted request for the worker."""
        send(self._queues, QUEUE, json.dumps(message))

    def park(self, raw: str) -> None:
        """A message no retry can fix goes to the poison queue at once, for an operator."""
        send(self._queues, f"{QUEUE}-poison", raw)

    def new_id(self) -> str:
        return f"rv-{uuid.uuid4().hex}"

    def get(self, request_id: str) -> tuple[Revocation, list[Outcome]]:
        record = self._store.read(Revocation, request_id, "request") if request_id else None
        if record is None:
            raise NotFound(f"no revocation request '{request_id}'")
        outcomes = list(
            self._store.select(
                Outcome,
                "PartitionKey eq @pk and RowKey ne @request",
                {"pk": encode_key(request_id), "request": "request"},
            )
        )
        return record, outcomes

    def run(self, record: Revocation) -> Revocation:
        """Revoke everything the request selects; safe to run again on the same record."""
        if record.status in (COMPLETED, WITH_FAILURES):
            return record
        selected = self._select(record.app, record.user_id)
        record.status = RUNNING
        record.total = len(selected)
        record.updated_at = self._clock.now()
        record = self._save_record(record)
        # Two phases: nothing this request covers is served again before the first (slower)
        # upstream call goes out.
        with ThreadPoolExecutor(max_workers=self._concurrency) as pool:
            wiped = list(pool.map(lambda c: self._local_phase(c, record.id), selected))
            groups = pool.map(lambda w: self._upstream_phase(w, record.id), wiped)
            outcomes = [outcome for group in groups for outcome in group]
        failed = sum(1 for o in outcomes if o.upstream == REVOKE_FAILED)
        return self._finish(record, outcomes, failed)

    def _finish(self, record: Revocation, outcomes: list[Outcome], failed: int) -> Revocation:
        now = self._clock.now()
        latest = self._store.read(Revocation, record.id, "request") or record
        if latest.status in (COMPLETED, WITH_FAILURES):
            return latest  # another delivery finished it (and announced it)
        latest.status = WITH_FAILURES if failed else COMPLETED
        latest.completed_at = latest.updated_at = now
        try:
            self._store.save(latest)
        except ConcurrencyConflict:
            return self._store.read(Revocation, record.id, "request") or latest
        data = {
            "id": latest.id, "status": latest.status, "app": latest.app,
            "user_id": latest.user_id, "total": len(outcomes), "revoke_failed": failed,
            "not_supported": sum(1 for o in outcomes if o.upstream == NOT_SUPPORTED),
        }  # fmt: skip
        self._events.publish(REVOCATION_COMPLETED, f"revocation:{latest.id}", data)
        self._audit.record("system:revocation", "revocation.completed", f"revocation:{latest.id}",
                           outcome="success" if not failed else "partial", detail=data)  # fmt: skip
        return latest

    def _save_record(self, record: Revocation) -> Revocation:
        for _ in range(5):
            try:
                return self._store.save(record)
            except ConcurrencyConflict:
                latest = self._store.read(Revocation, record.id, "request")
                assert latest is not None
                latest.status, latest.total = record.status, record.total
                latest.updated_at = record.updated_at
                record = latest
        raise ConcurrencyConflict("the revocation request keeps changing")

    def _select(self, app: str | None, user_id: str | None) -> list[Connection]:
        if app and user_id:
            found = self._connections.find(app, user_id)
            return [found] if found else []
        if app:
            return self._connections.of_app(app)
        assert user_id is not None
        return self._connections.of_user(user_id)

    # -- one credential -------------------------------------------------------------------------

    def revoke_connection(self, connection: Connection, request_id: str | None) -> list[Outcome]:
        """One connection, both phases; the connection's outcome first, then one per PAT."""
        return self._upstream_phase(self._local_phase(connection, request_id), request_id)

    def _local_phase(self, connection: Connection, request_id: str | None) -> _Local:
        """Destroy every local copy: the connection's grant and its managed PATs' secrets."""
        app, user = connection.app, connection.user_id
        if request_id:
            done = self._store.read(Outcome, request_id, _outcome_key(app, user))
            if done is not None and done.upstream != Upstream.PENDING:
                return _Local(app, user, None, done=[done])  # finished before a redelivery
        pats = [
            p.id for p in (self._pats.of_connection(app, user) if self._pats else [])
            if p.status != PatStatus.REVOKED
        ]  # fmt: skip
        # A bearer for Azure DevOps while the grant still lives: taken in memory, used after.
        bearer = self._pats.bearer_or_none(app, user) if pats and self._pats else None
        local = self._destroy_locally(app, user, request_id)
        for pat_id in pats:
            assert self._pat_revocation is not None
            self._pat_revocation.destroy_locally(pat_id)
        return _Local(app, user, local, bearer=bearer, pats=pats)

    def _upstream_phase(self, local: _Local, request_id: str | None) -> list[Outcome]:
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
        for _ in range(10):
            connection = self._connections.find(app, user)
            if connection is None or connection.status == Status.REVOKED:
                return Local.ALREADY_REVOKED
            grant = grant_of(connection)
            now = self._clock.now()
            pending = PendingRevocation(
                app=app, user_id=user, state=PendingState.PENDING, created_at=now,
                refresh_token=_plain(grant.refresh_token), access_token=_plain(grant.access_token),
                msal_cache=_plain(grant.msal_cache), msal_account=grant.msal_account,
            )  # fmt: skip
            # First, so the upstream copy survives a crash; an overlapping request may have
            # stashed it already, and the connection is still ours to wipe.
            with contextlib.suppress(AlreadyExists):
                self._store.create(pending)
            connection.status = Status.REVOKED
            connection.revoked_at = connection.updated_at = now
            connection.access_token = connection.refresh_token = connection.msal_cache = None
            connection.access_expires_at = None
            old_bucket, connection.schedule_bucket = connection.schedule_bucket, None
            clear(connection)  # a revoked row holds no lease
            try:
                self._connections.save(connection)
            except ConcurrencyConflict:
                continue  # a refresh wrote meanwhile: wipe what it wrote too
            if old_bucket:
                self._schedule.drop(old_bucket, app, user)
            data = {"app": app, "user_id": user, "type": "connection", "request": request_id}
            self._events.publish(CREDENTIAL_REVOKED, f"{app}/{user}", data)
            self._audit.record("system:revocation", "credential.revoked", f"{app}/{user}",
                               detail=data)  # fmt: skip
            return Local.DESTROYED
        raise ConcurrencyConflict(f"{app}/{user} kept changing while being revoked")

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
                           outcome="failure", detail={"error": error})  # fmt: skip
        return REVOKE_FAILED, error

    def _record_upstream(self, app: str, user: str, upstream: str, error: str | None) -> None:
        for _ in range(5):
            connection = self._connections.find(app, user)
            if connection is None:
                return
            connection.revoke_upstream, connection.revoke_error = upstream, error
            try:
                self._connections.save(connection)
                return
            except ConcurrencyConflict:
                continue

    def _recorded_upstream(self, app: str, user: str) -> tuple[Upstream, str | None]:
        connection = self._connections.find(app, user)
        if connection is None or connection.revoke_upstream is None:
            return NOT_SUPPORTED, "nothing was left to revoke upstream"
        return Upstream(connection.revoke_upstream), connection.revoke_error

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


def _derived_id(message_id: str) -> str:
    """A request without an id is known by its queue message's id, stable across redelivery."""
    return f"q-{hashlib.sha256(message_id.encode()).hexdigest()[:32]}"
