"""Microsoft Entra ID through MSAL (providers.md §3): ``initiate_auth_code_flow`` /
``acquire_token_by_auth_code_flow`` to connect, ``acquire_token_silent`` to refresh.

Each connection keeps its own SerializableTokenCache, sealed in the store; it is written back only
when MSAL says it changed. MSAL's ``ValueError`` on a callback (state, scope or nonce mismatch) is
treated as CSRF or replay: the flow is discarded.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import msal
import requests

from shared.config.apps import App
from shared.config.catalogue import Provider
from shared.foundation.clock import Clock
from shared.foundation.errors import GrantInvalid, InputError, ProviderError, ProviderUnavailable
from shared.foundation.secret import Secret
from shared.providers.drivers.base import AuthRequest
from shared.providers.identity import from_claims
from shared.providers.oauth import Grant, refused
from shared.providers.refusals import Kind, judge


class Entra:
    def __init__(self, session: requests.Session, clock: Clock) -> None:
        self._session = session
        self._clock = clock
        # Shared by every MSAL client made here, so tenant discovery is fetched once, not per call.
        self._http_cache: dict[Any, Any] = {}
        self._lock = threading.Lock()

    def begin(self, app: App, redirect_uri: str, state: str) -> AuthRequest:
        client = self._client(app, msal.SerializableTokenCache())
        flow = client.initiate_auth_code_flow(
            list(self._scopes(app)), redirect_uri=redirect_uri, state=state, prompt=app.prompt
        )
        return AuthRequest(flow["auth_uri"], {"flow": flow})

    def finish(
        self, app: App, pending: Mapping[str, Any], params: Mapping[str, str], redirect_uri: str
    ) -> Grant:
        cache = msal.SerializableTokenCache()
        client = self._client(app, cache)
        try:
            result = client.acquire_token_by_auth_code_flow(dict(pending["flow"]), dict(params))
        except ValueError:
            raise InputError(
                "the sign-in answer does not match the flow it belongs to (state, scope or nonce)"
            ) from None
        except requests.RequestException as exc:
            raise ProviderUnavailable(f"code exchange: {type(exc).__name__}") from None
        return self._grant(result, cache, account=None, client=client, previous=None,
                           provider=app.provider)  # fmt: skip

    def refresh(self, app: App, grant: Grant) -> Grant:
        if grant.msal_cache is None or grant.msal_account is None:
            raise GrantInvalid("this connection has no MSAL cache", oauth_error="invalid_grant")
        cache = msal.SerializableTokenCache()
        cache.deserialize(grant.msal_cache.reveal())
        client = self._client(app, cache)
        account = next(
            (a for a in client.get_accounts() if a.get("home_account_id") == grant.msal_account),
            None,
        )
        if account is None:
            raise GrantInvalid("the MSAL cache holds no account for this connection",
                               oauth_error="invalid_grant")  # fmt: skip
        try:
            result = client.acquire_token_silent_with_error(
                list(self._scopes(app)), account=account, force_refresh=True
            )
        except requests.RequestException as exc:
            raise ProviderUnavailable(f"refresh: {type(exc).__name__}") from None
        if result is None:
            raise GrantInvalid("MSAL has no refresh token for this connection",
                               oauth_error="invalid_grant")  # fmt: skip
        return self._grant(result, cache, account=grant.msal_account, client=client,
                           previous=grant.msal_cache, provider=app.provider)  # fmt: skip

    def revoke(self, app: App, grant: Grant) -> str:
        # Entra has no token revocation endpoint; sign-in sessions are revoked by an admin
        # (revokeSignInSessions in Microsoft Graph), which needs other permissions.
        return "not_supported"

    def _grant(
        self,
        result: Mapping[str, Any],
        cache: msal.SerializableTokenCache,
        *,
        account: str | None,
        client: msal.ConfidentialClientApplication,
        previous: Secret | None,
        provider: Provider,
    ) -> Grant:
        if "error" in result:
            raise _classify(result)
        claims = result.get("id_token_claims") or {}
        if account is None:
            accounts = client.get_accounts()
            account = next(
                (a["home_account_id"] for a in accounts
                 if a.get("local_account_id") in (claims.get("oid"), claims.get("sub"))),
                accounts[0]["home_account_id"] if accounts else None,
            )  # fmt: skip
        if account is None:
            raise ProviderError("MSAL returned no account for the sign-in")
        expires_in = result.get("expires_in")
        now = self._clock.now()
        state_changed = cache.has_state_changed
        return Grant(
            access_token=Secret(str(result["access_token"])),
            token_type=str(result.get("token_type") or "Bearer"),
            expires_at=now + timedelta(seconds=int(expires_in)) if expires_in else None,
            refresh_token=None,  # kept inside the MSAL cache
            scopes=tuple(str(result.get("scope") or "").split()),
            msal_cache=Secret(cache.serialize()) if state_changed or previous is None else previous,
            msal_account=account,
            identity=from_claims(claims, provider) if claims else None,
        )

    def _client(
        self, app: App, cache: msal.SerializableTokenCache
    ) -> msal.ConfidentialClientApplication:
        endpoint = (
            {"oidc_authority": app.oidc_authority}
            if app.oidc_authority
            else {"authority": app.authority}
        )
        try:
            return msal.ConfidentialClientApplication(
                app.client_id,
                client_credential=app.client_secret.reveal(),
                token_cache=cache,
                http_client=self._session,
                http_cache=self._http_cache,
                **endpoint,
            )
        except requests.RequestException as exc:
            raise ProviderUnavailable(f"authority discovery: {type(exc).__name__}") from None
        except ValueError as exc:  # MSAL refuses the authority (http, or issuer mismatch)
            raise ProviderError(f"app '{app.id}': MSAL refused the authority: {exc}") from None

    @staticmethod
    def _scopes(app: App) -> tuple[str, ...]:
        # MSAL adds openid/profile/offline_access itself and refuses them when asked.
        return tuple(s for s in app.scopes if s not in ("openid", "profile", "offline_access"))


def _classify(result: Mapping[str, Any]) -> ProviderError:
    """MSAL hands back Entra's error body, not the HTTP status: AADSTS codes and ``error`` decide
    (``refusals.judge``). The description is never kept: it names the user and trace ids."""
    error = str(result.get("error") or "")
    codes = [int(c) for c in result.get("error_codes") or [] if str(c).isdigit()]
    refusal = judge(0, error, codes=codes, driver="msal")
    code = f", {refusal.provider_code}" if refusal.provider_code else ""
    message = f"Entra refused ({error or 'no error code'}{code})"
    if refusal.kind is Kind.TRANSIENT:
        return ProviderUnavailable(message, oauth_error=refusal.error)
    return refused(refusal, message)
