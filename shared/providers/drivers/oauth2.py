"""RFC 6749 authorization code with PKCE S256: generic OIDC servers (endpoints by discovery) and
providers described by fixed endpoints (PagerDuty)."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import requests

from shared.config.apps import App
from shared.foundation.clock import Clock
from shared.foundation.errors import GrantInvalid, InputError, ProviderError, ProviderUnavailable
from shared.providers.drivers.base import AuthRequest
from shared.providers.identity import from_claims, id_token_claims
from shared.providers.oauth import (
    Grant,
    classify,
    grant_from,
    pkce_pair,
    response_json,
    revocation_request,
    token_request,
)

_DISCOVERY_TTL = 3600.0


class OAuth2:
    def __init__(self, session: requests.Session, clock: Clock) -> None:
        self._session = session
        self._clock = clock
        self._discovered: dict[str, tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def begin(self, app: App, redirect_uri: str, state: str) -> AuthRequest:
        params: dict[str, str] = {
            "response_type": "code",
            "client_id": app.client_id,
            "redirect_uri": redirect_uri,
            "scope": app.provider.scope_separator.join(app.scopes),
            "state": state,
        }
        pending: dict[str, Any] = {}
        if app.provider.pkce:
            verifier, challenge = pkce_pair()
            params |= {"code_challenge": challenge, "code_challenge_method": "S256"}
            pending["code_verifier"] = verifier
        prompt = app.prompt
        if prompt is None and "offline_access" in app.scopes:
            # OIDC servers drop offline_access (and issue no refresh token) without it.
            prompt = "consent"
        if prompt:
            params["prompt"] = prompt
        params |= dict(app.extra_authorize_params)
        url = self.endpoint(app, "authorization_endpoint")
        separator = "&" if "?" in url else "?"
        return AuthRequest(f"{url}{separator}{urlencode(params)}", pending)

    def finish(
        self, app: App, pending: Mapping[str, Any], params: Mapping[str, str], redirect_uri: str
    ) -> Grant:
        code = params.get("code")
        if not code:
            raise InputError("the provider's answer has no code")
        data = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
        if "code_verifier" in pending:
            data["code_verifier"] = str(pending["code_verifier"])
        body = self._token(app, data, "code exchange")
        grant = grant_from(body, now=self._clock.now(), requested=app.scopes,
                           separator=app.provider.scope_separator)  # fmt: skip
        if "id_token" in body:
            # OIDC servers, and PagerDuty, say in the ID token who signed in.
            claims = id_token_claims(body["id_token"], client_id=app.client_id, issuer=app.issuer)
            grant.identity = from_claims(self._with_userinfo(app, claims, grant), app.provider)
        return grant

    def _with_userinfo(self, app: App, claims: dict[str, Any], grant: Grant) -> dict[str, Any]:
        """The ID token's claims, completed from userinfo when they name no login: servers that
        follow OIDC Core §5.4 to the letter put profile and email claims only there."""
        names = app.provider.identity_login
        url = self._discover(app).get("userinfo_endpoint") if app.issuer else None
        if any(claims.get(n) for n in names) or not url or grant.access_token is None:
            return claims
        try:
            response = self._session.get(
                str(url),
                headers={"Authorization": f"Bearer {grant.access_token.reveal()}",
                         "Accept": "application/json"},
                allow_redirects=False,
            )  # fmt: skip
        except requests.RequestException as exc:
            raise ProviderUnavailable(f"userinfo: {type(exc).__name__}") from None
        body = response_json(response)
        if response.status_code != 200 or not isinstance(body, dict):
            raise classify(response, body, "userinfo")
        if body.get("sub") != claims.get("sub"):
            # OIDC Core §5.3.2: a userinfo answer about another subject must not be used.
            raise ProviderError("userinfo describes another user", oauth_error="invalid_userinfo")
        return {**body, **claims}

    def refresh(self, app: App, grant: Grant) -> Grant:
        if grant.refresh_token is None:
            # Nothing can renew this grant: it is dead, not failing for a while.
            raise GrantInvalid("no refresh token to refresh with", oauth_error="invalid_grant")
        data = {"grant_type": "refresh_token", "refresh_token": grant.refresh_token.reveal()}
        body = self._token(app, data, "refresh")
        return grant_from(body, now=self._clock.now(), requested=grant.scopes,
                          separator=app.provider.scope_separator,
                          previous_refresh=grant.refresh_token)  # fmt: skip

    def revoke(self, app: App, grant: Grant) -> str:
        url = self.revocation_endpoint(app)
        if url is None:
            return "not_supported"
        # RFC 7009: the refresh token first (it should take its access tokens with it).
        for token, hint in (
            (grant.refresh_token, "refresh_token"),
            (grant.access_token, "access_token"),
        ):
            if token is None:
                continue
            data = {"token": token.reveal(), "token_type_hint": hint}
            secret = app.client_secret.reveal()
            if app.client_authentication == "client_secret_basic":
                revocation_request(self._session, url, data, auth=(app.client_id, secret))
            else:
                data |= {"client_id": app.client_id, "client_secret": secret}
                revocation_request(self._session, url, data)
        return "revoked"

    def revocation_endpoint(self, app: App) -> str | None:
        """Where to revoke, or None: ``optional`` endpoints (undocumented ones) only when the app
        turns them on; an app's ``revoke_url`` overrides the catalogue's or the discovered one."""
        mode = app.provider.revocation
        if mode == "none" or app.revocation is False:
            return None
        if mode == "optional":
            return (app.revoke_url or app.provider.revoke_url) if app.revocation else None
        if app.revoke_url:
            return app.revoke_url
        if mode == "rfc7009":
            return app.provider.revoke_url
        return self._discover(app).get("revocation_endpoint") if app.issuer else None

    def endpoint(self, app: App, name: str) -> str:
        explicit = {"authorization_endpoint": app.authorize_url, "token_endpoint": app.token_url}
        fixed = {
            "authorization_endpoint": app.provider.authorize_url,
            "token_endpoint": app.provider.token_url,
        }
        url = explicit.get(name) or (self._discover(app).get(name) if app.issuer else None)
        url = url or fixed.get(name)
        if not url:
            raise ProviderError(f"app '{app.id}': no {name} configured or discovered")
        return str(url)

    def _token(self, app: App, data: dict[str, str], what: str) -> dict[str, Any]:
        return self._post(app, self.endpoint(app, "token_endpoint"), data, what)

    def _post(self, app: App, url: str, data: dict[str, str], what: str) -> dict[str, Any]:
        secret = app.client_secret.reveal()
        if app.client_authentication == "client_secret_basic":
            return token_request(self._session, url, data, auth=(app.client_id, secret), what=what)
        data = {**data, "client_id": app.client_id, "client_secret": secret}
        return token_request(self._session, url, data, what=what)

    def _discover(self, app: App) -> dict[str, Any]:
        issuer = (app.issuer or "").rstrip("/")
        now = time.monotonic()
        with self._lock:
            cached = self._discovered.get(issuer)
            if cached and now - cached[0] < _DISCOVERY_TTL:
                return cached[1]
        url = f"{issuer}/.well-known/openid-configuration"
        try:
            response = self._session.get(url)
        except requests.RequestException as exc:
            raise ProviderUnavailable(
                f"discovery at {issuer} failed ({type(exc).__name__})"
            ) from None
        if response.status_code != 200:
            raise ProviderUnavailable(f"discovery at {issuer} answered {response.status_code}",
                                      http_status=response.status_code)  # fmt: skip
        document = response.json()
        if not isinstance(document, dict) or document.get("issuer", "").rstrip("/") != issuer:
            # RFC 8414 §3.3: a document for another issuer must not be used.
            raise ProviderError(f"discovery at {issuer} describes another issuer")
        with self._lock:
            self._discovered[issuer] = (now, document)
        return document
