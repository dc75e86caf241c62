"""The apps file: the OAuth client registrations Keysteward holds connections for.

```yaml
apps:
  pagerduty-incidents:
    provider: pagerduty
    client_id: ${PAGERDUTY_CLIENT_ID}
    client_secret: ${PAGERDUTY_CLIENT_SECRET}
    scopes: [incidents.read, services.read]
```

A client secret is only ever an ``${ENV_NAME}`` reference (an app setting, in Azure a Key Vault
reference), never a literal. Everything is validated at start-up; errors name the app and field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import urlsplit

import yaml

from shared.config.catalogue import Provider, providers
from shared.config.settings import APPS_FILE, PUBLIC_URL, Settings, refuse_unresolved
from shared.foundation.errors import NotFound, SettingsError
from shared.foundation.secret import Secret
from shared.foundation.urls import loopback_host

APP_ID = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")
_REFERENCE = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_ENDPOINTS = (
    "issuer", "authority", "oidc_authority", "authorize_url", "token_url", "revoke_url",
    "pat_api_url", "devops_url", "profile_url",
)  # fmt: skip
_FIELDS = {
    "provider", "client_id", "client_secret", "scopes", "client_secret_expires_at", "tenant",
    "client_auth", "prompt", "revocation", "display_name", "extra_authorize_params",
    "organization", "pat_api_version", "identity", *_ENDPOINTS,
}  # fmt: skip
IDENTITY_CLAIMS = ("email", "preferred_username", "upn", "sub", "login")
IDENTITY_MATCHES = ("casefold", "exact")


@dataclass(frozen=True)
class IdentityPolicy:
    """Which claim of the signed-in identity must name the link's user id, and how they compare."""

    claim: str
    match: str = "casefold"

    def accepts(self, value: str | None, user_id: str) -> bool:
        if not value:
            return False
        if self.match == "exact":
            return value == user_id
        return value.casefold() == user_id.casefold()


@dataclass(frozen=True)
class App:
    id: str
    provider: Provider
    client_id: str
    client_secret: Secret
    scopes: tuple[str, ...]
    display_name: str
    issuer: str | None = None
    authority: str | None = None
    oidc_authority: str | None = None
    authorize_url: str | None = None
    token_url: str | None = None
    revoke_url: str | None = None
    # Azure DevOps PAT management (entra apps): the default organisation and API endpoints.
    organization: str | None = None
    pat_api_url: str | None = None
    devops_url: str | None = None
    pat_api_version: str | None = None
    profile_url: str | None = None
    identity: IdentityPolicy | None = None
    client_auth: str | None = None
    prompt: str | None = None
    revocation: bool | None = None
    client_secret_expires_at: datetime | None = None
    extra_authorize_params: tuple[tuple[str, str], ...] = ()

    @property
    def client_authentication(self) -> str:
        return self.client_auth or self.provider.client_auth


class Apps:
    def __init__(self, apps: Mapping[str, App]) -> None:
        self._apps = dict(apps)

    def get(self, app_id: str) -> App:
        app = self._apps.get(app_id)
        if app is None:
            raise NotFound(f"no app '{app_id}' is configured")
        return app

    def __contains__(self, app_id: object) -> bool:
        return app_id in self._apps

    def all(self) -> list[App]:
        return list(self._apps.values())


def load(settings: Settings) -> Apps:
    path = settings.apps_file
    if not path.exists():
        if APPS_FILE in settings.environment:
            raise SettingsError(f"{APPS_FILE}: '{path}' does not exist")
        return Apps({})  # no apps file yet: Keysteward runs, with no apps to connect
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SettingsError(f"{path}: not valid YAML ({exc.__class__.__name__})") from None
    loaded = parse(data, settings.environment, str(path))
    _redirects_reachable(loaded, settings, str(path))
    return loaded


def _redirects_reachable(apps: Apps, settings: Settings, source: str) -> None:
    """Legacy Azure DevOps OAuth takes only https redirect URIs (providers.md §2), and Keysteward's
    is under its public URL: refuse at start-up what every sign-in would fail on. Only the suite,
    whose fake of Azure DevOps takes loopback http, may say otherwise (``TEST_HTTP_LOOPBACK``)."""
    public_url = settings.public_url
    parts = urlsplit(public_url)
    if parts.scheme == "https" or (
        settings.test_http_loopback and loopback_host(parts.hostname or "")
    ):
        return
    for app in apps.all():
        if app.provider.driver == "azure-devops-oauth":
            raise SettingsError(
                f"{source}: app '{app.id}': legacy Azure DevOps OAuth accepts only an https "
                f"redirect URI, but {PUBLIC_URL} is '{public_url}': serve Keysteward over https"
            )


def parse(data: Any, env: Mapping[str, str], source: str = "apps.yaml") -> Apps:
    if data is None:
        return Apps({})
    if not isinstance(data, dict) or not isinstance(data.get("apps", {}), dict):
        raise SettingsError(f"{source}: expected a mapping 'apps' of app id to settings")
    apps = {}
    for app_id, spec in (data.get("apps") or {}).items():
        apps[str(app_id)] = _app(str(app_id), spec, env, source)
    return Apps(apps)


def _app(app_id: str, spec: Any, env: Mapping[str, str], source: str) -> App:
    where = f"{source}: app '{app_id}'"
    if not APP_ID.match(app_id):
        raise SettingsError(f"{where}: an app id is a slug of lowercase letters, digits and '-'")
    if not isinstance(spec, dict):
        raise SettingsError(f"{where}: expected a mapping of settings")
    unknown = set(spec) - _FIELDS
    if unknown:
        raise SettingsError(f"{where}: unknown field(s) {sorted(unknown)}")
    catalogue = providers()
    if spec.get("provider") not in catalogue:
        raise SettingsError(f"{where}: 'provider' must be one of {', '.join(catalogue)}")
    provider = catalogue[spec["provider"]]
    fields = _Fields(spec, where)
    client_auth = fields.text("client_auth")
    if client_auth not in (None, "client_secret_basic", "client_secret_post"):
        raise SettingsError(f"{where}: 'client_auth' is client_secret_basic or client_secret_post")
    revocation = spec.get("revocation")
    if revocation is not None and not isinstance(revocation, bool):
        raise SettingsError(f"{where}: 'revocation' is true or false")
    scopes = _scopes(spec.get("scopes"), where)
    identity = _identity(spec.get("identity"), where)
    if identity and provider.discovery and "openid" not in scopes:
        # Without an ID token nothing says who signed in, and every sign-in would be refused.
        raise SettingsError(f"{where}: an 'identity' policy needs the 'openid' scope")
    extra = spec.get("extra_authorize_params") or {}
    if not isinstance(extra, dict) or not all(isinstance(v, str) for v in extra.values()):
        raise SettingsError(f"{where}: 'extra_authorize_params' maps names to strings")
    return App(
        id=app_id,
        provider=provider,
        client_id=_resolve(fields.text("client_id", True) or "", env, f"{where}: 'client_id'"),
        client_secret=_secret(fields.text("client_secret", True) or "", env, where),
        scopes=scopes,
        display_name=fields.text("display_name") or app_id,
        client_auth=client_auth,
        prompt=fields.text("prompt"),
        revocation=revocation,
        organization=fields.text("organization"),
        pat_api_version=fields.text("pat_api_version"),
        client_secret_expires_at=_expiry(spec.get("client_secret_expires_at"), where),
        extra_authorize_params=tuple(sorted((str(k), v) for k, v in extra.items())),
        identity=identity,
        **_endpoints(fields, provider, where),
    )


class _Fields:
    def __init__(self, spec: dict[str, Any], where: str) -> None:
        self._spec = spec
        self._where = where

    def text(self, name: str, required: bool = False) -> str | None:
        value = self._spec.get(name)
        if value is None:
            if required:
                raise SettingsError(f"{self._where}: '{name}' is required")
            return None
        if not isinstance(value, str) or not value.strip():
            raise SettingsError(f"{self._where}: '{name}' must be a non-empty string")
        return value.strip()


def _secret(reference: str, env: Mapping[str, str], where: str) -> Secret:
    match = _REFERENCE.match(reference)
    if not match:
        raise SettingsError(
            f"{where}: 'client_secret' must be an environment reference like ${{NAME}}, "
            "never a literal secret"
        )
    value = env.get(match.group(1), "")
    if not value:
        raise SettingsError(f"{where}: 'client_secret' refers to ${{{match.group(1)}}}, not set")
    refuse_unresolved(f"{where}: 'client_secret' ${{{match.group(1)}}}", value)
    return Secret(value)


def _scopes(scopes: Any, where: str) -> tuple[str, ...]:
    if (
        not isinstance(scopes, list)
        or not scopes
        or not all(isinstance(s, str) and s and not any(c.isspace() for c in s) for s in scopes)
    ):
        raise SettingsError(f"{where}: 'scopes' must be a non-empty list of scope strings")
    return tuple(dict.fromkeys(scopes))


def _endpoints(fields: _Fields, provider: Provider, where: str) -> dict[str, str | None]:
    endpoints = {name: fields.text(name) for name in _ENDPOINTS}
    for name, url in endpoints.items():
        parts = urlsplit(url or "")
        if url is not None and (parts.scheme not in ("http", "https") or not parts.netloc):
            raise SettingsError(f"{where}: '{name}' must be an absolute URL")
    if provider.driver == "msal":
        if endpoints["authority"] and endpoints["oidc_authority"]:
            raise SettingsError(f"{where}: give 'authority' or 'oidc_authority', not both")
        if not endpoints["authority"] and not endpoints["oidc_authority"]:
            tenant = fields.text("tenant")
            if not tenant:
                raise SettingsError(
                    f"{where}: an entra app needs 'tenant' (or 'authority' / 'oidc_authority')"
                )
            endpoints["authority"] = (provider.authority or "").format(tenant=tenant)
    if provider.discovery and not endpoints["issuer"] and not endpoints["token_url"]:
        raise SettingsError(f"{where}: an {provider.name} app needs 'issuer' (or 'token_url')")
    return endpoints


def _identity(spec: Any, where: str) -> IdentityPolicy | None:
    if spec is None:
        return None
    hint = (
        f"{where}: 'identity' is {{claim: {' | '.join(IDENTITY_CLAIMS)}, "
        f"match: {' | '.join(IDENTITY_MATCHES)}}}"
    )
    if not isinstance(spec, dict) or set(spec) - {"claim", "match"}:
        raise SettingsError(hint)
    claim, match = spec.get("claim"), spec.get("match", "casefold")
    if claim not in IDENTITY_CLAIMS or match not in IDENTITY_MATCHES:
        raise SettingsError(hint)
    return IdentityPolicy(claim, match)


def _resolve(value: str, env: Mapping[str, str], where: str) -> str:
    match = _REFERENCE.match(value)
    if not match:
        return value
    resolved = env.get(match.group(1), "")
    if not resolved:
        raise SettingsError(f"{where} refers to ${{{match.group(1)}}}, which is not set")
    refuse_unresolved(f"{where} ${{{match.group(1)}}}", resolved)
    return resolved


def _expiry(value: Any, where: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    raise SettingsError(f"{where}: 'client_secret_expires_at' must be a date (YYYY-MM-DD)")
