"""Managed PAT records: create one at Azure DevOps on a user's behalf, read it and its current
secret, extend it, list a connection's PATs and the user's whole inventory at Azure DevOps.

Creation stores an intent marker (the new PAT's display name) before the POST: if the answer is
lost (a crash, a timeout after Azure DevOps made it), the nightly clean-up finds that PAT by its
name and revokes it, so no PAT exists that Keysteward does not know about. A create Azure DevOps
answered with a refusal (an organisation policy, a bad scope) made nothing: its marker is removed
at once, so nothing is left for a listing or a later revocation to report.
"""

from __future__ import annotations

import contextlib
import uuid
from datetime import datetime, timedelta
from typing import Any

import requests

from shared.config.apps import App, Apps
from shared.foundation.clock import Clock
from shared.foundation.errors import Gone, InputError, KeystewardError, NotFound, PatError
from shared.foundation.secret import Secret
from shared.lifecycle.access_tokens import Tokens
from shared.lifecycle.caller_requests import NewPat, PatExtension
from shared.lifecycle.caller_requests import organization as organization_name
from shared.providers.pat_api import DEFAULT_API_URL, DEFAULT_API_VERSION, DEFAULT_ORG_URL, PatApi
from shared.storage.retry import on_conflict
from shared.storage.store import Store
from shared.storage.tables.audit import AuditOutcome
from shared.storage.tables.connections import ConnectionStore, Status
from shared.storage.tables.pats import ManagedPat, PatOfConnection, PatStatus, index_partition
from shared.trail.audit import AuditLog

UNFINISHED_AFTER = timedelta(minutes=10)


class ManagedPats:
    def __init__(
        self,
        *,
        store: Store,
        tokens: Tokens,
        connections: ConnectionStore,
        apps: Apps,
        session: requests.Session,
        audit: AuditLog,
        clock: Clock,
    ) -> None:
        self._store = store
        self._tokens = tokens
        self._connections = connections
        self._apps = apps
        self._session = session
        self._audit = audit
        self._clock = clock

    # -- what every PAT operation needs -----------------------------------------------------------

    def api(self, app: App) -> PatApi:
        return PatApi(
            self._session,
            api_url=app.pat_api_url or DEFAULT_API_URL,
            org_url=app.devops_url or DEFAULT_ORG_URL,
            api_version=app.pat_api_version or DEFAULT_API_VERSION,
        )

    def entra_app(self, app_id: str) -> App:
        app = self._apps.get(app_id)
        if app.provider.driver != "msal":
            raise InputError(f"app '{app_id}' is not an entra app: PATs are managed through Entra")
        return app

    def bearer(self, app: App, user_id: str) -> str:
        """The user's Entra access token for the PAT API (refreshed as needed)."""
        return self._tokens.token(app.id, user_id, min_ttl=120).access_token

    def bearer_or_none(self, app_id: str, user_id: str) -> str | None:
        """The user's Entra access token, if the grant still gives one."""
        try:
            return self.bearer(self.entra_app(app_id), user_id)
        except KeystewardError:
            return None

    def get(self, pat_id: str) -> ManagedPat:
        pat = self._store.read(ManagedPat, pat_id, "pat") if pat_id else None
        if pat is None:
            raise NotFound(f"no managed PAT '{pat_id}'")
        return pat

    def note(self, pat_id: str, error: str) -> None:
        """Keep the last error on the row for the operator (best effort: it is only a note)."""
        with contextlib.suppress(KeystewardError):
            pat = self.get(pat_id)
            pat.last_error = error
            self._store.save(pat)

    # -- managing ---------------------------------------------------------------------------------

    def create(
        self, app_id: str, user_id: str, request: NewPat, *, actor: str
    ) -> tuple[ManagedPat, Secret]:
        app = self.entra_app(app_id)
        connection = self._connections.get(app_id, user_id)
        if connection.status != Status.ACTIVE:
            raise Gone(f"the connection '{connection.resource}' is {connection.status.value}")
        now = self._clock.now()
        pat = ManagedPat(
            id=f"pat-{uuid.uuid4().hex[:20]}", app=app_id, user_id=user_id,
            organization=request.organization or organization_name(app.organization),
            display_name=request.display_name, scope=request.scope,
            lifetime_days=request.lifetime_days, all_orgs=request.all_orgs,
            rotate_before_days=request.rotate_before_days, auto_rotate=request.auto_rotate,
            status=PatStatus.CREATING, created_at=now, updated_at=now, created_by=actor,
        )  # fmt: skip
        return pat, self._post(app, pat, actor)

    def _post(self, app: App, pat: ManagedPat, actor: str) -> Secret:
        bearer = self.bearer(app, pat.user_id)  # no token, no POST: nothing to mark
        pat.intent_name = f"{pat.display_name} [ks {pat.id[4:12]}]"
        # The index and the intent first: a crash after the POST leaves a row that says so.
        index = self._store.save(PatOfConnection(index_partition(pat.app, pat.user_id), pat.id))
        self._store.create(pat)
        try:
            token, secret = self.api(app).create(
                bearer, pat.organization, display_name=pat.intent_name,
                scope=pat.scope, valid_to=pat.created_at + timedelta(days=pat.lifetime_days),
                all_orgs=pat.all_orgs,
            )  # fmt: skip
        except PatError as exc:
            if exc.status >= 500:  # no clear answer: it may exist; the clean-up will look
                self.note(pat.id, f"create: {exc.error}")
                raise
            # Azure DevOps answered "no" (a policy, a bad scope): it made nothing, keep nothing.
            self._store.remove(pat)
            self._store.remove(index)
            self._audit.record(actor, "pat.create_refused", f"{pat.app}/{pat.user_id}",
                               outcome=AuditOutcome.FAILURE, detail={
                                   "organization": pat.organization, "pat_error": exc.pat_error,
                                   "message": exc.message})  # fmt: skip
            raise
        except KeystewardError as exc:
            # Azure DevOps may have made it anyway (a lost answer): the nightly clean-up finds it
            # by its name and revokes it.
            self.note(pat.id, f"create: {exc.error}")
            raise
        pat.authorization_id, pat.secret, pat.valid_to = (
            token.authorization_id,
            secret,
            token.valid_to,
        )
        pat.status, pat.intent_name = PatStatus.ACTIVE, None
        self._store.save(pat)  # nobody else knows this new row yet: no race to lose
        self._audit.record(actor, "pat.created", f"pat:{pat.id}", detail={
            "app": pat.app, "user_id": pat.user_id, "organization": pat.organization,
            "authorization_id": token.authorization_id, "valid_to": token.valid_to.isoformat(),
        })  # fmt: skip
        return secret

    def secret(self, pat_id: str) -> dict[str, Any]:
        pat = self.get(pat_id)
        if pat.status == PatStatus.REVOKED_UPSTREAM:
            raise Gone(f"the managed PAT '{pat_id}' was revoked or expired at Azure DevOps, "
                       "outside Keysteward: its secret is destroyed")  # fmt: skip
        if pat.status == PatStatus.REVOKED or pat.secret is None:
            raise Gone(f"the managed PAT '{pat_id}' was revoked")
        valid_to = pat.valid_to.isoformat() if pat.valid_to else None
        return {
            "id": pat.id,
            "authorization_id": pat.authorization_id,
            "secret": pat.secret.reveal(),
            "valid_to": valid_to,
        }

    def extend(self, pat_id: str, request: PatExtension, *, actor: str) -> ManagedPat:
        pat = self.get(pat_id)
        if pat.status != PatStatus.ACTIVE or pat.authorization_id is None:
            raise Gone(f"the managed PAT '{pat_id}' is {pat.status.value}")
        days = request.extend_days
        app = self.entra_app(pat.app)
        wanted = self._clock.now() + timedelta(days=days)
        token = self.api(app).update(self.bearer(app, pat.user_id), pat.organization,
                                     pat.authorization_id, valid_to=wanted)  # fmt: skip

        def record() -> ManagedPat:
            latest = self.get(pat_id)
            latest.valid_to = token.valid_to  # read back: a policy may have clamped it
            latest.warned_days, latest.updated_at = [], self._clock.now()
            return self._store.save(latest)

        pat = on_conflict(record, what=f"the managed PAT '{pat_id}'")
        self._audit.record(actor, "pat.extended", f"pat:{pat_id}", detail={
            "app": pat.app, "user_id": pat.user_id,  # whose: audit reads are glob-filtered
            "requested_valid_to": wanted.isoformat(), "valid_to": token.valid_to.isoformat(),
            "clamped": token.valid_to < wanted - timedelta(minutes=1),
        })  # fmt: skip
        return pat

    # -- listing ----------------------------------------------------------------------------------

    def of_connection(self, app_id: str, user_id: str) -> list[ManagedPat]:
        found = []
        for row in self._store.entities_in(PatOfConnection, index_partition(app_id, user_id)):
            pat = self._store.read(ManagedPat, row.pat_id, "pat")
            if pat is not None:
                found.append(pat)
        return found

    def inventory(
        self, app_id: str, user_id: str, organization: str | None
    ) -> list[dict[str, Any]]:
        """The user's PATs at Azure DevOps (every page), managed ones marked."""
        app = self.entra_app(app_id)
        org = organization_name(organization or app.organization)
        managed = {
            p.authorization_id: p.id
            for p in self.of_connection(app_id, user_id)
            if p.authorization_id
            and p.status not in (PatStatus.REVOKED, PatStatus.REVOKED_UPSTREAM)
        }
        tokens = self.api(app).list(self.bearer(app, user_id), org, "active")
        return [
            {**t.public(), "managed": t.authorization_id in managed,
             "managed_id": managed.get(t.authorization_id)}
            for t in tokens
        ]  # fmt: skip

    def all(self) -> list[ManagedPat]:
        return list(self._store.select(ManagedPat, "RowKey eq @kind", {"kind": "pat"}))

    # -- the nightly clean-up -----------------------------------------------------------------

    def clean_up_creations(self, now: datetime) -> dict[str, int]:
        """Creations that never finished: a PAT Azure DevOps made but whose answer was lost is
        found by its intent name and revoked, and the record ends ``revoked``."""
        counts = {"abandoned": 0, "still_unfinished": 0}
        for pat in self.all():
            if pat.status == PatStatus.CREATING and now - pat.created_at > UNFINISHED_AFTER:
                try:
                    self._abandon(pat)
                    counts["abandoned"] += 1
                except KeystewardError as exc:
                    self.note(pat.id, f"clean-up: {exc.error}")
                    counts["still_unfinished"] += 1
        return counts

    def _abandon(self, pat: ManagedPat) -> None:
        app = self.entra_app(pat.app)
        bearer = self.bearer(app, pat.user_id)
        api = self.api(app)
        for token in api.list(bearer, pat.organization, "active"):
            if token.display_name == pat.intent_name:
                api.revoke(bearer, pat.organization, token.authorization_id)

        def record() -> ManagedPat:
            latest = self.get(pat.id)
            latest.status, latest.intent_name = PatStatus.REVOKED, None
            latest.last_error = "creation never finished: abandoned"
            return self._store.save(latest)

        on_conflict(record, what=f"the managed PAT '{pat.id}'")
