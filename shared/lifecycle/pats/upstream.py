"""Managed PATs follow what Azure DevOps holds (providers.md §1, §8).

A user can revoke a PAT in the Azure DevOps UI, an administrator through the Token Admin API, and
an organisation policy can shorten its ``validTo``; none of them tells Keysteward. They are found
on ``GET /api/pats/{id}`` (one Get by authorizationId) and by the nightly sweep (one paged list
of active PATs per user and organisation, not one Get per PAT):

- gone (not found, a null ``patToken``, absent from the active list) or showing a ``validTo`` in
  the past → ``revoked_upstream``: every stored secret destroyed, the rest of a rotation (its
  pending or previous PAT, ours) revoked, ``credential.revoked`` with ``reason: "upstream"``;
- another ``validTo`` or scope → stored, and announced as ``pat.changed``.

How Azure DevOps reads back a revoked PAT is UNCONFIRMED, so each of those answers is taken.
Only the current version is compared: a previous PAT our own rotation revoked is not news. Every
write is conditional on the row read before asking Azure DevOps, and a row leased by a running
rotation is left alone: a PAT that moved meanwhile (promoted, extended, revoked by us) is judged
again next time, never from a stale answer.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from shared.foundation.clock import Clock
from shared.foundation.errors import ConcurrencyConflict, KeystewardError, PatError
from shared.lifecycle.pats.records import ManagedPats
from shared.providers.pat_api import ORGANIZATION_NOT_FOUND, PatApi, PatToken
from shared.storage.store import Store
from shared.storage.tables.pats import ManagedPat, PatStatus
from shared.trail.audit import AuditLog
from shared.trail.events import CREDENTIAL_REVOKED, PAT_CHANGED, EventPublisher

log = logging.getLogger("keysteward.pats")
ACTOR = "system:upstream"
# Azure DevOps writes validTo with up to 7 fractional digits; a rounding is no change.
_SAME_TIME = timedelta(seconds=1)


class UpstreamPats:
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

    def check(self, pat_id: str) -> ManagedPat:
        """The PAT as Azure DevOps holds it now; what is stored when Azure DevOps (or the user's
        grant) cannot answer: a read never fails because the provider is away."""
        pat = self._records.get(pat_id)
        if not self._checkable(pat):
            return pat
        assert pat.authorization_id is not None
        try:
            app = self._records.entra_app(pat.app)
            bearer, api = self._records.bearer(app, pat.user_id), self._records.api(app)
            token = self._look_up(api, bearer, pat.organization, pat.authorization_id)
        except KeystewardError as exc:
            log.info("pat %s: Azure DevOps not asked (%s); the stored state stands", pat.id,
                     exc.error)  # fmt: skip
            return pat
        self._follow(pat, token, api, bearer)
        return self._records.get(pat_id)

    def sweep(self) -> dict[str, int]:
        """Every active managed PAT against one paged list per user and organisation."""
        counts = {"unchanged": 0, "changed": 0, "revoked_upstream": 0, "moved": 0,
                  "not_checked": 0}  # fmt: skip
        groups: dict[tuple[str, str, str], list[ManagedPat]] = {}
        for pat in self._records.all():
            if self._checkable(pat):
                groups.setdefault((pat.app, pat.user_id, pat.organization), []).append(pat)
        for (app_id, user_id, organization), pats in groups.items():
            try:
                app = self._records.entra_app(app_id)
                bearer, api = self._records.bearer(app, user_id), self._records.api(app)
                listed = {t.authorization_id: t for t in api.list(bearer, organization, "active")}
            except KeystewardError as exc:
                log.warning("nightly: PATs of %s/%s in %s not checked (%s)", app_id, user_id,
                            organization, exc.error)  # fmt: skip
                counts["not_checked"] += len(pats)
                continue
            for pat in pats:
                assert pat.authorization_id is not None
                counts[self._follow(pat, listed.get(pat.authorization_id), api, bearer)] += 1
        return counts

    # -- comparing ------------------------------------------------------------------------------

    def _checkable(self, pat: ManagedPat) -> bool:
        leased = pat.lease_expires_at is not None and pat.lease_expires_at > self._clock.now()
        return pat.status == PatStatus.ACTIVE and pat.authorization_id is not None and not leased

    @staticmethod
    def _look_up(
        api: PatApi, bearer: str, organization: str, authorization_id: str
    ) -> PatToken | None:
        try:
            return api.lookup(bearer, organization, authorization_id)
        except PatError as exc:
            if exc.pat_error != ORGANIZATION_NOT_FOUND:
                raise
        # A plain 404 may speak of the organisation, not the PAT: the active list decides (and
        # fails in turn when the organisation really is unknown).
        listed = api.list(bearer, organization, "active")
        return next((t for t in listed if t.authorization_id == authorization_id), None)

    def _follow(self, pat: ManagedPat, token: PatToken | None, api: PatApi, bearer: str) -> str:
        now = self._clock.now()
        if token is None or token.valid_to <= now:
            # What is gone from view before its stored validTo was revoked; after it, expired.
            ended = token is None and (pat.valid_to is None or pat.valid_to > now)
            state = "revoked" if ended else "expired"
            return self._revoked_upstream(pat, state, api, bearer)
        changes = _changes(pat, token)
        if not changes:
            return "unchanged"
        if "valid_to" in changes:
            pat.valid_to, pat.warned_days = token.valid_to, []  # warnings count from the new date
        pat.scope, pat.updated_at = token.scope or pat.scope, now
        try:
            self._store.save(pat)  # only if the row is still the one compared
        except ConcurrencyConflict:
            return "moved"
        data = {**_about(pat), "changes": changes}
        self._events.publish(PAT_CHANGED, f"pat:{pat.id}", data)
        self._audit.record(ACTOR, "pat.changed_upstream", f"pat:{pat.id}", detail=data)
        return "changed"

    def _revoked_upstream(self, pat: ManagedPat, state: str, api: PatApi, bearer: str) -> str:
        ours = [i for i in (pat.pending_authorization_id, pat.previous_authorization_id) if i]
        pat.status, pat.secret, pat.pending_secret = PatStatus.REVOKED_UPSTREAM, None, None
        pat.pending_authorization_id = pat.pending_valid_to = pat.intent_name = None
        pat.previous_authorization_id = pat.previous_revoke_after = None
        pat.rotation_id = pat.rotation_step = None
        pat.last_error = f"{state} at Azure DevOps, outside Keysteward"
        pat.updated_at = self._clock.now()
        try:
            self._store.save(pat)  # the secrets go first: never served again from here on
        except ConcurrencyConflict:
            return "moved"
        outcomes: dict[str, str] = {}
        for authorization_id in ours:  # what the rotation in flight made: ours to give back
            try:
                gone = api.revoke(bearer, pat.organization, authorization_id)
                outcomes[authorization_id] = "revoked" if gone else "already_gone"
            except KeystewardError as exc:
                outcomes[authorization_id] = f"revoke_failed: {exc.error}"
        data = {**_about(pat), "reason": "upstream", "upstream_state": state,
                "outcomes": outcomes}  # fmt: skip
        self._events.publish(CREDENTIAL_REVOKED, f"pat:{pat.id}", data)
        self._audit.record(ACTOR, "pat.revoked_upstream", f"pat:{pat.id}", detail=data)
        return "revoked_upstream"


def _changes(pat: ManagedPat, token: PatToken) -> dict[str, dict[str, str | None]]:
    changes: dict[str, dict[str, str | None]] = {}
    if pat.valid_to is None or abs(token.valid_to - pat.valid_to) > _SAME_TIME:
        changes["valid_to"] = {"from": _iso(pat.valid_to), "to": _iso(token.valid_to)}
    if token.scope and set(token.scope.split()) != set(pat.scope.split()):
        changes["scope"] = {"from": pat.scope, "to": token.scope}
    return changes


def _about(pat: ManagedPat) -> dict[str, Any]:
    return {"type": "managed_pat", "id": pat.id, "app": pat.app, "user_id": pat.user_id,
            "organization": pat.organization, "authorization_id": pat.authorization_id,
            "valid_to": _iso(pat.valid_to), "scope": pat.scope}  # fmt: skip


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when else None
