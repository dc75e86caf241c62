"""Managed Azure DevOps PATs: created, extended, revoked and rotated on a user's behalf.

A managed PAT belongs to one ``entra`` connection: every call to the PAT API carries that user's
Entra access token, taken through the token path (refreshed as needed). Keysteward keeps the
current secret sealed (``GET /pats/{id}/secret``), and during a rotation the ``pending`` one and
the id of the ``previous`` one, on the pattern of AWS Secrets Manager's staged rotation:

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

import contextlib
import json
import os
import re
import signal
import uuid
from datetime import datetime, timedelta
from typing import Any

import requests
from azure.storage.queue import QueueServiceClient

from shared.config.apps import App, Apps
from shared.foundation.clock import Clock
from shared.foundation.errors import (
    ConcurrencyConflict,
    Gone,
    InputError,
    KeystewardError,
    NotFound,
)
from shared.foundation.secret import Secret
from shared.lifecycle.access_tokens import Tokens
from shared.providers.pat_api import (
    DEFAULT_API_URL,
    DEFAULT_API_VERSION,
    DEFAULT_ORG_URL,
    PatApi,
    PatToken,
)
from shared.storage.clients import send
from shared.storage.lease import Leases
from shared.storage.retry import on_conflict
from shared.storage.store import Store
from shared.storage.tables.connections import Connection, ConnectionStore
from shared.storage.tables.pats import ManagedPat, PatOfConnection, PatStatus, index_partition
from shared.trail.audit import AuditLog
from shared.trail.events import CREDENTIAL_REVOKED, CREDENTIAL_ROTATED, EventPublisher

ROTATION_QUEUE = "rotation-requests"
MAX_LIFETIME_DAYS = 365
_ORG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,49}$")
_LEASE = timedelta(minutes=2)
TEST_TRIES = 5
STEPS = ("create", "test", "promote", "revoke")


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
        events: EventPublisher,
        queues: QueueServiceClient,
        clock: Clock,
        grace: timedelta,
        fault: str | None = None,
    ) -> None:
        self._store = store
        self._tokens = tokens
        self._connections = connections
        self._apps = apps
        self._session = session
        self._audit = audit
        self._events = events
        self._queues = queues
        self._clock = clock
        self._grace = grace
        self._fault = fault
        self._leases = Leases(store, clock)

    # -- plumbing -------------------------------------------------------------------------------

    def api(self, app: App) -> PatApi:
        return PatApi(
            self._session,
            api_url=app.pat_api_url or DEFAULT_API_URL,
            org_url=app.devops_url or DEFAULT_ORG_URL,
            api_version=app.pat_api_version or DEFAULT_API_VERSION,
        )

    def _entra_app(self, app_id: str) -> App:
        app = self._apps.get(app_id)
        if app.provider.driver != "msal":
            raise InputError(f"app '{app_id}' is not an entra app: PATs are managed through Entra")
        return app

    def _bearer(self, app: App, user_id: str) -> str:
        return self._tokens.token(app.id, user_id, min_ttl=120).access_token

    def _crash_point(self, name: str) -> None:
        """Test only (KEYSTEWARD_TEST_FAULT): die here as a killed worker would."""
        if self._fault == name:
            os.kill(os.getpid(), signal.SIGKILL)

    # -- managing ---------------------------------------------------------------------------------

    def create(
        self, app_id: str, user_id: str, body: dict[str, Any], *, actor: str
    ) -> tuple[ManagedPat, Secret]:
        app = self._entra_app(app_id)
        connection = self._connections.get(app_id, user_id)
        if connection.status != "active":
            raise Gone(f"the connection '{connection.resource}' is {connection.status.value}")
        organization = _organization(body.get("organization") or app.organization)
        display_name = _text(body.get("display_name"), "display_name", 100)
        scope = _text(body.get("scope"), "scope", 1000)
        lifetime = _int(body.get("lifetime_days", 30), "lifetime_days", 1, MAX_LIFETIME_DAYS)
        rotate_before = _int(
            body.get("rotate_before_days", min(7, lifetime)), "rotate_before_days", 1, lifetime
        )
        all_orgs, auto_rotate = body.get("all_orgs", False), body.get("auto_rotate", True)
        if not isinstance(all_orgs, bool) or not isinstance(auto_rotate, bool):
            raise InputError("'all_orgs' and 'auto_rotate' are true or false")
        now = self._clock.now()
        pat = ManagedPat(
            id=f"pat-{uuid.uuid4().hex[:20]}", app=app_id, user_id=user_id,
            organization=organization, display_name=display_name, scope=scope,
            lifetime_days=lifetime, all_orgs=all_orgs, rotate_before_days=rotate_before,
            auto_rotate=auto_rotate, status=PatStatus.CREATING, created_at=now, updated_at=now,
            created_by=actor,
        )  # fmt: skip
        pat.intent_name = f"{display_name} [ks {pat.id[4:12]}]"
        # The index and the intent first: a crash after the POST leaves a row that says so.
        self._store.save(PatOfConnection(index_partition(app_id, user_id), pat.id))
        self._store.create(pat)
        try:
            token, secret = self.api(app).create(
                self._bearer(app, user_id), organization, display_name=pat.intent_name,
                scope=scope, valid_to=now + timedelta(days=lifetime), all_orgs=all_orgs,
            )  # fmt: skip
        except KeystewardError as exc:
            # Azure DevOps may have made it anyway (a lost answer): the nightly repair finds it
            # by its name and revokes it.
            self._note(pat.id, f"create: {exc.error}")
            raise
        pat.authorization_id, pat.secret, pat.valid_to = (
            token.authorization_id,
            secret,
            token.valid_to,
        )
        pat.status, pat.intent_name = PatStatus.ACTIVE, None
        self._store.save(pat)
        self._audit.record(actor, "pat.created", f"pat:{pat.id}", detail={
            "app": app_id, "user_id": user_id, "organization": organization,
            "authorization_id": token.authorization_id, "valid_to": token.valid_to.isoformat(),
        })  # fmt: skip
        return pat, secret

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
        app = self._entra_app(app_id)
        org = _organization(organization or app.organization)
        managed = {
            p.authorization_id: p.id
            for p in self.of_connection(app_id, user_id)
            if p.authorization_id and p.status != PatStatus.REVOKED
        }
        tokens = self.api(app).list(self._bearer(app, user_id), org, "active")
        return [
            {**t.public(), "managed": t.authorization_id in managed,
             "managed_id": managed.get(t.authorization_id)}
            for t in tokens
        ]  # fmt: skip

    def get(self, pat_id: str) -> ManagedPat:
        pat = self._store.read(ManagedPat, pat_id, "pat") if pat_id else None
        if pat is None:
            raise NotFound(f"no managed PAT '{pat_id}'")
        return pat

    def secret(self, pat_id: str) -> dict[str, Any]:
        pat = self.get(pat_id)
        if pat.status == PatStatus.REVOKED or pat.secret is None:
            raise Gone(f"the managed PAT '{pat_id}' was revoked")
        valid_to = pat.valid_to.isoformat() if pat.valid_to else None
        return {
            "id": pat.id,
            "authorization_id": pat.authorization_id,
            "secret": pat.secret.reveal(),
            "valid_to": valid_to,
        }

    def extend(self, pat_id: str, body: dict[str, Any], *, actor: str) -> ManagedPat:
        pat = self.get(pat_id)
        if pat.status != PatStatus.ACTIVE or pat.authorization_id is None:
            raise Gone(f"the managed PAT '{pat_id}' is {pat.status.value}")
        days = _int(body.get("extend_days"), "extend_days", 1, MAX_LIFETIME_DAYS)
        app = self._entra_app(pat.app)
        wanted = self._clock.now() + timedelta(days=days)
        token = self.api(app).update(self._bearer(app, pat.user_id), pat.organization,
                                     pat.authorization_id, valid_to=wanted)  # fmt: skip
        for attempt in range(5):
            pat.valid_to = token.valid_to  # read back: a policy may have clamped it
            pat.warned_days, pat.updated_at = [], self._clock.now()
            try:
                self._store.save(pat)
                break
            except ConcurrencyConflict:
                if attempt == 4:
                    raise
                pat = self.get(pat_id)
        self._audit.record(actor, "pat.extended", f"pat:{pat_id}", detail={
            "requested_valid_to": wanted.isoformat(), "valid_to": token.valid_to.isoformat(),
            "clamped": token.valid_to < wanted - timedelta(minutes=1),
        })  # fmt: skip
        return pat

    def bearer_or_none(self, app_id: str, user_id: str) -> str | None:
        """The user's Entra access token, if the grant still gives one."""
        try:
            return self._bearer(self._entra_app(app_id), user_id)
        except KeystewardError:
            return None

    def revoke(self, pat_id: str, *, actor: str, bearer: str | None = None) -> dict[str, Any]:
        """Destroy the stored secrets, then DELETE every version (current, pending, previous);
        ``bearer`` when the caller already holds the user's token (a revocation in progress)."""
        self.destroy_locally(pat_id)
        return self.revoke_upstream(pat_id, actor=actor, bearer=bearer)

    def destroy_locally(self, pat_id: str) -> ManagedPat:
        """Wipe the stored secrets: from here on the PAT is never served again."""

        def attempt() -> ManagedPat:
            pat = self.get(pat_id)
            if pat.status in (PatStatus.REVOKED, PatStatus.REVOKING) and pat.secret is None:
                return pat
            pat.secret = pat.pending_secret = None
            pat.status = PatStatus.REVOKING
            pat.rotation_id = pat.rotation_step = None
            pat.updated_at = self._clock.now()
            return self._store.save(pat)

        return on_conflict(attempt, what=f"the managed PAT '{pat_id}'")

    def revoke_upstream(
        self, pat_id: str, *, actor: str, bearer: str | None = None
    ) -> dict[str, Any]:
        """DELETE every version at Azure DevOps; the PAT ends ``revoked`` or ``revoke_failed``."""
        pat = self.get(pat_id)
        ids = [i for i in (pat.authorization_id, pat.pending_authorization_id,
                           pat.previous_authorization_id) if i]  # fmt: skip
        outcomes: dict[str, str] = {}
        failed = False
        try:
            app = self._entra_app(pat.app)
            bearer = bearer or self._bearer(app, pat.user_id)
            api = self.api(app)
            for authorization_id in ids:
                try:
                    outcomes[authorization_id] = (
                        "revoked"
                        if api.revoke(bearer, pat.organization, authorization_id)
                        else "already_gone"
                    )
                except KeystewardError as exc:
                    outcomes[authorization_id] = f"revoke_failed: {exc.error}"
                    failed = True
        except KeystewardError as exc:  # no usable token for the user any more
            outcomes = dict.fromkeys(ids, f"revoke_failed: {exc.error}")
            failed = True

        def record() -> ManagedPat:
            latest = self.get(pat_id)
            latest.status = PatStatus.REVOKE_FAILED if failed else PatStatus.REVOKED
            latest.last_error = json.dumps(outcomes) if failed else None
            return self._store.save(latest)

        # Stored first: the event and the audit row only ever report a status that was saved.
        pat = on_conflict(record, what=f"the managed PAT '{pat_id}'")
        data = {"type": "managed_pat", "id": pat_id, "app": pat.app, "user_id": pat.user_id,
                "outcomes": outcomes}  # fmt: skip
        self._events.publish(CREDENTIAL_REVOKED, f"pat:{pat_id}", data)
        self._audit.record(actor, "pat.revoked", f"pat:{pat_id}",
                           outcome="failure" if failed else "success", detail=data)  # fmt: skip
        return {"id": pat_id, "status": pat.status.value, "upstream": outcomes}

    # -- rotation ---------------------------------------------------------------------------------

    def start_rotation(self, pat_id: str, *, actor: str, reason: str) -> tuple[ManagedPat, bool]:
        """Begin a rotation, or join the one in progress (never two at once)."""
        for _ in range(5):
            pat = self.get(pat_id)
            if pat.status != PatStatus.ACTIVE:
                raise Gone(f"the managed PAT '{pat_id}' is {pat.status.value}")
            if pat.rotation_id:
                # Join it, and nudge it: its next step runs now if nothing holds it (a message
                # lost to a poison queue would otherwise leave it stuck).
                self.enqueue(pat.id, pat.rotation_id)
                return pat, False
            pat.rotation_id = f"rot-{uuid.uuid4().hex[:16]}"
            pat.rotation_step, pat.rotation_started_at = "create", self._clock.now()
            pat.rotation_tests, pat.last_error = 0, None
            try:
                self._store.save(pat)
            except ConcurrencyConflict:
                continue
            self.enqueue(pat.id, pat.rotation_id)
            self._audit.record(actor, "pat.rotation_started", f"pat:{pat_id}",
                               detail={"rotation": pat.rotation_id, "reason": reason})  # fmt: skip
            return pat, True
        raise ConcurrencyConflict(f"the managed PAT '{pat_id}' kept changing")

    def enqueue(self, pat_id: str, rotation_id: str, delay: float = 0) -> None:
        message = json.dumps({"pat_id": pat_id, "rotation_id": rotation_id})
        send(self._queues, ROTATION_QUEUE, message, delay)

    def rotate(self, pat_id: str, rotation_id: str) -> float | None:
        """Run the rotation as far as it can go now: None when finished (or not ours any more),
        else the seconds to wait before the next attempt."""
        owner = uuid.uuid4().hex
        if self._leases.acquire(ManagedPat.TABLE, pat_id, "pat", owner=owner, ttl=_LEASE) is None:
            return 10.0  # another worker runs this rotation now
        try:
            return self._run(pat_id, rotation_id)
        finally:
            self._release(pat_id, owner)

    def _run(self, pat_id: str, rotation_id: str) -> float | None:  # noqa: PLR0911 - a step each
        for _ in range(20):
            pat = self.get(pat_id)
            if pat.rotation_id != rotation_id:
                return None
            if pat.event_due:
                self._announce(pat)
                continue
            step = pat.rotation_step
            try:
                if step == "create":
                    self._create_pending(pat)
                    self._crash_point("after-create")
                elif step == "test":
                    wait = self._test(pat)
                    if wait is not None:
                        return wait
                    self._crash_point("after-test")
                elif step == "promote":
                    self._promote(pat)
                    self._crash_point("after-promote")
                elif step == "revoke":
                    left = (pat.previous_revoke_after or self._clock.now()) - self._clock.now()
                    if left.total_seconds() > 0:
                        return left.total_seconds()
                    self._revoke_previous(pat)
                    self._crash_point("after-revoke")
                    return None
                else:
                    return None
            except ConcurrencyConflict:
                continue  # re-read and carry on from what is stored
            except KeystewardError as exc:
                self._note(pat_id, f"{step}: {exc.error}: {exc.message[:200]}")
                return 60.0 if exc.status >= 500 or exc.status == 424 else 300.0
        return 1.0

    def _create_pending(self, pat: ManagedPat) -> None:
        app = self._entra_app(pat.app)
        bearer = self._bearer(app, pat.user_id)
        api = self.api(app)
        if pat.intent_name:
            # A POST may have happened before a crash: its secret is lost, so revoke it.
            for token in api.list(bearer, pat.organization, "active"):
                if token.display_name == pat.intent_name and token.authorization_id not in (
                    pat.authorization_id,
                    pat.previous_authorization_id,
                ):
                    api.revoke(bearer, pat.organization, token.authorization_id)
                    detail = {"authorization_id": token.authorization_id}
                    self._audit.record(
                        "system:rotation", "pat.orphan_revoked", f"pat:{pat.id}", detail=detail
                    )
        assert pat.rotation_id is not None
        pat.intent_name = f"{pat.display_name} [ks {pat.rotation_id[4:12]}-{uuid.uuid4().hex[:4]}]"
        self._store.save(pat)  # the intent marker, before the POST
        self._crash_point("before-create")
        token, secret = api.create(
            bearer, pat.organization, display_name=pat.intent_name, scope=pat.scope,
            valid_to=self._clock.now() + timedelta(days=pat.lifetime_days), all_orgs=pat.all_orgs,
        )  # fmt: skip
        self._crash_point("created")  # posted, not stored: the orphan case
        self._store_pending(pat, token, secret)

    def _store_pending(self, pat: ManagedPat, token: PatToken, secret: Secret) -> None:
        pat.pending_authorization_id, pat.pending_secret = token.authorization_id, secret
        pat.pending_valid_to = token.valid_to
        pat.intent_name, pat.rotation_step, pat.updated_at = None, "test", self._clock.now()
        self._store.save(pat)

    def _test(self, pat: ManagedPat) -> float | None:
        assert pat.pending_secret is not None
        app = self._entra_app(pat.app)
        if self.api(app).works(pat.pending_secret, pat.organization):
            pat.rotation_step = "promote"
            self._store.save(pat)
            return None
        pat.rotation_tests += 1
        if pat.rotation_tests < TEST_TRIES:
            self._store.save(pat)
            return 5.0 * pat.rotation_tests  # a new PAT can take a moment to be honoured
        # It never worked: give it back and keep the current one.
        bearer = self._bearer(app, pat.user_id)
        if pat.pending_authorization_id:
            self.api(app).revoke(bearer, pat.organization, pat.pending_authorization_id)
        pat.pending_authorization_id = pat.pending_secret = pat.pending_valid_to = None
        pat.rotation_id = pat.rotation_step = None
        pat.last_error = "rotation abandoned: the new PAT never authenticated"
        self._store.save(pat)
        self._audit.record("system:rotation", "pat.rotation_failed", f"pat:{pat.id}",
                           outcome="failure", detail={"reason": pat.last_error})  # fmt: skip
        return None

    def _promote(self, pat: ManagedPat) -> None:
        now = self._clock.now()
        pat.previous_authorization_id = pat.authorization_id
        pat.previous_revoke_after = now + self._grace
        pat.authorization_id, pat.secret = pat.pending_authorization_id, pat.pending_secret
        pat.valid_to = pat.pending_valid_to
        pat.pending_authorization_id = pat.pending_secret = pat.pending_valid_to = None
        pat.rotation_step, pat.rotated_at, pat.rotations = "revoke", now, pat.rotations + 1
        pat.warned_days, pat.event_due, pat.updated_at = [], True, now
        self._store.save(pat)  # one write: the promotion and the duty to announce it
        self._crash_point("promoted")
        self._announce(pat)

    def _announce(self, pat: ManagedPat) -> None:
        data = {"type": "managed_pat", "id": pat.id, "app": pat.app, "user_id": pat.user_id,
                "organization": pat.organization, "authorization_id": pat.authorization_id,
                "previous_authorization_id": pat.previous_authorization_id,
                "valid_to": pat.valid_to.isoformat() if pat.valid_to else None,
                "rotation": pat.rotation_id}  # fmt: skip
        self._events.publish(CREDENTIAL_ROTATED, f"pat:{pat.id}", data)
        self._audit.record("system:rotation", "pat.rotated", f"pat:{pat.id}", detail=data)
        pat.event_due = False
        self._store.save(pat)

    def _revoke_previous(self, pat: ManagedPat) -> None:
        if pat.previous_authorization_id:
            app = self._entra_app(pat.app)
            self.api(app).revoke(self._bearer(app, pat.user_id), pat.organization,
                                 pat.previous_authorization_id)  # fmt: skip
        revoked = pat.previous_authorization_id
        pat.previous_authorization_id = pat.previous_revoke_after = None
        pat.rotation_id = pat.rotation_step = None
        pat.updated_at = self._clock.now()
        self._store.save(pat)
        self._audit.record("system:rotation", "pat.previous_revoked", f"pat:{pat.id}",
                           detail={"authorization_id": revoked})  # fmt: skip

    def _note(self, pat_id: str, error: str) -> None:
        with contextlib.suppress(KeystewardError):
            pat = self.get(pat_id)
            pat.last_error = error
            self._store.save(pat)

    def _release(self, pat_id: str, owner: str) -> None:
        for _ in range(5):
            pat = self._store.read(ManagedPat, pat_id, "pat")
            if pat is None or pat.lease_owner != owner:
                return
            pat.lease_owner = pat.lease_expires_at = None
            try:
                self._store.save(pat)
                return
            except ConcurrencyConflict:
                continue

    # -- for sweeps -------------------------------------------------------------------------

    def failed(self) -> list[ManagedPat]:
        return [p for p in self.all() if p.status == PatStatus.REVOKE_FAILED]

    def repair(self, now: datetime) -> dict[str, int]:
        """The nightly second chance: revoke again what failed to revoke while the user's grant
        still gives a token (revoked connections are the revoker's), and clean up creations
        that never finished (a PAT Azure DevOps made but whose answer was lost is revoked)."""
        counts = {"revoked": 0, "still_failing": 0, "abandoned": 0}
        for pat in self.all():
            stalled = pat.status == PatStatus.REVOKING and now - pat.updated_at > timedelta(
                minutes=10
            )
            if pat.status == PatStatus.REVOKE_FAILED or stalled:
                connection = self._connections.find(pat.app, pat.user_id)
                if connection is None or connection.status != "active":
                    continue
                result = self.revoke_upstream(pat.id, actor="system:nightly")
                counts["revoked" if result["status"] == "revoked" else "still_failing"] += 1
            elif pat.status == PatStatus.CREATING and now - pat.created_at > timedelta(minutes=10):
                with contextlib.suppress(KeystewardError):
                    self._abandon(pat)
                    counts["abandoned"] += 1
        return counts

    def _abandon(self, pat: ManagedPat) -> None:
        app = self._entra_app(pat.app)
        bearer = self._bearer(app, pat.user_id)
        api = self.api(app)
        for token in api.list(bearer, pat.organization, "active"):
            if token.display_name == pat.intent_name:
                api.revoke(bearer, pat.organization, token.authorization_id)
        pat.status, pat.intent_name = PatStatus.REVOKED, None
        pat.last_error = "creation never finished: abandoned"
        self._store.save(pat)

    def all(self) -> list[ManagedPat]:
        return list(self._store.select(ManagedPat, "RowKey eq @kind", {"kind": "pat"}))


def _organization(value: Any) -> str:
    if not isinstance(value, str) or not _ORG.match(value):
        raise InputError("'organization' is required: the Azure DevOps organisation name")
    return value


def _text(value: Any, name: str, limit: int) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise InputError(f"'{name}' is required: text of at most {limit} characters")
    return value.strip()


def _int(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InputError(f"'{name}' must be a whole number from {low} to {high}")
    return value


__all__ = ["ROTATION_QUEUE", "STEPS", "Connection", "ManagedPat", "ManagedPats", "PatStatus"]
