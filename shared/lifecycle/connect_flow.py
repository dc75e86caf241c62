"""The connect flow: a single-use link, the provider's consent page, and the callback that
stores the grant.

1. ``create_session`` (an API caller) → a link valid ten minutes, usable once.
2. ``start`` (the user's browser opens the link) → a fresh state (256 bits) and, where the
   provider supports it, PKCE S256; the state row keeps what the callback needs, sealed.
3. ``callback`` → the state is checked (known, unexpired, for this app) and consumed by a
   conditional delete, so a replay finds nothing; the code is exchanged; the connection is stored.

Every failure stores nothing, is audited (junk anyone can send only counted: ``anonymous_audit``),
and surfaces as ``CallbackFailed`` with a status and a message fit for the user's browser. Links
and states are stored only as SHA-256 digests, and indexed by the minute they expire so that
``expired_sessions`` deletes those left unused.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from shared.config.apps import App, Apps
from shared.foundation.clock import Clock
from shared.foundation.errors import (
    AlreadyExists,
    CallbackFailed,
    ClientInvalid,
    ConcurrencyConflict,
    Contended,
    InputError,
    NotFound,
    ProviderError,
)
from shared.foundation.secret import Secret
from shared.lifecycle.anonymous_audit import ConnectFailures
from shared.lifecycle.app_health import AppHealth
from shared.lifecycle.browser_binding import WRONG_BROWSER, WRONG_BROWSER_MESSAGE, BrowserBinding
from shared.lifecycle.caller_requests import NewLink
from shared.lifecycle.expired_sessions import ExpiredSessions
from shared.lifecycle.grant_checks import (
    changed_account,
    identity_changed,
    insufficient_scope,
    missing_scopes,
    provider_error,
    wrong_account,
)
from shared.lifecycle.grants import take_grant
from shared.lifecycle.refresh_policy import due_at
from shared.lifecycle.return_urls import return_allowed, return_url
from shared.lifecycle.user_ids import UserIds
from shared.providers.drivers import Drivers
from shared.providers.identity import Identity
from shared.providers.oauth import Grant, new_state
from shared.storage.retry import on_conflict
from shared.storage.store import Store
from shared.storage.tables.connect_links import ConnectLink, OAuthState, digest
from shared.storage.tables.connections import Connection, ConnectionStore, Status
from shared.storage.tables.schedule import Schedule
from shared.trail.audit import AuditLog
from shared.trail.events import (
    CONNECTION_CREATED,
    CONNECTION_RECONNECTED,
    CONNECTION_RECOVERED,
    EventPublisher,
)

LINK_TTL = timedelta(minutes=10)
STATE_TTL = timedelta(minutes=10)


@dataclass(frozen=True)
class Started:
    """Where to send the browser, and the cookie that binds the sign-in to it."""

    url: str
    set_cookie: str


@dataclass(frozen=True)
class Connected:
    connection: Connection
    event: str | None
    redirect_to: str | None
    identity_changed: bool = False


class Connect:
    def __init__(
        self,
        *,
        store: Store,
        apps: Apps,
        drivers: Drivers,
        audit: AuditLog,
        events: EventPublisher,
        clock: Clock,
        public_url: str,
        allowed_return_urls: tuple[str, ...],
        schedule: Schedule,
        user_ids: UserIds,
        app_health: AppHealth,
    ) -> None:
        self._app_health = app_health
        self._schedule = schedule
        self._user_ids = user_ids
        self._store = store
        self._connections = ConnectionStore(store)
        self._apps = apps
        self._drivers = drivers
        self._audit = audit
        self._failures = ConnectFailures(audit)
        self._expiry = ExpiredSessions(store, clock)
        self._events = events
        self._clock = clock
        self._public_url = public_url.rstrip("/")
        self._allowed = allowed_return_urls
        self.binding = BrowserBinding(public_url, STATE_TTL)

    def redirect_uri(self, app_id: str) -> str:
        return f"{self._public_url}/api/oauth/{app_id}/callback"

    # -- 1. the link ----------------------------------------------------------------------------

    def create_link(self, request: NewLink, *, actor: str) -> dict[str, Any]:
        app_id, return_to = request.app, request.return_to
        if app_id not in self._apps:
            raise InputError(f"'app' must name a configured app, not {app_id!r}")
        # The first link names the user for good; any later spelling connects the same user.
        user = self._user_ids.register(request.user_id)
        token = secrets.token_urlsafe(32)
        now = self._clock.now()
        link = ConnectLink(
            digest=digest(token),
            app=app_id,
            user_id=user,
            created_by=actor,
            created_at=now,
            expires_at=now + LINK_TTL,
            return_to=return_to,
            allow_identity_change=request.allow_identity_change,
        )
        self._expiry.index(link)  # first: a link is never stored where the sweep cannot find it
        self._store.create(link)
        self._audit.record(actor, "connect.link_created", f"{app_id}/{user}")
        return {
            "url": f"{self._public_url}/api/connect/{token}",
            "expires_at": link.expires_at.isoformat(),
            "return_to_allowed": return_to is None or return_allowed(return_to, self._allowed),
        }

    # -- 2. the redirect to the provider ---------------------------------------------------------

    def start(self, token: str) -> Started:
        now = self._clock.now()
        link = self._store.read(ConnectLink, digest(token), "link") if token else None
        if link is None:
            unknown = "This connect link is unknown or was used."
            raise self._failures.record(CallbackFailed(404, "unknown_link", unknown), "?/?")
        if link.expires_at <= now:
            self._store.remove(link)
            raise CallbackFailed(410, "expired_link", "This connect link has expired.")
        app = self._app_for(link.app)
        state = new_state()
        redirect_uri = self.redirect_uri(app.id)
        try:
            request = self._drivers.for_app(app).begin(app, redirect_uri, state)
        except ProviderError as exc:
            raise CallbackFailed(
                502,
                "provider_unavailable",
                f"{app.display_name} could not be "
                f"reached to start the sign-in ({exc.oauth_error}).",
            ) from None
        binding = self.binding.new(state)
        pending = OAuthState(
            browser=binding.digest,
            digest=digest(state),
            app=app.id,
            user_id=link.user_id,
            redirect_uri=redirect_uri,
            pending=Secret(json.dumps(request.pending)),
            created_by=link.created_by,
            created_at=now,
            expires_at=now + STATE_TTL,
            return_to=link.return_to,
            allow_identity_change=link.allow_identity_change,
        )
        self._expiry.index(pending)
        self._store.create(pending)
        try:
            self._store.remove(link)  # single use: whoever deletes it first wins
        except ConcurrencyConflict:
            self._store.remove(pending)
            raise CallbackFailed(
                404, "unknown_link", "This connect link was already used."
            ) from None
        return Started(request.url, binding.set_cookie)

    # -- 3. the callback -------------------------------------------------------------------------

    def callback(
        self, app_id: str, params: dict[str, str], cookies: Mapping[str, str]
    ) -> Connected:
        # {app} comes from anyone's URL: only a configured app's id goes into the audit subject
        # (the audit trail refuses oversized or secret-looking ones).
        subject = f"{app_id}/?" if app_id in self._apps else "?/?"
        try:
            state = self._find_state(params.get("state"))
            if state.app == app_id:
                subject = f"{app_id}/{state.user_id}"  # a refusal below is about this user
            self._spend_state(state, app_id, params.get("state") or "", cookies)
            app = self._app_for(app_id)
            provider_error(app, params)
            grant = self._exchange(app, state, params)
            missing = missing_scopes(app, grant)
            refused = insufficient_scope(app, missing) if missing else None
            refused = refused or wrong_account(app, grant, state.user_id)
            if refused:
                self._discard(app, grant)
                raise refused
            connected = self._store_connection(app, state, grant)
        except CallbackFailed as failed:
            self._failures.record(failed, subject)
            raise
        self._announce(app, subject, connected)
        return connected

    def _announce(self, app: App, subject: str, connected: Connected) -> None:
        connection = connected.connection
        self._audit.record(
            "user:browser",
            "connection.connected",
            subject,
            detail={"scopes": connection.scopes, "event": connected.event,
                    "identity_changed": connected.identity_changed},
        )  # fmt: skip
        if connected.event:
            self._events.publish(
                connected.event,
                subject,
                {
                    "app": app.id,
                    "user_id": connection.user_id,
                    "provider": app.provider.name,
                    "scopes": connection.scopes,
                    "identity": connection.identity,
                    "identity_changed": connected.identity_changed,
                },
            )

    def _find_state(self, state: str | None) -> OAuthState:
        if not state:
            raise CallbackFailed(
                400,
                "missing_state",
                "The answer from the sign-in page has no "
                "state: start again from your connect link.",
            )
        row = self._store.read(OAuthState, digest(state), "state")
        if row is None:
            raise CallbackFailed(
                400,
                "unknown_state",
                "This sign-in is unknown, expired or was "
                "already completed: start again from a new connect link.",
            )
        return row

    def _spend_state(
        self, row: OAuthState, app_id: str, state: str, cookies: Mapping[str, str]
    ) -> None:
        # Checked before the state is spent: a wrong app or a wrong browser must not stop the
        # right browser from finishing.
        if row.app != app_id:
            raise CallbackFailed(400, "wrong_app", "This sign-in was started for another app.")
        if not self.binding.presented(state, row.browser, cookies):
            raise CallbackFailed(400, WRONG_BROWSER, WRONG_BROWSER_MESSAGE)
        try:
            self._store.remove(row)  # single use: a replay finds nothing
        except ConcurrencyConflict:
            raise CallbackFailed(
                400, "replayed_state", "This sign-in was already completed."
            ) from None
        if row.expires_at <= self._clock.now():
            raise CallbackFailed(
                400,
                "expired_state",
                "This sign-in took too long and expired: start again from a new connect link.",
            )

    def _exchange(self, app: App, state: OAuthState, params: dict[str, str]) -> Grant:
        if not params.get("code"):
            raise CallbackFailed(
                400, "missing_code", "The answer from the sign-in page has no code."
            )
        driver = self._drivers.for_app(app)
        try:
            pending = json.loads(state.pending.reveal())
            grant = driver.finish(app, pending, params, state.redirect_uri)
        except InputError as exc:
            raise CallbackFailed(400, "invalid_answer", exc.message) from None
        except ProviderError as exc:
            if isinstance(exc, ClientInvalid):
                self._app_health.refused(app.id, exc, actor="system:connect")
            raise CallbackFailed(
                502,
                "code_exchange_failed",
                f"{app.display_name} did not accept "
                f"the sign-in ({exc.oauth_error}); nothing was stored. Codes "
                "are short-lived: start again from a new link.",
            ) from None
        self._app_health.working(app.id, actor="system:connect")
        return grant

    def _discard(self, app: App, grant: Grant) -> None:
        # A grant we will not keep is revoked where the provider allows, so nothing dangles.
        with contextlib.suppress(ProviderError):
            self._drivers.for_app(app).revoke(app, grant)

    def _store_connection(self, app: App, state: OAuthState, grant: Grant) -> Connected:
        now = self._clock.now()

        def attempt() -> Connected:
            existing = self._connections.find(app.id, state.user_id)
            connection = existing or Connection(
                app=app.id, user_id=state.user_id, provider=app.provider.name,
                status=Status.ACTIVE, scopes=list(grant.scopes), created_at=now, updated_at=now,
                connected_at=now, redirect_uri=state.redirect_uri,
            )  # fmt: skip
            recorded = Identity.recorded(existing.identity) if existing else None
            refused = changed_account(app, recorded, grant, state.allow_identity_change)
            if refused:
                self._discard(app, grant)
                raise refused
            event = (
                CONNECTION_CREATED
                if existing is None
                else _EVENT_ON_RECONNECT.get(existing.status, CONNECTION_RECONNECTED)
            )
            changed = identity_changed(recorded, grant)
            _reconnected(connection, grant, state, now)
            old_bucket = connection.schedule_bucket
            # The index row first: a crash leaves a row the sweep drops, never an unswept grant.
            connection.schedule_bucket = self._schedule.put(
                app.id, state.user_id, due_at(connection, app, now), "refresh"
            )
            try:
                self._connections.save_new_or_existing(connection)
            except AlreadyExists:
                # Another consent created it meanwhile: merge onto it, as on a conflict.
                raise ConcurrencyConflict("the connection was created meanwhile") from None
            if old_bucket and old_bucket != connection.schedule_bucket:
                self._schedule.drop(old_bucket, app.id, state.user_id)
            return Connected(
                connection, event, return_url(state.return_to, connection, self._allowed), changed
            )

        try:
            return on_conflict(attempt, what=f"the connection '{app.id}/{state.user_id}'")
        except Contended:
            raise CallbackFailed(
                409, "busy", "The connection is being changed: try again."
            ) from None

    def _app_for(self, app_id: str) -> App:
        try:
            return self._apps.get(app_id)
        except NotFound:
            raise CallbackFailed(404, "unknown_app", f"No app '{app_id}' is configured.") from None


_EVENT_ON_RECONNECT = {
    Status.NEEDS_REAUTH: CONNECTION_RECOVERED,
    Status.REVOKED: CONNECTION_CREATED,
}


def _reconnected(connection: Connection, grant: Grant, state: OAuthState, now: datetime) -> None:
    """The connection as a fresh consent leaves it: active, the new grant, no failure history."""
    take_grant(connection, grant, now)
    connection.status = Status.ACTIVE
    connection.connected_at = now
    connection.redirect_uri = state.redirect_uri
    connection.refresh_failures = 0
    connection.last_error = connection.next_attempt_at = None
    connection.needs_reauth_at = connection.revoked_at = None
    connection.reauth_error = connection.reauth_code = None
    connection.refusals = 0
    connection.last_refreshed_at = now
