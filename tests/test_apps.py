from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.config import apps, catalogue
from shared.config.settings import Settings
from shared.foundation.errors import SettingsError

ENV = {"PD_ID": "pd-client", "PD_SECRET": "pd-secret-value", "ADO_SECRET": "ado-secret"}


def parse(spec: dict[str, Any], env: dict[str, str] = ENV) -> apps.Apps:
    return apps.parse({"apps": spec}, env)


PAGERDUTY = {
    "provider": "pagerduty",
    "client_id": "${PD_ID}",
    "client_secret": "${PD_SECRET}",
    "scopes": ["incidents.read", "services.read"],
}


def test_the_catalogue_has_the_four_providers_and_validates() -> None:
    providers = catalogue.providers()
    assert set(providers) == {"oidc", "entra", "azure-devops-oauth", "pagerduty"}
    assert providers["oidc"].discovery
    assert providers["oidc"].pkce
    assert providers["pagerduty"].pkce
    assert providers["pagerduty"].revocation == "optional"
    assert not providers["azure-devops-oauth"].pkce
    assert providers["entra"].driver == "msal"
    assert providers["entra"].keepalive_days == 90
    assert providers["pagerduty"].keepalive_days == 30


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"driver": "soap"}, "driver must be one of"),
        ({"pkce": "plain"}, "pkce must be S256 or none"),
        ({"refresh_margin": "5m"}, "refresh_margin"),
        ({"colour": "blue"}, "unknown field"),
        ({"discovery": False, "token_url": None}, "needs discovery or a token_url"),
        ({"scope_check": "strcit"}, "scope_check must be one of strict, resource, off"),
    ],
)
def test_a_bad_catalogue_entry_is_named(change: dict[str, Any], message: str) -> None:
    data = yaml.safe_load(catalogue.CATALOGUE.read_text())
    data["providers"]["oidc"].update(change)
    data["providers"]["oidc"] = {
        k: v for k, v in data["providers"]["oidc"].items() if v is not None
    }
    with pytest.raises(SettingsError, match=f"provider 'oidc'.*{message}"):
        catalogue.parse(data)


def test_an_app_resolves_its_references_and_hides_its_secret() -> None:
    app = parse({"pagerduty-incidents": PAGERDUTY}).get("pagerduty-incidents")
    assert app.client_id == "pd-client"
    assert app.client_secret.reveal() == "pd-secret-value"
    assert "pd-secret-value" not in repr(app)
    assert app.scopes == ("incidents.read", "services.read")
    assert app.provider.name == "pagerduty"


def test_an_entra_app_builds_its_authority_from_the_tenant() -> None:
    app = parse(
        {"ado-pats": {"provider": "entra", "client_id": "c", "client_secret": "${PD_SECRET}",
                      "tenant": "contoso.onmicrosoft.com",
                      "scopes": ["499b84ac-1321-427f-aa17-267ca6975798/.default"]}}
    ).get("ado-pats")  # fmt: skip
    assert app.authority == "https://login.microsoftonline.com/contoso.onmicrosoft.com"


@pytest.mark.parametrize(
    ("app_id", "change", "message"),
    [
        ("pd", {"client_secret": "literal-secret"}, "'client_secret' must be an environment"),
        ("pd", {"client_secret": "${MISSING}"}, r"refers to \$\{MISSING\}, not set"),
        ("pd", {"client_id": "${NOPE}"}, "client_id"),
        ("pd", {"provider": "github"}, "'provider' must be one of"),
        ("pd", {"scopes": []}, "'scopes'"),
        ("pd", {"scopes": ["a b"]}, "'scopes'"),
        ("pd", {"token_url": "not a url"}, "'token_url' must be an absolute URL"),
        ("pd", {"colour": "blue"}, "unknown field"),
        ("pd", {"client_secret_expires_at": "soon"}, "client_secret_expires_at"),
        ("Bad_Id", {}, "slug"),
        ("oidc-app", {"provider": "oidc"}, "needs 'issuer'"),
        ("entra-app", {"provider": "entra"}, "needs 'tenant'"),
    ],
)
def test_a_bad_app_is_refused_naming_the_app_and_field(
    app_id: str, change: dict[str, Any], message: str
) -> None:
    spec = {**PAGERDUTY, **change}
    with pytest.raises(SettingsError, match=f"app '{app_id}'.*{message}"):
        parse({app_id: spec})


def test_the_secret_value_never_appears_in_an_error() -> None:
    with pytest.raises(SettingsError) as caught:
        parse({"pd": {**PAGERDUTY, "client_secret": "sup3r-s3cret-literal"}})
    assert "sup3r-s3cret-literal" not in str(caught.value)


def test_the_example_apps_file_is_valid(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[1] / "apps.example.yaml"
    data = yaml.safe_load(example.read_text())
    names = {
        ref[2:-1]
        for spec in data["apps"].values()
        for ref in (spec["client_secret"], spec["client_id"])
        if ref.startswith("${")
    }
    loaded = apps.parse(data, dict.fromkeys(names, "x"))
    assert {a.provider.name for a in loaded.all()} == {
        "oidc", "entra", "azure-devops-oauth", "pagerduty",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("public_url", "refused"),
    [("http://keysteward.contoso.com", True), ("http://10.0.0.4:7071", True),
     ("https://keysteward.contoso.com", False), ("http://127.0.0.1:7071", True),
     ("http://localhost:7071", True), ("http://[::1]:7071", True)],
)  # fmt: skip
def test_a_legacy_azure_devops_app_needs_an_https_public_url(
    app_env: dict[str, str], tmp_path: Path, public_url: str, refused: bool
) -> None:
    """providers.md §2: its redirect URI must be https; Keysteward's lies under its public URL.
    Loopback too (make run's own URL): real Azure DevOps takes no http callback."""
    ado = {"provider": "azure-devops-oauth", "client_id": "6b9c2f1e-4a3d-4c55-9f0e-2d1b7a8c9e01",
           "client_secret": "${ADO_SECRET}", "scopes": ["vso.work"]}  # fmt: skip
    apps_file = tmp_path / "apps.yaml"
    apps_file.write_text(yaml.safe_dump({"apps": {"ado": ado, "pd": PAGERDUTY}}))
    env = {**app_env, **ENV, "KEYSTEWARD_APPS_FILE": str(apps_file),
           "KEYSTEWARD_PUBLIC_URL": public_url}  # fmt: skip
    settings = Settings.from_env(env)
    if not refused:
        assert "ado" in apps.load(settings)
        return
    with pytest.raises(SettingsError) as caught:
        apps.load(settings)
    message = str(caught.value)
    assert "\n" not in message
    assert "app 'ado'" in message
    assert "https" in message
    assert public_url in message


@pytest.mark.parametrize("public_url", ["http://127.0.0.1:7071", "http://[::1]:7071"])
def test_only_the_suite_may_use_loopback_http_for_its_fake(
    app_env: dict[str, str], tmp_path: Path, public_url: str
) -> None:
    ado = {"provider": "azure-devops-oauth", "client_id": "6b9c2f1e-4a3d-4c55-9f0e-2d1b7a8c9e01",
           "client_secret": "${ADO_SECRET}", "scopes": ["vso.work"]}  # fmt: skip
    apps_file = tmp_path / "apps.yaml"
    apps_file.write_text(yaml.safe_dump({"apps": {"ado": ado}}))
    env = {**app_env, **ENV, "KEYSTEWARD_APPS_FILE": str(apps_file),
           "KEYSTEWARD_PUBLIC_URL": public_url,
           "KEYSTEWARD_TEST_HTTP_LOOPBACK": "true"}  # fmt: skip
    assert "ado" in apps.load(Settings.from_env(env))
    remote = {**env, "KEYSTEWARD_PUBLIC_URL": "http://keysteward.contoso.com"}
    with pytest.raises(SettingsError):
        apps.load(Settings.from_env(remote))


def test_an_http_public_url_is_fine_without_a_legacy_azure_devops_app(
    app_env: dict[str, str], tmp_path: Path
) -> None:
    apps_file = tmp_path / "apps.yaml"
    apps_file.write_text(yaml.safe_dump({"apps": {"pd": PAGERDUTY}}))
    env = {**app_env, **ENV, "KEYSTEWARD_APPS_FILE": str(apps_file),
           "KEYSTEWARD_PUBLIC_URL": "http://keysteward.contoso.com"}  # fmt: skip
    assert "pd" in apps.load(Settings.from_env(env))


def test_a_client_secret_left_as_a_key_vault_reference_is_refused() -> None:
    """The app's secret setting still holds App Service's unresolved reference (issue 19)."""
    env = {
        **ENV,
        "PD_SECRET": "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/pd/)",
    }
    with pytest.raises(SettingsError) as caught:
        apps.parse({"apps": {"pd": PAGERDUTY}}, env)
    message = str(caught.value)
    assert "\n" not in message
    assert "${PD_SECRET}" in message
    assert "unresolved Key Vault reference" in message
