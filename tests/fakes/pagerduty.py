"""A strict fake of PagerDuty scoped OAuth (identity.pagerduty.com) plus ``GET /users/me``.

Wire facts come from providers.md §4 (PagerDuty) and §7 (RFC 6749/7009/9700); where the docs are
silent the choice is marked UNCONFIRMED. The REST API host is served from the same port.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tests.fakes.base import FORM, FakeServer, Incoming, Refusal, Response
from tests.fakes.oauth import S256_CHALLENGE, VERIFIER, b64url, jwt, s256, with_query
from tests.fakes.tokens import TokenState

DEFAULT_SCOPES = "incidents.read incidents.write services.read users.read"
ACCEPT = "application/vnd.pagerduty+json;version=2"  # providers.md §4 "Use"
CODE_TTL = 30.0  # providers.md §4: codes live 30 seconds
REFRESH_TTL = 30 * 86400.0  # providers.md §4 lifetimes: scoped refresh tokens last 30 days
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}  # RFC 6749 §5.1


@dataclass(frozen=True)
class PagerDutyApp:
    client_id: str
    client_secret: str
    redirect_uri: str


@dataclass
class _Code:
    app: PagerDutyApp
    redirect_uri: str
    challenge: str
    scope: str  # what was granted, "openid ..." (recorded with the code, §4)
    issued_at: float
    grant_id: str
    user: dict[str, Any]  # who was signed in at PagerDuty when the code was issued
    used: bool = False


class PagerDutyFake(FakeServer):
    def __init__(
        self,
        apps: PagerDutyApp | Sequence[PagerDutyApp],
        scopes: str | Iterable[str] = DEFAULT_SCOPES,
        *,
        expires_in: int = 86400,
        refresh_expires_in: float | None = REFRESH_TTL,
        old_refresh_token_valid_for: float = 0.0,
        revoke_supported: bool = True,
        reuse_revokes_grant: bool = False,
        user: Mapping[str, Any] | None = None,
        now: Callable[[], float] = time.time,
        port: int | None = None,
    ) -> None:
        super().__init__(now=now, port=port)
        listed = [apps] if isinstance(apps, PagerDutyApp) else list(apps)
        self.apps = {app.client_id: app for app in listed}
        self.scopes = frozenset(scopes.split() if isinstance(scopes, str) else scopes)
        self.expires_in = expires_in
        self.refresh_expires_in = refresh_expires_in
        # UNCONFIRMED (§4): whether the old refresh token dies at once on rotation.
        self.old_refresh_token_valid_for = old_refresh_token_valid_for
        # UNCONFIRMED (§4): /oauth/revoke exists only in third-party code.
        self.revoke_supported = revoke_supported
        # RFC 9700 §4.14.2 reuse detection; PagerDuty documents none, so it is opt-in.
        self.reuse_revokes_grant = reuse_revokes_grant
        self.user: dict[str, Any] = dict(
            user
            or {
                "id": "PXPGF42",
                "type": "user",
                "name": "Alice Example",
                "email": "alice@contoso.com",
                "time_zone": "Europe/London",
                "role": "admin",
            }
        )
        self._codes: dict[str, _Code] = {}
        self._users: dict[str, dict[str, Any]] = {}  # grant id -> the user who consented
        self._deny = 0

    # -- test controls ---------------------------------------------------------------------------

    def deny_next(self, count: int = 1) -> None:
        """The next ``count`` authorizations are refused by the user (``error=access_denied``)."""
        with self._lock:
            self._deny += count

    def sign_in(self, email: str) -> dict[str, Any]:
        """The browser's PagerDuty session now belongs to ``email`` (a user of the account): the
        next authorizations are that user's consent, and their ID tokens name that user."""
        user_id = "P" + hashlib.sha256(email.encode()).hexdigest()[:6].upper()
        with self._lock:
            self.user = {**self.user, "id": user_id, "email": email, "name": email}
            return dict(self.user)

    def revoke_all(self, client_id: str | None = None) -> int:
        """The app UI's "Revoke All Tokens" (§4): every token of the app (or of all apps) dies."""
        with self._lock:
            return self._tokens.revoke_where(lambda t: client_id in (None, t.client_id))

    def granted_scopes(self) -> list[str]:
        """The scope recorded with each code issued, in order."""
        with self._lock:
            return [code.scope for code in self._codes.values()]

    # -- routing ---------------------------------------------------------------------------------

    def _route(self, request: Incoming) -> Response:
        routes = {
            "/oauth/authorize": ("GET", self._authorize),
            "/oauth/token": ("POST", self._token),
            "/oauth/revoke": ("POST", self._revoke),
            "/users/me": ("GET", self._users_me),
        }
        if request.path not in routes or (
            request.path == "/oauth/revoke" and not self.revoke_supported
        ):
            return Response.text(404, "Not Found")
        method, handler = routes[request.path]
        if request.method != method:
            self._violation(request, f"{request.method} is not allowed here, only {method}")
            return Response.text(405, "Method Not Allowed")
        return handler(request)

    # -- GET /oauth/authorize --------------------------------------------------------------------

    def _authorize(self, r: Incoming) -> Response:
        q = r.query
        if r.repeated:
            raise self._page(r, f"parameters sent more than once: {r.repeated} (RFC 6749 §3.1)")
        app = self.apps.get(q.get("client_id", ""))
        if app is None:
            raise self._page(r, f"unknown client_id {q.get('client_id')!r}")
        if q.get("redirect_uri") != app.redirect_uri:
            # RFC 9700 §2.1: exact string match; RFC 6749 §4.1.2.1: never redirect to it then.
            raise self._page(
                r, f"redirect_uri {q.get('redirect_uri')!r} is not the registered one exactly"
            )
        state = {"state": q["state"]} if "state" in q else {}

        def refuse(error: str, reason: str) -> Refusal:
            self._violation(r, reason)
            params = {"error": error, "error_description": reason, **state}
            return Refusal(Response.redirect(with_query(app.redirect_uri, params)))

        if q.get("response_type") != "code":
            error = "invalid_request" if "response_type" not in q else "unsupported_response_type"
            raise refuse(error, f"response_type must be 'code', got {q.get('response_type')!r}")
        challenge = q.get("code_challenge", "")
        if not challenge:
            raise refuse("invalid_request", "code_challenge missing: PKCE is required (§4)")
        if q.get("code_challenge_method") != "S256":
            method = q.get("code_challenge_method")
            raise refuse("invalid_request", f"code_challenge_method must be S256, got {method!r}")
        if not S256_CHALLENGE.fullmatch(challenge):
            raise refuse("invalid_request", "code_challenge is not a 43-char base64url S256 hash")
        if self._deny > 0:
            self._deny -= 1  # the user said no: not a client fault, so no violation
            return Response.redirect(
                with_query(app.redirect_uri, {"error": "access_denied", **state})
            )
        code = secrets.token_urlsafe(32)
        self._codes[code] = _Code(
            app,
            app.redirect_uri,
            challenge,
            self._grant_scope(r, q.get("scope", "")),
            self.now(),
            secrets.token_hex(8),
            dict(self.user),
        )
        return Response.redirect(with_query(app.redirect_uri, {"code": code, **state}))

    def _grant_scope(self, r: Incoming, requested: str) -> str:
        names = list(dict.fromkeys(requested.split()))
        invalid = [n for n in names if n != "openid" and n not in self.scopes]
        if invalid or not names:
            # providers.md §4: an invalid scope gets NO error, only openid is granted. The
            # violation is ours, so a test notices the client asked for something wrong.
            why = f"invalid scopes {invalid}" if invalid else "no scope requested"
            self._violation(r, f"{why}: PagerDuty silently grants only 'openid'")
            return "openid"
        return " ".join(["openid", *(n for n in names if n != "openid")])

    def _page(self, r: Incoming, reason: str) -> Refusal:
        self._violation(r, reason)
        return Refusal(Response.text(400, f"<h1>Invalid request</h1><p>{reason}</p>", "text/html"))

    # -- POST /oauth/token -----------------------------------------------------------------------

    def _token(self, r: Incoming) -> Response:
        if r.content_type != FORM:
            # providers.md §4: the token endpoint takes form-encoded bodies only.
            raise self._error(r, 400, "invalid_request", f"Content-Type must be {FORM}")
        if r.repeated:
            raise self._error(r, 400, "invalid_request", f"repeated parameters: {r.repeated}")
        grant_type = r.form.get("grant_type", "")
        if not grant_type:
            raise self._error(r, 400, "invalid_request", "grant_type missing")
        if grant_type not in ("authorization_code", "refresh_token"):
            raise self._error(
                r, 400, "unsupported_grant_type", f"grant_type {grant_type!r} not supported"
            )
        app = self._client(r)
        if grant_type == "authorization_code":
            return self._exchange(r, app)
        return self._refresh(r, app)

    def _client(self, r: Incoming) -> PagerDutyApp:
        client_id = r.form.get("client_id", "")
        secret = r.form.get("client_secret", "")
        hint = " (send it in the form, §4)" if "authorization" in r.headers else ""
        app = self.apps.get(client_id)
        if app is None:
            raise self._error(r, 401, "invalid_client", f"unknown client_id {client_id!r}{hint}")
        if not secret:
            # providers.md §4: scoped OAuth needs client_secret AND PKCE; no public clients.
            reason = f"client_secret missing: scoped OAuth clients must send it{hint}"
            raise self._error(r, 401, "invalid_client", reason)
        if not hmac.compare_digest(secret.encode(), app.client_secret.encode()):
            raise self._error(r, 401, "invalid_client", "client_secret is wrong")
        return app

    def _exchange(self, r: Incoming, app: PagerDutyApp) -> Response:
        f = r.form
        missing = [n for n in ("code", "redirect_uri", "code_verifier") if not f.get(n)]
        if missing:
            raise self._error(r, 400, "invalid_request", f"missing {', '.join(missing)}")
        code = self._codes.get(f["code"])
        if code is None or code.app.client_id != app.client_id:
            raise self._error(r, 400, "invalid_grant", "code unknown or issued to another client")
        if code.used:
            if self.reuse_revokes_grant:  # RFC 6749 §4.1.2: SHOULD revoke what the code gave
                self._tokens.revoke_grant(code.grant_id)
            raise self._error(r, 400, "invalid_grant", "code already used; codes are single use")
        age = self.now() - code.issued_at
        if age > CODE_TTL:
            reason = f"code expired: used {age:.0f}s after issue, codes live 30 seconds (§4)"
            raise self._error(r, 400, "invalid_grant", reason)
        if f["redirect_uri"] != code.redirect_uri:
            raise self._error(r, 400, "invalid_grant", "redirect_uri differs from authorize's")
        verifier = f["code_verifier"]
        if not VERIFIER.fullmatch(verifier):
            raise self._error(r, 400, "invalid_request", "code_verifier malformed (RFC 7636)")
        if not hmac.compare_digest(s256(verifier), code.challenge):
            raise self._error(r, 400, "invalid_grant", "code_verifier does not match challenge")
        code.used = True
        self._users[code.grant_id] = code.user
        return self._issue(app, code.scope, code.grant_id, "authorization_code")

    def _refresh(self, r: Incoming, app: PagerDutyApp) -> Response:
        value = r.form.get("refresh_token", "")
        if not value:
            raise self._error(r, 400, "invalid_request", "refresh_token missing")
        token = self._tokens.get(value)
        if token is None or token.kind != "refresh" or token.client_id != app.client_id:
            raise self._error(r, 400, "invalid_grant", "refresh token unknown to this client")
        state = self._tokens.state(value)
        if state is TokenState.ROTATED:
            if self.reuse_revokes_grant:
                self._tokens.revoke_grant(token.grant_id)
            reason = "refresh token already rotated; store the new one (RFC 6749 §6)"
            raise self._error(r, 400, "invalid_grant", reason)
        if state is not TokenState.ACTIVE:  # revoked or expired: the provider's doing, no fault
            raise self._error(r, 400, "invalid_grant", f"refresh token {state}", fault=False)
        # providers.md §4: refresh rotates, a new access AND a new refresh token.
        self._tokens.rotate(token, self.old_refresh_token_valid_for)
        return self._issue(app, token.scope, token.grant_id, "refresh_token")

    def _issue(self, app: PagerDutyApp, scope: str, grant_id: str, grant_type: str) -> Response:
        access = f"pdus+_0XBPWQQ_{secrets.token_urlsafe(24)}"  # §4 token prefixes
        refresh = f"pdus+_1XBPWQQ_{secrets.token_urlsafe(24)}"
        for kind, value, ttl in (
            ("access", access, self.expires_in),
            ("refresh", refresh, self.refresh_expires_in),
        ):
            self._tokens.issue(
                kind, value, client_id=app.client_id, scope=scope, grant_id=grant_id, ttl=ttl
            )
        self.grants[grant_type] += 1
        now = int(self.now())
        user = self._users.get(grant_id, self.user)
        body = {
            # UNCONFIRMED: the contents of client_info and id_token; only their presence is §4.
            "client_info": b64url(f'{{"uid":"{user["id"]}","utid":"acme"}}'.encode()),
            "id_token": jwt(
                {
                    "iss": f"{self.url}/global/oauth/anonymous",
                    "aud": app.client_id,
                    "sub": user["id"],
                    "email": user.get("email"),
                    "iat": now,
                    "exp": now + self.expires_in,
                }
            ),
            "token_type": "bearer",
            "access_token": access,
            "refresh_token": refresh,
            "scope": scope,
            "expires_in": self.expires_in,
        }
        return Response.json(200, body, NO_STORE)

    def _error(
        self, r: Incoming, status: int, error: str, reason: str, *, fault: bool = True
    ) -> Refusal:
        if fault:
            self._violation(r, f"{error}: {reason}")
        return Refusal(
            Response.json(status, {"error": error, "error_description": reason}, NO_STORE)
        )

    # -- POST /oauth/revoke (UNCONFIRMED, §4) ----------------------------------------------------

    def _revoke(self, r: Incoming) -> Response:
        if r.content_type != FORM:
            raise self._error(r, 400, "invalid_request", f"Content-Type must be {FORM}")
        value, client_id = r.form.get("token", ""), r.form.get("client_id", "")
        if not value or not client_id:
            raise self._error(r, 400, "invalid_request", "token and client_id are required")
        app = self.apps.get(client_id)
        if app is None:
            raise self._error(r, 401, "invalid_client", f"unknown client_id {client_id!r}")
        secret = r.form.get("client_secret")
        if secret is not None and not hmac.compare_digest(
            secret.encode(), app.client_secret.encode()
        ):
            raise self._error(r, 401, "invalid_client", "client_secret is wrong")
        token = self._tokens.get(value)
        if token is not None and token.client_id != client_id:
            self._violation(r, "token belongs to another client; left alone")
        elif token is not None and token.kind == "refresh":
            self._tokens.revoke_grant(token.grant_id)  # RFC 7009 §2.1: SHOULD drop its ATs too
        elif token is not None:
            self._tokens.revoke_where(lambda t: t is token)
        # providers.md §7 (RFC 7009 §2.2): 200 even for an unknown token.
        return Response(200)

    # -- GET /users/me (REST API) ----------------------------------------------------------------

    def _users_me(self, r: Incoming) -> Response:
        if r.headers.get("accept", "").replace(" ", "") != ACCEPT:
            # Strictness of the fake: the real API falls back to the token's version (§4 "Use").
            self._violation(r, f"Accept must be {ACCEPT!r}, got {r.headers.get('accept')!r}")
            return self._rest_error(406, "Accept header must request API version 2", 2001)
        value = r.bearer()
        token = self._tokens.get(value or "")
        if value is None or token is None or token.kind != "access":
            self._violation(r, "no Bearer access token issued by this fake")
            return self._rest_error(401, "Authentication failed", 2006)
        state = self._tokens.state(value)
        if state is not TokenState.ACTIVE:
            return self._rest_error(401, f"Authentication failed: token {state}", 2006)
        if not {"users.read", "users.write"} & set(token.scope.split()):
            # §4: 403 for a missing scope. UNCONFIRMED: whether these fields nest in "error".
            error = {"message": "Token missing required scopes", "required_scopes": "users.read"}
            return Response.json(403, {"error": error})
        return Response.json(200, {"user": self._users.get(token.grant_id, self.user)})

    @staticmethod
    def _rest_error(status: int, message: str, code: int) -> Response:
        # providers.md §4: the REST error envelope; 2006 is "Authentication failed".
        return Response.json(status, {"error": {"message": message, "code": code, "errors": []}})
