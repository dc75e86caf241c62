"""The provider catalogue (providers.yaml), loaded once and validated field by field."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

import yaml

from shared.foundation.errors import SettingsError

CATALOGUE = Path(__file__).with_name("providers.yaml")
DRIVERS = ("oauth2", "azure-devops-oauth", "msal")
SCOPE_CHECKS = ("strict", "resource", "off")  # shared/providers/scopes.py
Revocation = Literal["rfc7009", "rfc7009-if-advertised", "optional", "none"]
REVOCATION: tuple[Revocation, ...] = ("rfc7009", "rfc7009-if-advertised", "optional", "none")
ClientAuth = Literal["client_secret_basic", "client_secret_post"]


@dataclass(frozen=True)
class Provider:
    name: str
    display_name: str
    driver: str
    pkce: bool
    client_auth: ClientAuth
    scope_separator: str
    refresh_rotates: str
    revocation: Revocation
    scope_check: str
    implicit_scopes: tuple[str, ...]
    refresh_margin: int
    keepalive_days: int | None
    discovery: bool = False
    authority: str | None = None
    authorize_url: str | None = None
    token_url: str | None = None
    revoke_url: str | None = None
    identity_subject: tuple[str, ...] = ("sub",)
    identity_login: tuple[str, ...] = ("preferred_username", "email")
    profile_url: str | None = None


def parse(data: Any, source: str = "providers.yaml") -> dict[str, Provider]:
    if not isinstance(data, dict) or not isinstance(data.get("providers"), dict):
        raise SettingsError(f"{source}: expected a mapping 'providers'")
    providers = {}
    for name, spec in data["providers"].items():
        providers[name] = _provider(str(name), spec, source)
    return providers


_KNOWN = {
    "display_name", "driver", "discovery", "pkce", "client_auth", "scope_separator",
    "refresh_rotates", "revocation", "scope_check", "implicit_scopes", "refresh_margin",
    "keepalive_days", "authority", "authorize_url", "token_url", "revoke_url",
    "identity_subject", "identity_login", "profile_url",
}  # fmt: skip
_PKCE = ("S256", "none")
S = TypeVar("S", bound=str)
_CLIENT_AUTH: tuple[ClientAuth, ...] = ("client_secret_basic", "client_secret_post")


class _Spec:
    """One provider's entry, read field by field with the error naming the provider and field."""

    def __init__(self, spec: dict[str, Any], where: str) -> None:
        self._spec = spec
        self.where = where

    def field(self, key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        if key not in self._spec:
            if default is ...:
                raise SettingsError(f"{self.where}: '{key}' is required")
            return default
        value = self._spec[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
            raise SettingsError(f"{self.where}: '{key}' has the wrong type")
        return value

    def one_of(self, key: str, allowed: tuple[S, ...], default: Any = ..., hint: str = "") -> S:
        value = self.field(key, str, default)
        if value not in allowed:
            # A typo must never fall back to a default (an unknown scope_check is not "off").
            choices = hint or f"one of {', '.join(allowed)}"
            raise SettingsError(f"{self.where}: {key} must be {choices}")
        return cast(S, value)


def _provider(name: str, spec: Any, source: str) -> Provider:
    where = f"{source}: provider '{name}'"
    if not isinstance(spec, dict):
        raise SettingsError(f"{where}: expected a mapping")
    unknown = set(spec) - _KNOWN
    if unknown:
        raise SettingsError(f"{where}: unknown field(s) {sorted(unknown)}")
    f = _Spec(spec, where)
    driver = f.one_of("driver", DRIVERS)
    margin = f.field("refresh_margin", int)
    if margin < 0:
        raise SettingsError(f"{where}: refresh_margin must not be negative")
    discovery = f.field("discovery", bool, False)
    if driver == "oauth2" and not discovery and not spec.get("token_url"):
        raise SettingsError(f"{where}: an oauth2 provider needs discovery or a token_url")
    return Provider(
        name=name,
        display_name=f.field("display_name", str),
        driver=driver,
        pkce=f.one_of("pkce", _PKCE, hint="S256 or none (plain is never used)") == "S256",
        client_auth=f.one_of("client_auth", _CLIENT_AUTH, hint="client_secret_basic or _post"),
        scope_separator=f.field("scope_separator", str),
        refresh_rotates=f.field("refresh_rotates", str),
        revocation=f.one_of("revocation", REVOCATION),
        scope_check=f.one_of("scope_check", SCOPE_CHECKS, "strict"),
        implicit_scopes=tuple(f.field("implicit_scopes", list, [])),
        refresh_margin=margin,
        keepalive_days=f.field("keepalive_days", (int, type(None)), None),
        discovery=discovery,
        authority=f.field("authority", str, None),
        authorize_url=f.field("authorize_url", str, None),
        token_url=f.field("token_url", str, None),
        revoke_url=f.field("revoke_url", str, None),
        identity_subject=tuple(f.field("identity_subject", list)),
        identity_login=tuple(f.field("identity_login", list)),
        profile_url=f.field("profile_url", str, None),
    )


@functools.cache
def providers() -> dict[str, Provider]:
    with CATALOGUE.open() as handle:
        return parse(yaml.safe_load(handle))
