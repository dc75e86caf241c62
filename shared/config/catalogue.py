"""The provider catalogue (providers.yaml), loaded once and validated field by field."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from shared.foundation.errors import SettingsError

CATALOGUE = Path(__file__).with_name("providers.yaml")
DRIVERS = ("oauth2", "azure-devops-oauth", "msal")
SCOPE_CHECKS = ("strict", "off")
REVOCATION = ("rfc7009", "rfc7009-if-advertised", "optional", "none")
Revocation = Literal["rfc7009", "rfc7009-if-advertised", "optional", "none"]


@dataclass(frozen=True)
class Provider:
    name: str
    display_name: str
    driver: str
    pkce: bool
    client_auth: Literal["client_secret_basic", "client_secret_post"]
    scope_separator: str
    refresh_rotates: str
    revocation: Revocation
    scope_check: bool
    implicit_scopes: tuple[str, ...]
    refresh_margin: int
    keepalive_days: int | None
    discovery: bool = False
    authority: str | None = None
    authorize_url: str | None = None
    token_url: str | None = None
    revoke_url: str | None = None


def parse(data: Any, source: str = "providers.yaml") -> dict[str, Provider]:
    if not isinstance(data, dict) or not isinstance(data.get("providers"), dict):
        raise SettingsError(f"{source}: expected a mapping 'providers'")
    providers = {}
    for name, spec in data["providers"].items():
        providers[name] = _provider(str(name), spec, source)
    return providers


def _provider(name: str, spec: Any, source: str) -> Provider:
    where = f"{source}: provider '{name}'"
    if not isinstance(spec, dict):
        raise SettingsError(f"{where}: expected a mapping")

    def field(key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        if key not in spec:
            if default is ...:
                raise SettingsError(f"{where}: '{key}' is required")
            return default
        value = spec[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
            raise SettingsError(f"{where}: '{key}' has the wrong type")
        return value

    known = {
        "display_name", "driver", "discovery", "pkce", "client_auth", "scope_separator",
        "refresh_rotates", "revocation", "scope_check", "implicit_scopes", "refresh_margin",
        "keepalive_days", "authority", "authorize_url", "token_url", "revoke_url",
    }  # fmt: skip
    unknown = set(spec) - known
    if unknown:
        raise SettingsError(f"{where}: unknown field(s) {sorted(unknown)}")
    driver = field("driver", str)
    if driver not in DRIVERS:
        raise SettingsError(f"{where}: driver must be one of {', '.join(DRIVERS)}")
    pkce = field("pkce", str)
    if pkce not in ("S256", "none"):
        raise SettingsError(f"{where}: pkce must be S256 or none (plain is never used)")
    client_auth = field("client_auth", str)
    if client_auth not in ("client_secret_basic", "client_secret_post"):
        raise SettingsError(f"{where}: client_auth must be client_secret_basic or _post")
    revocation = field("revocation", str)
    if revocation not in REVOCATION:
        raise SettingsError(f"{where}: revocation must be one of {', '.join(REVOCATION)}")
    scope_check = field("scope_check", str, "strict")
    if scope_check not in SCOPE_CHECKS:
        # A typo must not turn the check off.
        raise SettingsError(f"{where}: scope_check must be one of {', '.join(SCOPE_CHECKS)}")
    margin = field("refresh_margin", int)
    if margin < 0:
        raise SettingsError(f"{where}: refresh_margin must not be negative")
    keepalive = field("keepalive_days", (int, type(None)), None)
    discovery = field("discovery", bool, False)
    if driver == "oauth2" and not discovery and not spec.get("token_url"):
        raise SettingsError(f"{where}: an oauth2 provider needs discovery or a token_url")
    return Provider(
        name=name,
        display_name=field("display_name", str),
        driver=driver,
        pkce=pkce == "S256",
        client_auth=client_auth,
        scope_separator=field("scope_separator", str),
        refresh_rotates=field("refresh_rotates", str),
        revocation=revocation,
        scope_check=scope_check == "strict",
        implicit_scopes=tuple(field("implicit_scopes", list, [])),
        refresh_margin=margin,
        keepalive_days=keepalive,
        discovery=discovery,
        authority=field("authority", str, None),
        authorize_url=field("authorize_url", str, None),
        token_url=field("token_url", str, None),
        revoke_url=field("revoke_url", str, None),
    )


@functools.cache
def providers() -> dict[str, Provider]:
    with CATALOGUE.open() as handle:
        return parse(yaml.safe_load(handle))
