"""The Azure DevOps PAT Lifecycle Management API (providers.md §1).

``https://vssps.dev.azure.com/{organization}/_apis/tokens/pats`` with a user's Microsoft Entra
access token as the bearer (a PAT does not work there). Errors come back in ``patTokenError``,
with an HTTP status that is not documented (200 or 4xx): both are read, and every enum value maps
to a clear domain error. ``validTo`` is always read back: an organisation policy may clamp it
without an error. Revoke answers 200 or 204. The secret is in the create response only.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import requests

from shared.foundation.errors import (
    KeystewardError,
    PatError,
    PatPolicyViolation,
    ProviderUnavailable,
)
from shared.foundation.secret import Secret
from shared.providers.oauth import retry_after

DEFAULT_API_URL = "https://vssps.dev.azure.com"
DEFAULT_ORG_URL = "https://dev.azure.com"
DEFAULT_API_VERSION = "7.1-preview.1"


# Every SessionTokenError value (7.1 and 7.2) with what it means for a caller, and the status.
_ERRORS: dict[str, tuple[int, str]] = {
    "displayNameRequired": (400, "a display name is required"),
    "invalidDisplayName": (400, "the display name is not accepted"),
    "invalidValidTo": (400, "the expiry date is not accepted"),
    "invalidScope": (400, "the scope is not accepted"),
    "userIdRequired": (400, "Azure DevOps needs a user for this call"),
    "invalidUserId": (400, "the user is not known to Azure DevOps"),
    "invalidUserType": (403, "service principals and managed identities cannot manage PATs"),
    "accessDenied": (403, "Azure DevOps denied access to this user's PATs"),
    "failedToIssueAccessToken": (502, "Azure DevOps failed to issue the token; try again"),
    "invalidClient": (403, "the Entra app is not accepted by Azure DevOps"),
    "invalidClientType": (403, "the Entra app's type is not accepted by Azure DevOps"),
    "invalidClientId": (403, "the Entra app id is not accepted by Azure DevOps"),
    "invalidTargetAccounts": (400, "the organisation is not one this user can reach"),
    "hostAuthorizationNotFound": (404, "the PAT's authorisation was not found"),
    "authorizationNotFound": (404, "no such PAT (revoked outside Keysteward, or never existed)"),
    "failedToUpdateAccessToken": (502, "Azure DevOps failed to update the token; try again"),
    "sourceNotSupported": (400, "this source is not supported for PATs"),
    "invalidSourceIP": (403, "the caller's IP address is not allowed by the organisation"),
    "invalidSource": (400, "the request source is not accepted"),
    "duplicateHash": (409, "a PAT with the same secret hash exists; try again"),
    "sshPolicyDisabled": (403, "an organisation policy disables SSH keys"),
    "invalidToken": (400, "the token is not valid"),
    "tokenNotFound": (404, "no such PAT"),
    "invalidAuthorizationId": (404, "no such PAT (or it is revoked)"),
    "failedToReadTenantPolicy": (502, "Azure DevOps could not read the tenant policy; try again"),
    "globalPatPolicyViolation": (409, "an organisation policy forbids all-organisation PATs"),
    "fullScopePatPolicyViolation": (409, "an organisation policy forbids full-scope PATs"),
    "patLifespanPolicyViolation": (409, "an organisation policy limits PAT lifetimes"),
    "invalidTokenType": (400, "this token type is not accepted"),
    "invalidAudience": (400, "the token's audience is not Azure DevOps"),
    "invalidSubject": (400, "the token's subject is not accepted"),
    "deploymentHostNotSupported": (400, "this Azure DevOps deployment does not support PATs"),
    "disablePatCreationPolicyViolation": (409, "an organisation policy restricts PAT creation"),
    "failedToReadOrgPolicy": (502, "Azure DevOps could not read the organisation policy"),
}
TRANSIENT = frozenset(
    {"failedToIssueAccessToken", "failedToUpdateAccessToken", "failedToReadTenantPolicy",
     "failedToReadOrgPolicy"}
)  # fmt: skip
NOT_FOUND = frozenset({"authorizationNotFound", "tokenNotFound", "invalidAuthorizationId",
                       "hostAuthorizationNotFound"})  # fmt: skip
# Organisation policies (providers.md §1, §8): a refusal that retrying will not change.
POLICY = frozenset({"globalPatPolicyViolation", "fullScopePatPolicyViolation",
                    "patLifespanPolicyViolation", "disablePatCreationPolicyViolation"})  # fmt: skip
# What a plain 404 (no patTokenError) becomes: the organisation, or the PAT API there, is unknown.
ORGANIZATION_NOT_FOUND = "organizationNotFound"


def pat_error(value: str, detail: str | None = None) -> KeystewardError:
    status, meaning = _ERRORS.get(value, (502, "Azure DevOps refused the PAT operation"))
    message = f"Azure DevOps: {meaning} ({value})" + (f": {detail[:200]}" if detail else "")
    if value in TRANSIENT:
        return ProviderUnavailable(message, oauth_error=value)
    if value in POLICY:
        return PatPolicyViolation(value, status, message)
    return PatError(value, status, message)


@dataclass(frozen=True)
class PatToken:
    authorization_id: str
    display_name: str
    scope: str
    valid_from: datetime | None
    valid_to: datetime
    target_accounts: list[str] | None  # None: every organisation of the user

    @classmethod
    def parse(cls, data: dict[str, Any]) -> PatToken:
        return cls(
            authorization_id=str(data["authorizationId"]),
            display_name=str(data.get("displayName") or ""),
            scope=str(data.get("scope") or ""),
            valid_from=_time(data.get("validFrom")),
            valid_to=_time(data.get("validTo")) or datetime.min.replace(tzinfo=UTC),
            target_accounts=data.get("targetAccounts"),
        )

    def public(self) -> dict[str, Any]:
        return {
            "authorization_id": self.authorization_id,
            "display_name": self.display_name,
            "scope": self.scope,
            "valid_from": self.valid_from.isoformat() if self.valid_from else None,
            "valid_to": self.valid_to.isoformat(),
            "all_orgs": self.target_accounts is None,
        }


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    text = value.replace("Z", "+00:00")
    head, dot, rest = text.partition(".")
    if dot:  # .NET writes up to 7 fractional digits; Python reads 6
        digits = "".join(c for c in rest if c.isdigit())
        text = f"{head}.{digits[:6]}{rest[len(digits) :]}"
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class PatApi:
    def __init__(
        self,
        session: requests.Session,
        *,
        api_url: str = DEFAULT_API_URL,
        org_url: str = DEFAULT_ORG_URL,
        api_version: str = DEFAULT_API_VERSION,
    ) -> None:
        self._session = session
        self._api_url = api_url.rstrip("/")
        self._org_url = org_url.rstrip("/")
        self._version = api_version

    def list(
        self, bearer: str, organization: str, display_filter: str = "active"
    ) -> list[PatToken]:
        """Every page, following ``continuationToken`` (an empty one ends the list)."""
        return list(self._pages(bearer, organization, display_filter))

    def _pages(self, bearer: str, organization: str, display_filter: str) -> Iterator[PatToken]:
        token = ""
        while True:
            params = {"displayFilterOption": display_filter, "sortByOption": "displayDate",
                      "isSortAscending": "true"}  # fmt: skip
            if token:
                params["continuationToken"] = token
            body = self._call("GET", bearer, organization, params=params)
            for item in body.get("patTokens") or []:
                yield PatToken.parse(item)
            token = str(body.get("continuationToken") or "")
            if not token:
                return

    def get(self, bearer: str, organization: str, authorization_id: str) -> PatToken:
        body = self._call("GET", bearer, organization, params={"authorizationId": authorization_id})
        return PatToken.parse(_result(body))

    def lookup(self, bearer: str, organization: str, authorization_id: str) -> PatToken | None:
        """Get by authorizationId; None when Azure DevOps no longer has it: a not-found
        ``patTokenError``, or (UNCONFIRMED for a revoked PAT) a null ``patToken`` with "none"."""
        try:
            body = self._call(
                "GET", bearer, organization, params={"authorizationId": authorization_id}
            )
        except PatError as exc:
            if exc.pat_error in NOT_FOUND:
                return None
            raise
        if body.get("patToken") is None and body.get("patTokenError") == "none":
            return None
        return PatToken.parse(_result(body))

    def create(
        self,
        bearer: str,
        organization: str,
        *,
        display_name: str,
        scope: str,
        valid_to: datetime,
        all_orgs: bool,
    ) -> tuple[PatToken, Secret]:
        body = self._call("POST", bearer, organization, json={
            "displayName": display_name, "scope": scope, "validTo": iso(valid_to),
            "allOrgs": all_orgs,
        })  # fmt: skip
        token = _result(body)
        secret = token.get("token")
        if not isinstance(secret, str) or not secret:
            raise PatError("invalidToken", 502, "Azure DevOps created a PAT but sent no secret")
        return PatToken.parse(token), Secret(secret)

    def update(
        self,
        bearer: str,
        organization: str,
        authorization_id: str,
        *,
        valid_to: datetime | None = None,
        display_name: str | None = None,
    ) -> PatToken:
        payload: dict[str, Any] = {"authorizationId": authorization_id}
        if valid_to is not None:
            payload["validTo"] = iso(valid_to)
        if display_name is not None:
            payload["displayName"] = display_name
        return PatToken.parse(_result(self._call("PUT", bearer, organization, json=payload)))

    def revoke(self, bearer: str, organization: str, authorization_id: str) -> bool:
        """True when revoked now, False when Azure DevOps no longer knows it (already gone)."""
        try:
            self._call("DELETE", bearer, organization, params={"authorizationId": authorization_id})
        except PatError as exc:
            if exc.pat_error in NOT_FOUND:
                return False
            raise
        return True

    def works(self, secret: Secret, organization: str) -> bool:
        """Whether a PAT authenticates to the organisation (a cheap authenticated read)."""
        basic = base64.b64encode(f":{secret.reveal()}".encode()).decode()
        try:
            response = self._session.get(
                f"{self._org_url}/{organization}/_apis/connectionData",
                headers={"Authorization": f"Basic {basic}", "Accept": "application/json"},
            )
        except requests.RequestException as exc:
            raise ProviderUnavailable(f"PAT check: {type(exc).__name__}") from None
        if response.status_code >= 500 or response.status_code == 429:
            raise ProviderUnavailable(f"PAT check: Azure DevOps answered {response.status_code}")
        return response.status_code == 200

    def _call(self, method: str, bearer: str, organization: str, **kwargs: Any) -> dict[str, Any]:
        url = f"{self._api_url}/{organization}/_apis/tokens/pats"
        params = {**kwargs.pop("params", {}), "api-version": self._version}
        try:
            response = self._session.request(
                method, url, params=params, headers={"Authorization": f"Bearer {bearer}",
                                                     "Accept": "application/json"}, **kwargs,
            )  # fmt: skip
        except requests.RequestException as exc:
            raise ProviderUnavailable(f"PAT API: {type(exc).__name__}") from None
        if response.status_code in (204,) or (response.status_code == 200 and not response.content):
            return {}
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code == 429 or response.status_code >= 500:
            raise ProviderUnavailable(
                f"PAT API answered {response.status_code}",
                http_status=response.status_code,
                retry_after=retry_after(response.headers.get("Retry-After")),
            )
        error = body.get("patTokenError") if isinstance(body, dict) else None
        if error and error != "none":
            raise pat_error(str(error), (body or {}).get("patTokenErrorMessage"))
        if response.status_code in (401, 403):
            raise PatError("accessDenied", 403, "Azure DevOps refused the user's token "
                           f"({response.status_code})")  # fmt: skip
        if response.status_code == 404:
            # The caller's organisation is unknown there: a refusal that keeps its meaning (and
            # not "already gone", which only a patTokenError says).
            raise PatError(ORGANIZATION_NOT_FOUND, 404, f"Azure DevOps has no organisation "
                           f"'{organization}' (or no PAT API there): it answered 404")  # fmt: skip
        if response.status_code != 200 or not isinstance(body, dict):
            raise PatError("invalidToken", 502, f"PAT API answered {response.status_code}")
        return body


def _result(body: dict[str, Any]) -> dict[str, Any]:
    token = body.get("patToken")
    if not isinstance(token, dict):
        raise PatError("invalidToken", 502, "the PAT API answer has no patToken")
    return token


ALL_ERRORS = tuple(_ERRORS)
