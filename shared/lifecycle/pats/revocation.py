"""The one path that revokes a managed PAT, whoever asks (``DELETE /pats/{id}``, a revocation
request), and its one nightly retry.

Two phases, as for every credential: ``destroy_locally`` wipes the stored secrets (from then on
the PAT is never served again), ``revoke_upstream`` DELETEs every version at Azure DevOps
(current, pending, previous). The PAT ends ``revoked``, or ``revoke_failed`` with each version's
outcome, listed and retried nightly while some grant still gives a bearer for the user.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.foundation.clock import Clock
from shared.foundation.errors import KeystewardError
from shared.lifecycle.pats.records import ManagedPats
from shared.storage.retry import on_conflict
from shared.storage.store import Store
from shared.storage.tables.audit import AuditOutcome
from shared.storage.tables.pats import ManagedPat, PatStatus
from shared.trail.audit import AuditLog
from shared.trail.events import CREDENTIAL_REVOKED, EventPublisher

# A PAT left ``revoking`` this long is a revocation that died half way: the nightly retry takes it.
STALLED_AFTER = timedelta(minutes=10)

BearerFor = Callable[[str, str], str | None]


@dataclass(frozen=True)
class PatRevoked:
    """What one revocation of a PAT came to: its stored status and each version's outcome."""

    id: str
    status: PatStatus
    upstream: dict[str, str]

    @property
    def failed(self) -> bool:
        return self.status not in (PatStatus.REVOKED, PatStatus.REVOKED_UPSTREAM)

    def public(self) -> dict[str, object]:
        return {"id": self.id, "status": self.status.value, "upstream": self.upstream}


class PatRevocation:
    def __init__(
        self,
        *,
        records: ManagedPats,
        store: Store,
        audit: AuditLog,
        events: EventPublisher,
        clock: Clock,
    ) -> None:
        self._records = records
        self._store = store
        self._audit = audit
        self._events = events
        self._clock = clock

    def revoke(self, pat_id: str, *, actor: str, bearer: str | None = None) -> PatRevoked:
        """Both phases; ``bearer`` when the caller already holds the user's token."""
        pat = self._records.get(pat_id)
        if pat.status == PatStatus.REVOKED_UPSTREAM:  # Azure DevOps already ended it: no news
            return PatRevoked(pat_id, pat.status, {})
        self.destroy_locally(pat_id)
        return self.revoke_upstream(pat_id, actor=actor, bearer=bearer)

    def destroy_locally(self, pat_id: str) -> ManagedPat:
        """Wipe the stored secrets: from here on the PAT is never served again."""

        def attempt() -> ManagedPat:
            pat = self._records.get(pat_id)
            if pat.status in (PatStatus.REVOKED, PatStatus.REVOKING) and pat.secret is None:
                return pat
            pat.secret = pat.pending_secret = None
            pat.status = PatStatus.REVOKING
            pat.rotation_id = pat.rotation_step = None
            pat.updated_at = self._clock.now()
            return self._store.save(pat)

        return on_conflict(attempt, what=f"the managed PAT '{pat_id}'")

    def revoke_upstream(self, pat_id: str, *, actor: str, bearer: str | None = None) -> PatRevoked:
        """DELETE every version at Azure DevOps; the PAT ends ``revoked`` or ``revoke_failed``."""
        pat = self._records.get(pat_id)
        outcomes = self._delete_versions(pat, bearer)
        failed = any(o.startswith("revoke_failed") for o in outcomes.values())

        def record() -> ManagedPat:
            latest = self._records.get(pat_id)
            latest.status = PatStatus.REVOKE_FAILED if failed else PatStatus.REVOKED
            latest.last_error = json.dumps(outcomes) if failed else None
            latest.updated_at = self._clock.now()
            return self._store.save(latest)

        # Stored first: the event and the audit row only ever report a status that was saved.
        pat = on_conflict(record, what=f"the managed PAT '{pat_id}'")
        data = {"type": "managed_pat", "id": pat_id, "app": pat.app, "user_id": pat.user_id,
                "outcomes": outcomes}  # fmt: skip
        self._events.publish(CREDENTIAL_REVOKED, f"pat:{pat_id}", data)
        outcome = AuditOutcome.FAILURE if failed else AuditOutcome.SUCCESS
        self._audit.record(actor, "pat.revoked", f"pat:{pat_id}", outcome=outcome, detail=data)
        return PatRevoked(pat_id, pat.status, outcomes)

    def _delete_versions(self, pat: ManagedPat, bearer: str | None) -> dict[str, str]:
        ids = [i for i in (pat.authorization_id, pat.pending_authorization_id,
                           pat.previous_authorization_id) if i]  # fmt: skip
        try:
            app = self._records.entra_app(pat.app)
            bearer = bearer or self._records.bearer(app, pat.user_id)
        except KeystewardError as exc:  # no usable token for the user any more
            return dict.fromkeys(ids, f"revoke_failed: {exc.error}")
        api = self._records.api(app)
        outcomes: dict[str, str] = {}
        for authorization_id in ids:
            try:
                gone = api.revoke(bearer, pat.organization, authorization_id)
                outcomes[authorization_id] = "revoked" if gone else "already_gone"
            except KeystewardError as exc:
                outcomes[authorization_id] = f"revoke_failed: {exc.error}"
        return outcomes

    # -- the nightly retry --------------------------------------------------------------------

    def unfinished(self, now: datetime) -> list[ManagedPat]:
        """PATs whose revocation failed upstream, or died half way (``revoking`` for too long)."""
        return [
            p for p in self._records.all()
            if p.status == PatStatus.REVOKE_FAILED
            or (p.status == PatStatus.REVOKING and now - p.updated_at > STALLED_AFTER)
        ]  # fmt: skip

    def retry(self, now: datetime, bearer_for: BearerFor) -> dict[str, int]:
        """Revoke again every unfinished PAT for which ``bearer_for(app, user)`` still gives the
        user's Entra token (from a live connection, or from a revoked one's stashed grant)."""
        counts = {"revoked": 0, "still_failing": 0, "no_bearer": 0}
        bearers: dict[tuple[str, str], str | None] = {}
        for pat in self.unfinished(now):
            key = (pat.app, pat.user_id)
            if key not in bearers:
                bearers[key] = bearer_for(*key)
            if bearers[key] is None:
                counts["no_bearer"] += 1
                continue
            # Its secrets went in the first attempt's local phase: only upstream is left.
            result = self.revoke_upstream(pat.id, actor="system:nightly", bearer=bearers[key])
            counts["still_failing" if result.failed else "revoked"] += 1
        return counts
