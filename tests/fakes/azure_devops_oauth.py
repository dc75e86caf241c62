"""A strict fake of legacy Azure DevOps OAuth (app.vssps.visualstudio.com) plus the profile API.

Wire facts come from providers.md §2; where the docs are silent the choice is marked UNCONFIRMED.
Legacy ADO OAuth documents no revocation endpoint, so this fake has none.
"""

from __future__ import annotations

import dataclasses
import hmac
import secrets
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tests.fakes.base import FORM, FakeServer, Incoming, Refusal, Response
from tests.fakes.oauth import jwt, with_query
from tests.fakes.tokens import TokenState

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
CODE_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
REFRESH_GRANT = "refresh_token"
TOKEN_FIELDS = ("client_assertion_type", "client_assertion", "grant_type", "assertion")
ISSUER = "app.vssps.visualstudio.com"
# What users report the real service answers (providers.md §8), beside the spec-shaped answers:
# a refresh token no longer accepted (MicrosoftDocs/azure-devops-docs#8583, no status given: 400
# as for every token-endpoint refusal reported) ...
REPORTED_DEAD_REFRESH = {
    "Error": "invalid_request",
    "ErrorDescription": "The access token is not valid",
}
# ... a wrong client secret, e.g. the "App Secret" sent for the "Client Secret" (coder/coder#6886,
# "400 Bad Request"; the same body in gitsense/insight#21) ...
REPORTED_WRONG_SECRET = {
    "Error": "invalid_client",
    "ErrorDescription": "Failed to deserialize the JsonWebToken object.",
}
# ... and an organisation that turned off third-party OAuth access (providers.md §2): Azure DevOps'
# REST error envelope with TF400813, in a 401. The user named in the message is the caller's.
TF400813 = "TF400813: The user '{user}' is not authorized to access this resource."


@dataclass(frozen=True)
class AzureDevOpsApp:
    client_id: str  # the app's GUID
    client_secret: str  # the (long) app secret
    redirect_uri: str  # https, registered with the app
    # The registration page refuses http redirect URIs; a test whose Keysteward listens on plain
    # http loopback registers one anyway (the wire exchange is the same).
    allow_http_loopback: bool = False

    def __post_init__(self) -> None:
        uuid.UUID(self.client_id)  # raises ValueError: ADO app ids are GUIDs
        loopback = self.allow_http_loopback and self.redirect_uri.startswith("http://127.0.0.1:")
        if not self.redirect_uri.startswith("https://") and not loopback:
            raise ValueError("providers.md §2: an ADO OAuth redirect_uri must be HTTPS")


@dataclass
class _Code:
    client_id: str
    scope: str
    issued_at: float
    grant_id: str
    profile: dict[str, Any]  # who was signed in when the code was issued
    used: bool = False


class AzureDevOpsOAuthFake(FakeServer):
    def __init__(
        self,
        apps: AzureDevOpsApp | Sequence[AzureDevOpsApp],
        *,
        expires_in: int = 3599,
        expires_in_as_string: bool = True,
        code_ttl: float = 600.0,
        refresh_expires_in: float | None = None,
        reuse_revokes_grant: bool = False,
        profile: Mapping[str, Any] | None = None,
        now: Callable[[], float] = time.time,
        port: int | None = None,
    ) -> None:
        super().__init__(now=now, port=port)
        listed = [apps] if isinstance(apps, AzureDevOpsApp) else list(apps)
        self.apps = {app.client_id: app for app in listed}
        self.expires_in = expires_in
        # Users report the real service sends expires_in as a JSON string ("3599").
        self.expires_in_as_string = expires_in_as_string
        self.code_ttl = code_ttl  # UNCONFIRMED (§2 gives no code lifetime)
        self.refresh_expires_in = refresh_expires_in  # UNCONFIRMED (§2): None = never expires
        self.reuse_revokes_grant = reuse_revokes_grant  # RFC 9700 §4.14.2, opt-in: undocumented
        self.profile: dict[str, Any] = dict(
            profile
            or {
                "displayName": "Alice Example",
                "publicAlias": "8f4c1c1e-6a4b-4c1e-9d1e-5a1b2c3d4e5f",
                "emailAddress": "alice@contoso.com",
                "coreRevision": 1,
                "timeStamp": "2025-01-01T00:00:00+00:00",
                "id": "8f4c1c1e-6a4b-4c1e-9d1e-5a1b2c3d4e5f",
                "revision": 1,
            }
        )
        self._retired: dict[str, str] = {}  # regenerated secret -> client_id
        self._codes: dict[str, _Code] = {}
        self._profiles: dict[str, dict[str, Any]] = {}  # grant id -> the profile that consented
        self._deny = 0
        # Switches a test flips (off: the spec-shaped answers above):
        # the bodies users report (REPORTED_*) instead of RFC 6749 §5.2 codes
        self.reported_errors = False
        # every secret is refused as if the operator had configured the wrong one
        self.wrong_secret = False
        # the organisation turned off "Third-party application access via OAuth": APIs answer
        # TF400813 (§2); UNCONFIRMED whether the token endpoint does too (the issue reports it
        # among refresh failures), so with this switch it does
        self.oauth_disabled_by_org = False

    # -- test controls ---------------------------------------------------------------------------

    def deny_next(self, count: int = 1) -> None:
        """The next ``count`` authorizations are refused by the user (no code comes back)."""
        with self._lock:
            self._deny += count

    def sign_in(self, email: str) -> dict[str, Any]:
        """The browser's Azure DevOps session now belongs to ``email``: the next authorizations
        are that user's consent, and the profile API answers with that user's profile."""
        profile_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"ado:{email}"))
        with self._lock:
            self.profile = {**self.profile, "id": profile_id, "publicAlias": profile_id,
                            "emailAddress": email, "displayName": email}  # fmt: skip
            return dict(self.profile)

    def regenerate_secret(self, client_id: str) -> str:
        """A new app secret. providers.md §2: the old secret AND every token made with it die."""
        with self._lock:
            app = self.apps[client_id]
            new = jwt({"appid": client_id, "nonce": secrets.token_hex(16)})
            self._retired[app.client_secret] = client_id
            self.apps[client_id] = dataclasses.replace(app, client_secret=new)
            self._tokens.revoke_where(lambda t: t.secret == app.client_secret)
            return new

    def revoke_all(self, client_id: str | None = None) -> int:
        """The user revokes the app (§2: API calls then return 401)."""
        with self._lock:
            return self._tokens.revoke_where(lambda t: client_id in (None, t.client_id))

    def delete_app(self, client_id: str) -> None:
        """providers.md §2: deleting the app kills all of its tokens."""
        with self._lock:
            self.revoke_all(client_id)
            del self.apps[client_id]

    # -- routing ---------------------------------------------------------------------------------

    def _route(self, request: Incoming) -> Response:
        routes = {
            "/oauth2/authorize": ("GET", self._authorize),
            "/oauth2/token": ("POST", self._token),
            "/_apis/profile/profiles/me": ("GET", self._profile),
        }
        if request.path not in routes:
            return Response.text(404, "Not Found")
        method, handler = routes[request.path]
        if request.method != method:
            self._violation(request, f"{request.method} is not allowed here, only {method}")
            return Response.text(405, "Method Not Allowed")
        return handler(request)

    # -- GET /oauth2/authorize -------------------------------------------------------------------

    def _authorize(self, r: Incoming) -> Response:
        q = r.query
        if r.repeated:
            raise self._page(r, f"parameters sent more than once: {r.repeated}")
        app = self.apps.get(q.get("client_id", ""))
        if app is None:
            raise self._page(r, f"unknown client_id {q.get('client_id')!r}")
        if q.get("redirect_uri") != app.redirect_uri:
            # providers.md §2: it "must exactly match the URL registered with the app".
            raise self._page(
                r, f"redirect_uri {q.get('redirect_uri')!r} is not the registered one exactly"
            )
        state = {"state": q["state"]} if "state" in q else {}

        def refuse(error: str, reason: str) -> Refusal:
            # UNCONFIRMED: ADO's error redirect; this follows RFC 6749 §4.1.2.1.
            self._violation(r, reason)
            params = {"error": error, "error_description": reason, **state}
            return Refusal(Response.redirect(with_query(app.redirect_uri, params)))

        if q.get("response_type") != "Assertion":
            error = "invalid_request" if "response_type" not in q else "unsupported_response_type"
            reason = (
                f"response_type must be exactly 'Assertion' (§2), got {q.get('response_type')!r}"
            )
            raise refuse(error, reason)
        if not q.get("scope", "").split():
            raise refuse("invalid_scope", "scope missing: space-separated vso.* scopes (§2)")
        if self._deny > 0:
            self._deny -= 1  # §2: if the user denies, no code comes back; not a client fault
            return Response.redirect(
                with_query(app.redirect_uri, {"error": "access_denied", **state})
            )
        code = jwt({"aui": str(uuid.uuid4()), "appid": app.client_id, "scp": q["scope"]})
        self._codes[code] = _Code(
            app.client_id, q["scope"], self.now(), secrets.token_hex(8), dict(self.profile)
        )
        return Response.redirect(with_query(app.redirect_uri, {"code": code, **state}))

    def _page(self, r: Incoming, reason: str) -> Refusal:
        self._violation(r, reason)
        return Refusal(Response.text(400, f"<h1>Invalid request</h1><p>{reason}</p>", "text/html"))

    # -- POST /oauth2/token ----------------------------------------------------------------------

    def _token(self, r: Incoming) -> Response:
        if r.content_type != FORM:
            raise self._error(r, 400, "invalid_request", f"Content-Type must be {FORM} (§2)")
        if r.repeated:
            raise self._error(r, 400, "invalid_request", f"repeated parameters: {r.repeated}")
        f = r.form
        expected = (*TOKEN_FIELDS, "redirect_uri")
        unexpected = sorted(set(f) - set(expected))
        if unexpected:
            # §2 lists the body exactly; RFC-style fields (client_id, code...) mean a wrong client.
            raise self._error(r, 400, "invalid_request", f"unexpected fields {unexpected}")
        missing = [n for n in expected if not f.get(n)]
        if missing:
            raise self._error(r, 400, "invalid_request", f"missing {', '.join(missing)}")
        if f["client_assertion_type"] != ASSERTION_TYPE:
            reason = f"client_assertion_type must be {ASSERTION_TYPE!r}"
            raise self._error(r, 400, "invalid_request", reason)
        if f["grant_type"] not in (CODE_GRANT, REFRESH_GRANT):
            reason = f"grant_type must be {CODE_GRANT!r} or 'refresh_token'"
            raise self._error(r, 400, "invalid_request", reason)
        if self.oauth_disabled_by_org:
            raise Refusal(self._org_policy())
        app = None if self.wrong_secret else self._app_by_secret(f["client_assertion"])
        if app is None:
            if self.reported_errors:
                raise Refusal(Response.json(400, REPORTED_WRONG_SECRET))
            retired = f["client_assertion"] in self._retired
            reason = "client secret was regenerated" if retired else "client secret unknown"
            raise self._error(r, 401, "invalid_client", reason, fault=not self.wrong_secret)
        if f["redirect_uri"] != app.redirect_uri:
            raise self._error(r, 400, "invalid_request", "redirect_uri is not the registered one")
        if f["grant_type"] == CODE_GRANT:
            return self._exchange(r, app)
        return self._refresh(r, app)

    def _app_by_secret(self, secret: str) -> AzureDevOpsApp | None:
        for app in self.apps.values():
            if hmac.compare_digest(secret.encode(), app.client_secret.encode()):
                return app
        return None

    def _exchange(self, r: Incoming, app: AzureDevOpsApp) -> Response:
        code = self._codes.get(r.form["assertion"])
        if code is None or code.client_id != app.client_id:
            raise self._error(r, 400, "invalid_grant", "code unknown or issued to another app")
        if code.used:
            if self.reuse_revokes_grant:
                self._tokens.revoke_grant(code.grant_id)
            raise self._error(r, 400, "invalid_grant", "code already used")
        if self.now() - code.issued_at > self.code_ttl:
            raise self._error(r, 400, "invalid_grant", "code expired")
        code.used = True
        self._profiles[code.grant_id] = code.profile
        return self._issue(app, code.scope, code.grant_id, CODE_GRANT)

    def _refresh(self, r: Incoming, app: AzureDevOpsApp) -> Response:
        value = r.form["assertion"]
        token = self._tokens.get(value)
        state = self._tokens.state(value) if token is not None else None
        if self.reported_errors and state is not TokenState.ACTIVE:
            return Response.json(400, REPORTED_DEAD_REFRESH)
        if token is None or token.kind != "refresh" or token.client_id != app.client_id:
            raise self._error(r, 400, "invalid_grant", "refresh token unknown to this app")
        if state is TokenState.ROTATED:
            if self.reuse_revokes_grant:
                self._tokens.revoke_grant(token.grant_id)
            reason = "refresh token already used; §2: store the new one from each refresh"
            raise self._error(r, 400, "invalid_grant", reason)
        if state is not TokenState.ACTIVE:  # revoked or expired: not the client's fault
            raise self._error(r, 400, "invalid_grant", f"refresh token {state}", fault=False)
        # providers.md §2: "A new refresh token is issued with each refresh"; the old one dies.
        self._tokens.rotate(token, 0.0)
        return self._issue(app, token.scope, token.grant_id, REFRESH_GRANT)

    def _issue(self, app: AzureDevOpsApp, scope: str, grant_id: str, grant_type: str) -> Response:
        now = int(self.now())
        claims = {"aud": ISSUER, "iss": ISSUER, "appid": app.client_id, "scp": scope}
        profile = self._profiles.get(grant_id, self.profile)
        access = jwt({**claims, "nameid": profile["id"], "nbf": now})
        refresh = jwt({**claims, "grant": grant_id, "nbf": now, "jti": str(uuid.uuid4())})
        for kind, value, ttl in (
            ("access", access, self.expires_in),
            ("refresh", refresh, self.refresh_expires_in),
        ):
            self._tokens.issue(
                kind,
                value,
                client_id=app.client_id,
                scope=scope,
                grant_id=grant_id,
                ttl=ttl,
                secret=app.client_secret,  # §2: regenerating this secret kills the token
            )
        self.grants[grant_type] += 1
        expires_in: str | int = (
            str(self.expires_in) if self.expires_in_as_string else self.expires_in
        )
        body = {
            "access_token": access,
            "token_type": "jwt-bearer",
            "expires_in": expires_in,
            "refresh_token": refresh,
            "scope": scope,
        }
        return Response.json(200, body, {"Cache-Control": "no-store", "Pragma": "no-cache"})

    def _error(
        self, r: Incoming, status: int, error: str, reason: str, *, fault: bool = True
    ) -> Refusal:
        if fault:
            self._violation(r, f"{error}: {reason}")
        # providers.md §2: users report capitalised keys. UNCONFIRMED: the error-code mapping.
        return Refusal(Response.json(status, {"Error": error, "ErrorDescription": reason}))

    # -- GET /_apis/profile/profiles/me ----------------------------------------------------------

    def _profile(self, r: Incoming) -> Response:
        value = r.bearer()
        token = self._tokens.get(value or "")
        if value is None or token is None or token.kind != "access":
            self._violation(r, "no Bearer access token issued by this fake")
            return self._unauthorized()
        if self._tokens.state(value) is not TokenState.ACTIVE:
            return self._unauthorized()  # §2: after revocation, API calls return 401
        if self.oauth_disabled_by_org:
            return self._org_policy(self._profiles.get(token.grant_id, self.profile))
        # Azure DevOps REST "Profiles - Get": the profile of the user the token belongs to.
        return Response.json(200, self._profiles.get(token.grant_id, self.profile))

    def _org_policy(self, profile: Mapping[str, Any] | None = None) -> Response:
        user = (profile or self.profile).get("emailAddress", "")
        return Response.json(401, {
            "$id": "1", "innerException": None, "message": TF400813.format(user=user),
            "typeName": "Microsoft.TeamFoundation.Framework.Server.UnauthorizedRequestException, "
                        "Microsoft.TeamFoundation.Framework.Server",
            "typeKey": "UnauthorizedRequestException", "errorCode": 0, "eventId": 3000,
        })  # fmt: skip

    @staticmethod
    def _unauthorized() -> Response:
        # UNCONFIRMED: the real 401 body; clients must rely on the status alone.
        return Response(401, b"", {"WWW-Authenticate": "Bearer"})
