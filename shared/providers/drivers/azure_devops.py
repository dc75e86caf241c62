"""Legacy Azure DevOps OAuth (providers.md §2): ``response_type=Assertion`` and a JWT-bearer
assertion grant, with the client secret as the client assertion. No PKCE, no revocation
endpoint, and a new refresh token on every refresh."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import requests

from shared.config.apps import App
from shared.foundation.clock import Clock
from shared.foundation.errors import GrantInvalid, InputError, ProviderUnavailable
from shared.providers.drivers.base import AuthRequest
from shared.providers.identity import Identity, from_claims
from shared.providers.oauth import Grant, classify, grant_from, response_json, token_request

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
CODE_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"


class AzureDevOpsOAuth:
    def __init__(self, session: requests.Session, clock: Clock) -> None:
        self._session = session
        self._clock = clock

    def begin(self, app: App, redirect_uri: str, state: str) -> AuthRequest:
        params = {
            "client_id": app.client_id,
            "response_type": "Assertion",
            "state": state,
            "scope": " ".join(app.scopes),
            "redirect_uri": redirect_uri,
        }
        url = app.authorize_url or app.provider.authorize_url or ""
        return AuthRequest(f"{url}?{urlencode(params)}", {})

    def finish(
        self, app: App, pending: Mapping[str, Any], params: Mapping[str, str], redirect_uri: str
    ) -> Grant:
        code = params.get("code")
        if not code:
            raise InputError("the provider's answer has no code")
        body = self._token(app, CODE_GRANT, code, redirect_uri, "code exchange")
        grant = grant_from(body, now=self._clock.now(), requested=app.scopes)
        grant.identity = self._profile(app, grant)
        return grant

    def refresh(self, app: App, grant: Grant) -> Grant:
        if grant.refresh_token is None:
            # Nothing can renew this grant: it is dead, not failing for a while.
            raise GrantInvalid("no refresh token to refresh with", oauth_error="invalid_grant")
        redirect_uri = str(grant.extra.get("redirect_uri", ""))
        body = self._token(
            app, "refresh_token", grant.refresh_token.reveal(), redirect_uri, "refresh"
        )
        return grant_from(body, now=self._clock.now(), requested=grant.scopes,
                          previous_refresh=grant.refresh_token)  # fmt: skip

    def revoke(self, app: App, grant: Grant) -> str:
        return "not_supported"  # users revoke at Azure DevOps; deleting the app kills all tokens

    def _profile(self, app: App, grant: Grant) -> Identity:
        """Who signed in: the token response does not say, the profile API does."""
        url = app.profile_url or app.provider.profile_url or ""
        assert grant.access_token is not None  # grant_from refuses a response without one
        try:
            response = self._session.get(
                url,
                headers={"Authorization": f"Bearer {grant.access_token.reveal()}",
                         "Accept": "application/json"},
                allow_redirects=False,
            )  # fmt: skip
        except requests.RequestException as exc:
            raise ProviderUnavailable(f"profile: {type(exc).__name__}") from None
        body = response_json(response)
        if response.status_code != 200 or not isinstance(body, dict):
            raise classify(response, body, "profile", driver=app.provider.driver)
        claims = {"sub": body.get("id"), "email": body.get("emailAddress")}
        return from_claims(claims, app.provider)

    def _token(
        self, app: App, grant_type: str, assertion: str, redirect_uri: str, what: str
    ) -> dict[str, Any]:
        data = {
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": app.client_secret.reveal(),
            "grant_type": grant_type,
            "assertion": assertion,
            "redirect_uri": redirect_uri,
        }
        url = app.token_url or app.provider.token_url or ""
        return token_request(self._session, url, data, what=what, driver=app.provider.driver)
