"""What every OAuth driver shares: PKCE, the token endpoint call, errors, and the one place where
a token response becomes a ``Grant`` (``expires_at``, never ``expires_in``)."""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote_plus

import requests
import requests.auth

from shared.foundation.errors import (
    ClientInvalid,
    GrantInvalid,
    ProviderError,
    ProviderUnavailable,
    RefusalUnrecognised,
)
from shared.foundation.secret import Secret
from shared.providers.identity import Identity
from shared.providers.refusals import Kind, Refusal, judge


@dataclass
class Grant:
    """A user's grant as Keysteward keeps it, normalised once from any provider's response."""

    access_token: Secret | None
    token_type: str
    expires_at: datetime | None
    refresh_token: Secret | None
    scopes: tuple[str, ...]
    msal_cache: Secret | None = None
    msal_account: str | None = None
    identity: Identity | None = None  # who signed in, when the provider says (connect only)
    extra: dict[str, Any] = field(default_factory=dict)


def pkce_pair() -> tuple[str, str]:
    """(verifier, S256 challenge), RFC 7636: 64 random bytes give a 86-character verifier."""
    verifier = secrets.token_urlsafe(64)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def new_state() -> str:
    """A 256-bit state, single use (RFC 9700 §2.1 asks at least 128)."""
    return secrets.token_urlsafe(32)


def grant_from(
    response: Mapping[str, Any],
    *,
    now: datetime,
    requested: tuple[str, ...],
    separator: str = " ",
    previous_refresh: Secret | None = None,
) -> Grant:
    """The grant in a token response. A response without a refresh token keeps the previous one
    (RFC 6749 §6: the server MAY issue a new one); one without a scope granted what was asked
    (RFC 6749 §5.1)."""
    access = response.get("access_token")
    if not isinstance(access, str) or not access:
        raise ProviderError(
            "the token response has no access_token", oauth_error="invalid_response"
        )
    refresh = response.get("refresh_token")
    scope = response.get("scope")
    if isinstance(scope, list):
        scopes = tuple(str(s) for s in scope)
    elif isinstance(scope, str) and scope.strip():
        scopes = tuple(s for s in scope.replace(",", " ").split(separator.strip() or None) if s)
    else:
        scopes = requested
    return Grant(
        access_token=Secret(access),
        token_type=str(response.get("token_type") or "Bearer"),
        expires_at=_expires_at(response.get("expires_in"), now),
        refresh_token=Secret(refresh) if isinstance(refresh, str) and refresh else previous_refresh,
        scopes=scopes,
    )


def _expires_at(expires_in: Any, now: datetime) -> datetime | None:
    # Some providers (legacy Azure DevOps) send expires_in as a string.
    try:
        seconds = int(float(expires_in))
    except (TypeError, ValueError):
        return None
    return now + timedelta(seconds=max(seconds, 0))


def token_request(
    session: requests.Session,
    url: str,
    data: Mapping[str, str],
    *,
    auth: tuple[str, str] | None = None,
    what: str = "token request",
    driver: str = "oauth2",
) -> dict[str, Any]:
    """POST a form to a token endpoint; the JSON answer, or the fitting ``ProviderError``."""
    response = _post_form(session, url, data, auth=auth, what=what)
    body = response_json(response)
    if response.status_code == 200 and isinstance(body, dict):
        return body
    raise classify(response, body, what, driver=driver)


def revocation_request(
    session: requests.Session,
    url: str,
    data: Mapping[str, str],
    *,
    auth: tuple[str, str] | None = None,
) -> None:
    """RFC 7009: 200 means revoked (or already unknown), whatever the body says."""
    response = _post_form(session, url, data, auth=auth, what="revocation")
    if response.status_code != 200:
        raise classify(response, response_json(response), "revocation")


def _post_form(
    session: requests.Session,
    url: str,
    data: Mapping[str, str],
    *,
    auth: tuple[str, str] | None,
    what: str,
) -> requests.Response:
    try:
        response = session.post(
            url,
            data=dict(data),
            auth=_basic(auth) if auth else None,
            headers={"Accept": "application/json"},
            allow_redirects=False,
        )
    except requests.Timeout:
        raise ProviderUnavailable(f"{what}: the provider did not answer in time") from None
    except requests.RequestException as exc:
        raise ProviderUnavailable(
            f"{what}: could not reach the provider ({type(exc).__name__})"
        ) from None
    return response


def _basic(auth: tuple[str, str]) -> requests.auth.HTTPBasicAuth:
    # RFC 6749 §2.3.1: id and secret are form-urlencoded before the Basic encoding.
    return requests.auth.HTTPBasicAuth(quote_plus(auth[0]), quote_plus(auth[1]))


def response_json(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def classify(
    response: requests.Response, body: Any, what: str, *, driver: str = "oauth2"
) -> ProviderError:
    """The domain error for a provider's non-success answer (its meaning: ``refusals.judge``).
    Messages name codes only: a description can carry the user's name or a trace id."""
    status = response.status_code
    error, description = _oauth_error(body)
    refusal = judge(status, error, description=description, driver=driver)
    if refusal.kind is Kind.TRANSIENT:
        return ProviderUnavailable(
            f"{what}: the provider answered {status}" + (f" ({error})" if error else ""),
            oauth_error=refusal.error,
            http_status=status,
            retry_after=retry_after(response.headers.get("Retry-After")),
        )
    code = f", {refusal.provider_code}" if refusal.provider_code else ""
    message = f"{what}: the provider refused ({status} {error or 'no error code'}{code})"
    return refused(refusal, message, status)


def refused(refusal: Refusal, message: str, status: int | None = None) -> ProviderError:
    """The error of the tree for a refusal that is not transient."""
    kind: type[ProviderError] = {
        Kind.GRANT: GrantInvalid, Kind.CLIENT: ClientInvalid,
        Kind.UNRECOGNISED: RefusalUnrecognised, Kind.TRANSIENT: ProviderUnavailable,
    }[refusal.kind]  # fmt: skip
    return kind(message, oauth_error=refusal.error, http_status=status,
                provider_code=refusal.provider_code)  # fmt: skip


def _oauth_error(body: Any) -> tuple[str, str]:
    if not isinstance(body, dict):
        return "", ""
    # Legacy Azure DevOps writes {"Error": ..., "ErrorDescription": ...}, and its REST APIs
    # {"message": "TF400813: ...", "typeKey": ...}.
    error = body.get("error") or body.get("Error") or ""
    description = (body.get("error_description") or body.get("ErrorDescription")
                   or body.get("message") or "")  # fmt: skip
    if isinstance(error, dict):  # some REST APIs nest {"error": {"message", "code"}}
        description = str(error.get("message", ""))
        error = str(error.get("code", ""))
    return str(error), str(description)


def retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)
