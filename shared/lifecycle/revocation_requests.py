"""Revocation requests, by user, by app, or both: accepted once, run idempotently, reported.

A request (from the ``revocation-requests`` queue or ``POST /api/revocations``) is recorded once
under its owner and id (a redelivered message finds its record): the owner is the API key that
asked (``key:<id>``) or ``queue`` for a producer's message, so an id one principal chose never
blocks or reveals another's. Rows stored before owners, under the bare id, are read in place
(their owner is the ``key:`` in ``requested_by``, else the queue) and never moved. A request
selects connections by user (``ConnectionsByUser``), by app (the app's ``Connections`` partition)
or both (one point read), and revokes them with bounded concurrency in two phases: every selected
credential's local copies first (``credential_revocation``), so nothing the request covers is
served again before the first, slower upstream call goes out; then upstream. The record ends
``completed`` or ``completed_with_failures`` and ``revocation.completed`` is announced once.

Every step reads what is stored before acting, so a redelivered message (or a worker killed half
way) resumes where the stored state says and finishes the job.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from azure.storage.queue import QueueServiceClient

from shared.foundation import inputs
from shared.foundation.clock import Clock
from shared.foundation.errors import (
    AlreadyExists,
    Conflict,
    InputError,
    NotFound,
)
from shared.foundation.redaction import looks_secret
from shared.lifecycle.credential_revocation import NOT_SUPPORTED, REVOKE_FAILED, CredentialRevoker
from shared.lifecycle.user_ids import UserIds, check_user_id
from shared.storage.clients import send
from shared.storage.retry import on_conflict
from shared.storage.store import Store
from shared.storage.tablekeys import encode_key
from shared.storage.tables.audit import AuditOutcome
from shared.storage.tables.connections import Connection, ConnectionStore
from shared.storage.tables.revocations import (
    QUEUE_OWNER,
    Outcome,
    Revocation,
    RevocationStatus,
    storage_key,
)
from shared.trail.audit import AuditLog
from shared.trail.events import REVOCATION_COMPLETED, EventPublisher

QUEUE = "revocation-requests"
QUEUE_ACTOR = "queue:revocations"  # the queue authenticates no producer: its claim is detail
CONCURRENCY = 8
MAX_REASON = 500
_REQUEST_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")

PENDING, RUNNING, COMPLETED, WITH_FAILURES = (
    RevocationStatus.PENDING, RevocationStatus.RUNNING, RevocationStatus.COMPLETED,
    RevocationStatus.COMPLETED_WITH_FAILURES,
)  # fmt: skip


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
        body = inputs.require_object(body, "a revocation request")
        request_id = inputs.optional_text(body, "request_id", limit=64)
        if request_id is not None and not _REQUEST_ID.match(request_id):
            raise InputError("'request_id' is letters, digits and . _ : - (at most 64)")
        if request_id is not None and looks_secret(request_id):
            # It becomes an audit subject, and the audit trail refuses secret-looking ones.
            raise InputError("'request_id' looks like a credential (a token or key)")
        # Checked as everywhere, never stripped: ``alice@x `` is refused here as at connect.
        raw_user = body.get("user_id")
        user_id = None if raw_user is None else check_user_id(raw_user)
        app = inputs.optional_text(body, "app", limit=64)
        if user_id is None and app is None:
            raise InputError("give 'user_id', 'app' or both: what should be revoked?")
        return cls(
            request_id=request_id,
            user_id=user_id,
            app=app,
            reason=inputs.text(body, "reason", limit=MAX_REASON, printable=False),
            requested_by=inputs.text(body, "requested_by", limit=200),
        )


@dataclass(frozen=True)
class Handoff:
    """Keysteward's own message for a request accepted over HTTP: whose it is and its id. It only
    resumes that stored request; it can never create one, so a producer cannot forge a key's."""

    owner: str
    request_id: str

    @classmethod
    def parse(cls, body: dict[str, Any]) -> Handoff:
        owner = inputs.text(body, "owner", limit=200)
        request_id = inputs.text(body, "request_id", limit=64)
        if not _REQUEST_ID.match(request_id):
            raise InputError("'request_id' is letters, digits and . _ : - (at most 64)")
        return cls(owner, request_id)


def parse_message(body: Any) -> RevocationRequest | Handoff:
    """A producer's request, or (with ``owner``, which producers never send) a hand-off."""
    body = inputs.require_object(body, "a revocation request")
    return Handoff.parse(body) if "owner" in body else RevocationRequest.parse(body)


def actor_of(owner: str) -> str:
    """Who the audit trail says acted: the key, or the queue (never a producer's claim)."""
    return QUEUE_ACTOR if owner == QUEUE_OWNER else owner


class Revoker:
    def __init__(
        self,
        *,
        credentials: CredentialRevoker,
        store: Store,
        connections: ConnectionStore,
        user_ids: UserIds,
        audit: AuditLog,
        events: EventPublisher,
        clock: Clock,
        public_url: str,
        queues: QueueServiceClient,
        concurrency: int = CONCURRENCY,
    ) -> None:
        self.credentials = credentials
        self._store = store
        self._connections = connections
        self._user_ids = user_ids
        self._audit = audit
        self._events = events
        self._clock = clock
        self._public_url = public_url.rstrip("/")
        self._queues = queues
        self._concurrency = concurrency

    def status_url(self, request_id: str) -> str:
        return f"{self._public_url}/api/revocations/{request_id}"

    # -- requests -------------------------------------------------------------------------------

    def accept(self, request: RevocationRequest, *, owner: str, fallback_id: str) -> Revocation:
        """The request's record under ``owner``, created once (a redelivered message finds it)."""
        request_id = request.request_id or _derived_id(fallback_id)
        # Recorded as the user was first named, so every spelling is one request for one user.
        user_id = self._user_ids.resolve(request.user_id) if request.user_id else None
        target = (request.app, user_id)
        existing = self._own(owner, request_id)
        if existing is None and owner == QUEUE_OWNER:
            old = self._queued_before_owners(request_id, request.requested_by)
            existing = old if old is not None and (old.app, old.user_id) == target else None
        if existing is not None:
            if (existing.app, existing.user_id) != target:
                raise Conflict(f"request_id '{request_id}' names another revocation already")
            return existing
        now = self._clock.now()
        record = Revocation(
            key=storage_key(owner, request_id), id=request_id, owner=owner, status=PENDING,
            reason=request.reason, requested_by=request.requested_by, created_at=now,
            updated_at=now, app=request.app, user_id=user_id,
        )  # fmt: skip
        try:
            self._store.create(record)
        except AlreadyExists:
            found = self._store.read(Revocation, record.key, "request")
            assert found is not None
            return found
        detail = {"app": request.app, "user_id": user_id, "reason": request.reason, "owner": owner}
        if owner == QUEUE_OWNER:
            detail["claimed_by"] = request.requested_by
        self._audit.record(actor_of(owner), "revocation.requested", f"revocation:{request_id}",
                           detail=detail)  # fmt: skip
        return record

    def _own(self, owner: str, request_id: str) -> Revocation | None:
        """``owner``'s request ``request_id``: under its key, else a row stored before owners
        that is the owner's."""
        found = self._store.read(Revocation, storage_key(owner, request_id), "request")
        if found is None:
            found = self._store.read(Revocation, request_id, "request")
            found = found if found is not None and found.owner == owner else None
        return found

    def _queued_before_owners(self, request_id: str, requested_by: str) -> Revocation | None:
        """A key's row stored before owners, whose hand-off (queued then, without an owner) names
        the key in ``requested_by``: that request, resumed by the redelivered message."""
        old = self._store.read(Revocation, request_id, "request")
        if old is None or old.owner == QUEUE_OWNER or old.owner != requested_by:
            return None
        return old

    def submit(self, record: Revocation) -> None:
        """Hand an accepted request to the worker: its owner and id, nothing to trust beyond."""
        message = {"owner": record.owner, "request_id": record.id}
        send(self._queues, QUEUE, json.dumps(message))

    def handed_off(self, handoff: Handoff) -> Revocation | None:
        """The accepted request a hand-off names, or None: a hand-off never creates one."""
        return self._own(handoff.owner, handoff.request_id)

    def park(self, raw: str) -> None:
        """A message no retry can fix goes to the poison queue at once, for an operator."""
        send(self._queues, f"{QUEUE}-poison", raw)

    def new_id(self) -> str:
        return f"rv-{uuid.uuid4().hex}"

    def get(self, request_id: str, owners: list[str]) -> tuple[Revocation, list[Outcome]]:
        """The first of ``owners`` that has a request ``request_id``, and its outcomes."""
        record = None
        for owner in owners if request_id else []:
            record = self._own(owner, request_id)
            if record is not None:
                break
        if record is None:
            raise NotFound(f"no revocation request '{request_id}'")
        outcomes = list(
            self._store.select(
                Outcome,
                "PartitionKey eq @pk and RowKey ne @request",
                {"pk": encode_key(record.key), "request": "request"},
            )
        )
        return record, outcomes

    def run(self, record: Revocation) -> Revocation:
        """Revoke everything the request selects; safe to run again on the same record."""
        if record.status in (COMPLETED, WITH_FAILURES):
            return record
        selected = self._select(record.app, record.user_id)
        record = self._start(record, len(selected))
        if record.status in (COMPLETED, WITH_FAILURES):
            return record  # another delivery finished it meanwhile
        # Two phases: nothing this request covers is served again before the first (slower)
        # upstream call goes out.
        with ThreadPoolExecutor(max_workers=self._concurrency) as pool:
            wiped = list(pool.map(lambda c: self.credentials.local_phase(c, record.key), selected))
            groups = pool.map(lambda w: self.credentials.upstream_phase(w, record.key), wiped)
            outcomes = [outcome for group in groups for outcome in group]
        failed = sum(1 for o in outcomes if o.upstream == REVOKE_FAILED)
        return self._finish(record, outcomes, failed)

    def _finish(self, record: Revocation, outcomes: list[Outcome], failed: int) -> Revocation:
        def attempt() -> tuple[Revocation, bool]:
            latest = self._store.read(Revocation, record.key, "request") or record
            if latest.status in (COMPLETED, WITH_FAILURES):
                return latest, False  # another delivery finished it (and announced it)
            latest.status = WITH_FAILURES if failed else COMPLETED
            latest.completed_at = latest.updated_at = self._clock.now()
            return self._store.save(latest), True

        latest, finished = on_conflict(attempt, what=f"the revocation request '{record.id}'")
        if not finished:
            return latest
        data = {
            "id": latest.id, "owner": latest.owner, "status": latest.status, "app": latest.app,
            "user_id": latest.user_id, "total": len(outcomes), "revoke_failed": failed,
            "not_supported": sum(1 for o in outcomes if o.upstream == NOT_SUPPORTED),
        }  # fmt: skip
        self._events.publish(REVOCATION_COMPLETED, f"revocation:{latest.id}", data)
        outcome = AuditOutcome.PARTIAL if failed else AuditOutcome.SUCCESS
        self._audit.record("system:revocation", "revocation.completed", f"revocation:{latest.id}",
                           outcome=outcome, detail=data)  # fmt: skip
        return latest

    def _start(self, record: Revocation, total: int) -> Revocation:
        """Mark the request running over ``total`` credentials (a finished one stays finished)."""

        def attempt() -> Revocation:
            latest = self._store.read(Revocation, record.key, "request") or record
            if latest.status in (COMPLETED, WITH_FAILURES):
                return latest
            latest.status, latest.total, latest.updated_at = RUNNING, total, self._clock.now()
            return self._store.save(latest)

        return on_conflict(attempt, what=f"the revocation request '{record.id}'")

    def _select(self, app: str | None, user_id: str | None) -> list[Connection]:
        if user_id is None:
            assert app is not None
            return self._connections.of_app(app)
        # With ids that differed only by case before the backfill (reported, not merged).
        forms = self._user_ids.forms(user_id)
        if app:
            return [c for form in forms if (c := self._connections.find(app, form))]
        return [c for form in forms for c in self._connections.of_user(form)]


def _derived_id(message_id: str) -> str:
    """A request without an id is known by its queue message's id, stable across redelivery."""
    return f"q-{hashlib.sha256(message_id.encode()).hexdigest()[:32]}"
