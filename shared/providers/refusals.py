"""What a provider's refusal means, decided in one place for every driver (docs/providers.md has
the table per provider, with sources).

- ``grant``: the user's grant is dead (expired, revoked, MFA or consent needed): only the user
  connecting again helps. The connection moves to ``needs_reauth``.
- ``client``: the provider refuses the app itself (a wrong or expired client secret, an app the
  provider does not know or allow, an organisation policy): an operator's fix. The app is marked
  misconfigured; its connections stay active and back off.
- ``transient``: network, 5xx, 429, ``temporarily_unavailable``: back-off, for as long as it lasts.
- ``unrecognised``: any other 4xx. Retried ``UNRECOGNISED_RETRIES`` times with back-off, then
  treated as ``grant`` (a refusal that keeps coming is no blip, and a silent loop helps nobody).

Codes, never descriptions, leave this module (``provider_code``: ``AADSTS70008``, ``TF400813``):
a description can carry the user's name or a trace id. Legacy Azure DevOps writes no code for a
dead refresh token, so its one known description is matched here, and only here.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass

# The retries after the first unrecognised refusal: with the back-off (10 s doubling) the last
# comes about five minutes after the first, long enough to ride out a provider's bad deploy.
UNRECOGNISED_RETRIES = 5


class Kind(enum.StrEnum):
    GRANT = "grant"
    CLIENT = "client"
    TRANSIENT = "transient"
    UNRECOGNISED = "unrecognised"


@dataclass(frozen=True)
class Refusal:
    kind: Kind
    error: str  # the OAuth error code (RFC 6749 §5.2), or the nearest one
    provider_code: str | None = None  # the provider's own code, when it gives one


# RFC 6749 §5.2 and OpenID Connect Core §3.1.2.6: the grant is gone.
GRANT_ERRORS = frozenset({"invalid_grant", "interaction_required", "consent_required",
                          "login_required", "access_denied"})  # fmt: skip
# RFC 6749 §5.2: the client failed to authenticate, or may not use this grant type. Treated as
# the app's fault at once, never the grant's: an unauthorized_client answers every connection of
# the app alike, and a mark cleared by the next success costs less than dead connections.
CLIENT_ERRORS = frozenset({"invalid_client", "unauthorized_client"})
TRANSIENT_ERRORS = frozenset({"temporarily_unavailable", "server_error"})

# Entra's AADSTS numbers (learn.microsoft.com "Microsoft Entra authentication and authorization
# error codes"). They decide before ``error``: Entra answers 65001 as invalid_grant or
# consent_required, and 700016 as unauthorized_client.
ENTRA_GRANT_CODES = frozenset({
    70008,    # ExpiredOrRevokedGrant
    700082,   # ExpiredOrRevokedGrantInactiveToken: 90 days unused
    50173,    # FreshTokenNeeded: revoked by an admin or the user
    70043,    # BadTokenDueToSignInFrequency (Conditional Access)
    700084,   # the SPA refresh token's fixed lifetime
    54005,    # code already redeemed
    65001,    # DelegationDoesNotExist: no consent
    50076,    # UserStrongAuthClientAuthNRequired: MFA required
    50079,    # UserStrongAuthEnrollmentRequired: MFA enrolment required
    53003,    # BlockedByConditionalAccess
    501481,   # code_verifier mismatch
    50132,    # SsoArtifactInvalidOrExpired: the session ended (password changed, revoked)
    50133,    # SsoArtifactRevoked
})  # fmt: skip
ENTRA_CLIENT_CODES = frozenset({
    7000215,  # InvalidClientSecretProvided
    7000222,  # InvalidClientSecretExpiredKeysProvided
    700016,   # UnauthorizedClient_DoesNotMatchRequest: no such app in the tenant
    7000112,  # UnauthorizedClientApplicationDisabled
    700027,   # client assertion signature invalid
    50012,    # the older code for an invalid client secret
})  # fmt: skip

# Legacy Azure DevOps (providers.md §2 and §8): capitalised keys and non-RFC codes.
ADO_DEAD_REFRESH = ("invalid_request", "the access token is not valid")  # azure-devops-docs#8583
_TF_CODE = re.compile(r"\bTF(\d{6})\b")
# TF400813: the organisation turned off third-party application access via OAuth.
ADO_CLIENT_TF_CODES = frozenset({"TF400813"})


def judge(
    status: int,
    error: str,
    *,
    description: str = "",
    codes: Iterable[int] = (),
    driver: str = "oauth2",
) -> Refusal:
    """The meaning of a non-success answer (``status`` 0 when the driver does not see it)."""
    error = error.strip()
    numbers = set(codes)
    if status == 429 or status >= 500 or error in TRANSIENT_ERRORS:
        return Refusal(Kind.TRANSIENT, error or "temporarily_unavailable")
    if driver == "msal" and numbers:
        return _entra(error, numbers)
    if driver == "azure-devops-oauth":
        return _azure_devops(error, description)
    return _by_error(error, None)


def _entra(error: str, numbers: set[int]) -> Refusal:
    code = f"AADSTS{min(numbers & (ENTRA_CLIENT_CODES | ENTRA_GRANT_CODES) or numbers)}"
    if numbers & ENTRA_CLIENT_CODES:
        return Refusal(Kind.CLIENT, error or "invalid_client", code)
    if numbers & ENTRA_GRANT_CODES:
        return Refusal(Kind.GRANT, error or "invalid_grant", code)
    return _by_error(error, code)


def _azure_devops(error: str, description: str) -> Refusal:
    found = _TF_CODE.search(description)
    tf = f"TF{found.group(1)}" if found else None
    if tf in ADO_CLIENT_TF_CODES:
        return Refusal(Kind.CLIENT, error or "unauthorized_client", tf)
    if (error, description.strip().casefold().rstrip(".")) == ADO_DEAD_REFRESH:
        return Refusal(Kind.GRANT, error)
    return _by_error(error, tf)


def _by_error(error: str, code: str | None) -> Refusal:
    if error in CLIENT_ERRORS:
        return Refusal(Kind.CLIENT, error, code)
    if error in GRANT_ERRORS:
        return Refusal(Kind.GRANT, error, code)
    return Refusal(Kind.UNRECOGNISED, error or "invalid_response", code)
