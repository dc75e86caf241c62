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
from shared.foundation.errors import GrantInvalid, InputError
from shared.providers.drivers.base import AuthRequest
from shared.providers.oauth import Grant, grant_from, token_request

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
        return grant_from(body, now=self._clock.now(), requested=app.scopes)

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
        return token_request(self._session, url, data, what=what)
