"""Who signed in: the provider-side identity of a grant, read once from what the provider says.

Drivers hand over claims (an ID token's, MSAL's ``id_token_claims``, or a profile API's answer
mapped onto claim names); the provider's catalogue entry says which claims name the subject and
the login. Only not-secret claims are kept, and only while the connect flow checks them against
the app's identity policy; the connection records ``subject``, ``login`` and, for Entra, the
tenant.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt

from shared.config.catalogue import Provider
from shared.foundation.errors import ProviderError

_KEPT = ("sub", "oid", "tid", "email", "preferred_username", "upn")


@dataclass(frozen=True)
class Identity:
    subject: str | None
    login: str | None
    tenant: str | None = None
    claims: Mapping[str, str] = field(default_factory=dict, compare=False)

    def claim(self, name: str) -> str | None:
        if name == "sub":
            return self.subject
        if name == "login":
            return self.login
        return self.claims.get(name)

    def public(self) -> dict[str, str]:
        """What the connection records and shows: never a token, nothing secret."""
        shown = {"subject": self.subject, "login": self.login, "tenant": self.tenant}
        return {k: v for k, v in shown.items() if v}

    @classmethod
    def recorded(cls, data: Mapping[str, Any] | None) -> Identity | None:
        if not data:
            return None
        return cls(data.get("subject"), data.get("login"), data.get("tenant"))


def from_claims(claims: Mapping[str, Any], provider: Provider) -> Identity:
    kept = {k: str(claims[k]) for k in _KEPT if isinstance(claims.get(k), str | int) and claims[k]}

    def first(names: tuple[str, ...]) -> str | None:
        return next((kept[n] for n in names if n in kept), None)

    return Identity(
        subject=first(provider.identity_subject),
        login=first(provider.identity_login),
        tenant=kept.get("tid"),
        claims=kept,
    )


def id_token_claims(token: Any, *, client_id: str, issuer: str | None) -> dict[str, Any]:
    """The claims of an ID token received from the token endpoint.

    Its signature is not checked: it came over TLS straight from the token endpoint, which OIDC
    Core §3.1.3.7 (6) allows in place of the signature. Its audience must still be this client
    and, where the issuer is known, its issuer that one; it is never used as a credential.
    """
    if not isinstance(token, str) or not token:
        raise ProviderError("the ID token is missing or empty", oauth_error="invalid_id_token")
    try:
        claims = jwt.decode(
            token,
            options={"verify_signature": False, "verify_aud": True, "verify_exp": False},
            audience=client_id,
        )
    except jwt.PyJWTError as exc:
        raise ProviderError(
            f"the ID token is not for this app ({type(exc).__name__})",
            oauth_error="invalid_id_token",
        ) from None
    if issuer and str(claims.get("iss", "")).rstrip("/") != issuer.rstrip("/"):
        raise ProviderError(
            "the ID token comes from another issuer", oauth_error="invalid_id_token"
        )
    return dict(claims)
