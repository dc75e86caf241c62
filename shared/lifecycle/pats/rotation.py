"""The staged rotation of a managed PAT, on the pattern of AWS Secrets Manager's:

    create  → POST a PAT with the old one's scope and lifetime; stored as ``pending`` at once
    test    → the pending PAT authenticates to the organisation
    promote → pending becomes current, current becomes previous; ``credential.rotated``
    revoke  → after the grace period, DELETE the previous PAT

Each step starts from the stored state and is idempotent. Before the POST an intent marker (the
new PAT's display name) is stored: a worker that crashed after the POST but before storing the
answer lost the secret with it, so the resumed rotation finds that PAT by its name, revokes it
(no orphan) and creates another. A lease on the PAT's row keeps two workers from running the
same rotation at once; a second rotation request while one runs is merged into it.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from azure.storage.queue import QueueServiceClient

from shared.foundation.clock import Clock
from shared.foundation.crashpoints import crash_point
from shared.foundation.errors import ConcurrencyConflict, Gone, KeystewardError, PatPolicyViolation
from shared.foundation.secret import Secret
from shared.lifecycle.caller_requests import RotationMessage
from shared.lifecycle.pats.records import ManagedPats
from shared.providers.pat_api import PatToken
from shared.storage.clients import send
from shared.storage.lease import Leases
from shared.storage.retry import on_conflict
from shared.storage.store import Store
from shared.storage.tables.audit import AuditOutcome
from shared.storage.tables.pats import ManagedPat, PatStatus, RotationStep
from shared.trail.audit import AuditLog
from shared.trail.events import CREDENTIAL_ROTATED, PAT_ROTATION_REFUSED, EventPublisher

ROTATION_QUEUE = "rotation-requests"
ACTOR = "system:rotation"
TEST_TRIES = 5
_LEASE = timedelta(minutes=2)
# Steps one run may take before it hands over to a redelivery (a row that keeps changing).
_MAX_STEPS = 20


class Rotations:
    def __init__(
        self,
        *,
        records: ManagedPats,
        store: Store,
        audit: AuditLog,
        events: EventPublisher,
        queues: QueueServiceClient,
        clock: Clock,
        grace: timedelta,
    ) -> None:
        self._records = records
        self._store = store
        self._audit = audit
        self._events = events
        self._queues = queues
        self._clock = clock
        self._grace = grace
        self._leases = Leases(store, clock)

    def start(self, pat_id: str, *, actor: str, reason: str) -> tuple[ManagedPat, bool]:
        """Begin a rotation, or join the one in progress (never two at once)."""

        def attempt() -> tuple[ManagedPat, bool]:
            pat = self._records.get(pat_id)
            if pat.status != PatStatus.ACTIVE:
                raise Gone(f"the managed PAT '{pat_id}' is {pat.status.value}")
            if pat.rotation_id:
                return pat, False
            pat.rotation_id = f"rot-{uuid.uuid4().hex[:16]}"
            pat.rotation_step, pat.rotation_started_at = RotationStep.CREATE, self._clock.now()
            pat.rotation_tests, pat.last_error = 0, None
            return self._store.save(pat), True

        pat, started = on_conflict(attempt, what=f"the managed PAT '{pat_id}'")
        assert pat.rotation_id is not None
        # Joining nudges the running one too: its next step runs now if nothing holds it (a
        # message lost to a poison queue would otherwise leave it stuck).
        self.enqueue(pat.id, pat.rotation_id)
        if started:
            self._audit.record(actor, "pat.rotation_started", f"pat:{pat_id}",
                               detail={**_whose(pat), "rotation": pat.rotation_id,
                                       "reason": reason})  # fmt: skip
        return pat, started

    def enqueue(self, pat_id: str, rotation_id: str, delay: float = 0) -> None:
        send(self._queues, ROTATION_QUEUE, RotationMessage(pat_id, rotation_id).encode(), delay)

    def run(self, pat_id: str, rotation_id: str) -> float | None:
        """Run the rotation as far as it can go now: None when finished (or not ours any more),
        else the seconds to wait before the next attempt."""
        owner = uuid.uuid4().hex
        if self._leases.acquire(ManagedPat.TABLE, pat_id, "pat", owner=owner, ttl=_LEASE) is None:
            return 10.0  # another worker runs this rotation now
        try:
            return self._steps(pat_id, rotation_id)
        finally:
            self._leases.release_held(ManagedPat.TABLE, pat_id, "pat", owner)

    def _steps(self, pat_id: str, rotation_id: str) -> float | None:
        for _ in range(_MAX_STEPS):
            pat = self._records.get(pat_id)
            if pat.rotation_id != rotation_id or pat.rotation_step is None:
                return None
            step = pat.rotation_step
            try:
                if pat.event_due:
                    self._announce(pat)
                    continue
                done, wait = self._step(pat, step)
            except ConcurrencyConflict:
                continue  # re-read and carry on from what is stored
            except PatPolicyViolation as exc:
                self._refused(pat_id, exc)  # retrying will not change a policy's mind
                return None
            except KeystewardError as exc:
                self._records.note(pat_id, f"{step}: {exc.error}: {exc.message[:200]}")
                return 60.0 if exc.status >= 500 or exc.status == 424 else 300.0
            if done or wait is not None:
                return wait
        return 1.0  # the row kept changing: the next delivery carries on from what is stored

    def _step(self, pat: ManagedPat, step: RotationStep) -> tuple[bool, float | None]:
        """One step from the stored state: (finished, seconds to wait before the next)."""
        if step == RotationStep.CREATE:
            self._create_pending(pat)
        elif step == RotationStep.TEST:
            wait = self._test(pat)
            if wait is not None:
                return False, wait
        elif step == RotationStep.PROMOTE:
            self._promote(pat)
        else:
            left = (pat.previous_revoke_after or self._clock.now()) - self._clock.now()
            if left.total_seconds() > 0:
                return False, left.total_seconds()
            self._revoke_previous(pat)
            crash_point("after-revoke")
            return True, None
        crash_point(f"after-{step.value}")
        return False, None

    def _create_pending(self, pat: ManagedPat) -> None:
        app = self._records.entra_app(pat.app)
        bearer = self._records.bearer(app, pat.user_id)
        api = self._records.api(app)
        if pat.intent_name:
            # A POST may have happened before a crash: its secret is lost, so revoke it.
            for token in api.list(bearer, pat.organization, "active"):
                if token.display_name == pat.intent_name and token.authorization_id not in (
                    pat.authorization_id,
                    pat.previous_authorization_id,
                ):
                    api.revoke(bearer, pat.organization, token.authorization_id)
                    detail = {**_whose(pat), "authorization_id": token.authorization_id}
                    self._audit.record(ACTOR, "pat.orphan_revoked", f"pat:{pat.id}", detail=detail)
        assert pat.rotation_id is not None
        intent = f"{pat.display_name} [ks {pat.rotation_id[4:12]}-{uuid.uuid4().hex[:4]}]"
        pat.intent_name = intent
        pat = self._store.save(pat)  # the intent marker, before the POST
        crash_point("before-create")
        token, secret = api.create(
            bearer, pat.organization, display_name=intent, scope=pat.scope,
            valid_to=self._clock.now() + timedelta(days=pat.lifetime_days), all_orgs=pat.all_orgs,
        )  # fmt: skip
        crash_point("created")  # posted, not stored: the orphan case
        self._store_pending(pat, token, secret)

    def _store_pending(self, pat: ManagedPat, token: PatToken, secret: Secret) -> None:
        pat.pending_authorization_id, pat.pending_secret = token.authorization_id, secret
        pat.pending_valid_to = token.valid_to
        pat.intent_name, pat.rotation_step = None, RotationStep.TEST
        pat.updated_at = self._clock.now()
        self._store.save(pat)

    def _test(self, pat: ManagedPat) -> float | None:
        assert pat.pending_secret is not None
        app = self._records.entra_app(pat.app)
        if self._records.api(app).works(pat.pending_secret, pat.organization):
            pat.rotation_step = RotationStep.PROMOTE
            self._store.save(pat)
            return None
        pat.rotation_tests += 1
        if pat.rotation_tests < TEST_TRIES:
            self._store.save(pat)
            return 5.0 * pat.rotation_tests  # a new PAT can take a moment to be honoured
        self._abandon(pat)
        return None

    def _abandon(self, pat: ManagedPat) -> None:
        """The new PAT never worked: give it back and keep the current one."""
        app = self._records.entra_app(pat.app)
        if pat.pending_authorization_id:
            bearer = self._records.bearer(app, pat.user_id)
            self._records.api(app).revoke(bearer, pat.organization, pat.pending_authorization_id)
        pat.pending_authorization_id = pat.pending_secret = pat.pending_valid_to = None
        pat.rotation_id = pat.rotation_step = None
        pat.last_error = "rotation abandoned: the new PAT never authenticated"
        self._store.save(pat)
        detail = {**_whose(pat), "reason": pat.last_error}
        self._audit.record(ACTOR, "pat.rotation_failed", f"pat:{pat.id}",
                           outcome=AuditOutcome.FAILURE, detail=detail)  # fmt: skip

    def _refused(self, pat_id: str, exc: PatPolicyViolation) -> None:
        """An organisation policy refused the new PAT (nothing was made): the rotation ends, the
        current PAT stays active, and the row says which policy, for GET and ``status``."""

        def attempt() -> ManagedPat:
            pat = self._records.get(pat_id)
            pat.rotation_id = pat.rotation_step = pat.intent_name = None
            pat.rotation_refused, pat.rotation_refused_message = exc.pat_error, exc.message
            pat.rotation_refused_at = pat.updated_at = self._clock.now()
            pat.last_error = f"rotation refused: {exc.message}"
            return self._store.save(pat)

        pat = on_conflict(attempt, what=f"the managed PAT '{pat_id}'")
        data = {"type": "managed_pat", "id": pat.id, "app": pat.app, "user_id": pat.user_id,
                "organization": pat.organization, "authorization_id": pat.authorization_id,
                "valid_to": pat.valid_to.isoformat() if pat.valid_to else None,
                "policy": exc.pat_error, "message": exc.message}  # fmt: skip
        self._events.publish(PAT_ROTATION_REFUSED, f"pat:{pat.id}", data)
        self._audit.record(ACTOR, "pat.rotation_refused", f"pat:{pat.id}",
                           outcome=AuditOutcome.FAILURE, detail=data)  # fmt: skip

    def _promote(self, pat: ManagedPat) -> None:
        now = self._clock.now()
        pat.previous_authorization_id = pat.authorization_id
        pat.previous_revoke_after = now + self._grace
        pat.authorization_id, pat.secret = pat.pending_authorization_id, pat.pending_secret
        pat.valid_to = pat.pending_valid_to
        pat.pending_authorization_id = pat.pending_secret = pat.pending_valid_to = None
        pat.rotation_step, pat.rotated_at = RotationStep.REVOKE, now
        pat.rotations += 1
        pat.rotation_refused = pat.rotation_refused_message = pat.rotation_refused_at = None
        pat.warned_days, pat.event_due, pat.updated_at = [], True, now
        pat = self._store.save(pat)  # one write: the promotion and the duty to announce it
        crash_point("promoted")
        self._announce(pat)

    def _announce(self, pat: ManagedPat) -> None:
        """Announce the stored promotion, then clear the duty to: a crash between the two
        announces again on the next run (at least once), never not at all."""
        data = {"type": "managed_pat", "id": pat.id, "app": pat.app, "user_id": pat.user_id,
                "organization": pat.organization, "authorization_id": pat.authorization_id,
                "previous_authorization_id": pat.previous_authorization_id,
                "valid_to": pat.valid_to.isoformat() if pat.valid_to else None,
                "rotation": pat.rotation_id}  # fmt: skip
        self._events.publish(CREDENTIAL_ROTATED, f"pat:{pat.id}", data)
        self._audit.record(ACTOR, "pat.rotated", f"pat:{pat.id}", detail=data)
        pat.event_due = False
        self._store.save(pat)

    def _revoke_previous(self, pat: ManagedPat) -> None:
        if pat.previous_authorization_id:
            app = self._records.entra_app(pat.app)
            bearer = self._records.bearer(app, pat.user_id)
            self._records.api(app).revoke(bearer, pat.organization, pat.previous_authorization_id)
        revoked = pat.previous_authorization_id
        pat.previous_authorization_id = pat.previous_revoke_after = None
        pat.rotation_id = pat.rotation_step = None
        pat.updated_at = self._clock.now()
        self._store.save(pat)
        self._audit.record(ACTOR, "pat.previous_revoked", f"pat:{pat.id}",
                           detail={**_whose(pat), "authorization_id": revoked})  # fmt: skip


def _whose(pat: ManagedPat) -> dict[str, str]:
    # Audit reads are filtered by the reader's globs, which need the app and the user.
    return {"app": pat.app, "user_id": pat.user_id}
