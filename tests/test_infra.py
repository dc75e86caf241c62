"""The Azure deployment: infra/ (Bicep), azure.yaml, the azd hooks and the deployment package.

Every Bicep file parses with pycep (what checkov parses Bicep with; checkov silently skips a file
it cannot parse), checkov reports no failed check and every skipped one says why, the app settings
cover every setting the code reads, and the package ``.funcignore`` leaves is what Azure needs.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import io
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from email.message import Message
from pathlib import Path
from types import ModuleType
from typing import Any

import pathspec
import pytest
import yaml
from pycep import BicepParser

from shared.config import settings as settings_module
from shared.config.settings import KEYSTEWARD_SETTINGS, TEST_SETTINGS, Settings

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))
CHECKOV = Path(sys.executable).parent / "checkov"
_PARSER = BicepParser()

# Built-in role definition ids (https://learn.microsoft.com/azure/role-based-access-control/built-in-roles).
ROLES = {
    "Storage Blob Data Owner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "Storage Queue Data Contributor": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
    "Storage Table Data Contributor": "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    "Key Vault Secrets User": "4633458b-17de-408a-b874-0445c86b69e6",
    "Key Vault Secrets Officer": "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",
    "Monitoring Metrics Publisher": "3913510d-42f4-4e42-8a64-420c390055eb",
}


@functools.cache
def parse(path: Path) -> dict[str, Any]:
    """pycep's JSON for a Bicep file, parsed once per run."""
    return dict(_PARSER.parse(file_path=path))


def bicep(relative: str) -> dict[str, Any]:
    return parse(INFRA / relative)


def body(resource: dict[str, Any]) -> dict[str, Any]:
    """A resource's properties, under its loop or condition if it has one."""
    config: dict[str, Any] = resource["config"]
    while "config" in config and ("loop_type" in config or "condition" in config):
        config = config["config"]
    return config


def variable(parsed: dict[str, Any], name: str) -> Any:
    return parsed["variables"][name]["value"]


def hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("keysteward_hooks", INFRA / "hooks/keysteward.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # so its classes resolve by module name
    spec.loader.exec_module(module)
    return module


# -- Bicep parses -------------------------------------------------------------------------------


def test_the_infrastructure_is_where_azd_looks_for_it() -> None:
    assert (INFRA / "main.bicep").is_file()
    assert (INFRA / "main.parameters.json").is_file()
    assert len(BICEP_FILES) >= 6


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_every_bicep_file_parses(path: Path) -> None:
    parsed = parse(path)
    assert parsed["resources"] or parsed.get("modules"), f"{path.name} declares nothing"


def test_main_deploys_every_module_and_only_existing_ones() -> None:
    main = bicep("main.bicep")
    assert main["globals"]["scope"]["value"] == "subscription"
    used = {module["detail"]["path"] for module in main["modules"].values()}
    assert all((INFRA / path).is_file() for path in used), used
    modules = {str(p.relative_to(INFRA)) for p in BICEP_FILES} - {"main.bicep"}
    assert used == modules, f"modules main.bicep does not deploy: {sorted(modules - used)}"


def test_resource_names_use_the_abbreviations_and_fit_azure_limits() -> None:
    abbreviations = json.loads((INFRA / "abbreviations.json").read_text())
    used = set(re.findall(r"abbrs\.(\w+)", (INFRA / "main.bicep").read_text()))
    assert used, "main.bicep names resources with abbreviations.json"
    assert used <= set(abbreviations), f"not in abbreviations.json: {used - set(abbreviations)}"
    token = 13  # uniqueString() is 13 characters
    assert len(abbreviations["storageStorageAccounts"]) + token <= 24
    assert len(abbreviations["keyVaultVaults"]) + token <= 24


# -- checkov ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkov() -> dict[str, Any]:
    """One checkov run over infra/ (offline: --skip-download), its JSON report and runtime."""
    assert CHECKOV.is_file(), f"{CHECKOV} is missing: make setup installs requirements-dev.txt"
    started = time.monotonic()
    done = subprocess.run(
        [str(CHECKOV), "-d", str(INFRA), "--framework", "bicep", "--compact", "--quiet",
         "--skip-download", "-o", "json"],
        capture_output=True, text=True, timeout=300, check=False, cwd=ROOT,
        env={**os.environ, "LOG_LEVEL": "WARNING"},
    )  # fmt: skip
    elapsed = time.monotonic() - started
    # 0: no failed check; 1: failed checks (reported below). Anything else is checkov breaking.
    assert done.returncode in (0, 1), f"checkov exited {done.returncode}:\n{done.stderr[-3000:]}"
    report = json.loads(done.stdout)
    reports = report if isinstance(report, list) else [report]
    (bicep_report,) = [r for r in reports if r.get("check_type") == "bicep"]
    print(f"checkov {bicep_report['summary']} in {elapsed:.1f}s")
    return bicep_report  # type: ignore[no-any-return]


def test_checkov_reports_no_failed_check(checkov: dict[str, Any]) -> None:
    failed = checkov["results"].get("failed_checks", [])
    listing = "\n".join(
        f"  {c['check_id']} {c['check_name']}: {c['resource']} in infra{c['file_path']}"
        f" lines {c['file_line_range']}"
        for c in failed
    )
    assert not failed, (
        f"checkov found {len(failed)} failed checks; fix them, or skip one with "
        f"'// checkov:skip=CKV_...: why' inside the resource:\n{listing}"
    )
    summary = checkov["summary"]
    assert summary["parsing_errors"] == 0, "checkov could not parse a Bicep file"
    assert summary["passed"] > 0
    assert summary["resource_count"] > 0


def test_every_skipped_check_says_why(checkov: dict[str, Any]) -> None:
    for check in checkov["results"].get("skipped_checks", []):
        reason = (check["check_result"].get("suppress_comment") or "").strip()
        where = f"{check['check_id']} on {check['resource']}"
        assert reason, f"{where}: skipped without a reason"
        assert reason != "No comment provided", f"{where}: skipped without a reason"
        assert len(reason) >= 40, f"{where}: say why in a sentence, not {reason!r}"


# -- the app settings agree with the code -------------------------------------------------------


@pytest.fixture(scope="module")
def functions() -> dict[str, Any]:
    return bicep("app/functions.bicep")


def app_settings(functions: dict[str, Any]) -> dict[str, Any]:
    entries = variable(functions, "appSettings")
    names = [entry["name"] for entry in entries]
    assert len(names) == len(set(names)), "an app setting appears twice"
    return {entry["name"]: entry["value"] for entry in entries}


def leaves(value: Any, functions: dict[str, Any]) -> list[str]:
    """Every string a setting's Bicep value can come from, variables resolved."""
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in leaves(item, functions)]
    if isinstance(value, list):
        return [leaf for item in value for leaf in leaves(item, functions)]
    if isinstance(value, str) and value in functions["variables"]:
        return leaves(variable(functions, value), functions)
    return [str(value)]


def test_the_site_uses_the_app_settings_list(functions: dict[str, Any]) -> None:
    site = body(functions["resources"]["functionApp"])
    assert site["properties"]["siteConfig"]["appSettings"] == {
        "function": {
            "type": "concat",
            "parameters": {"arg_1": "appSettings", "arg_2": "appSecretSettings"},
        }
    }


def test_app_settings_include_every_setting_the_code_reads(functions: dict[str, Any]) -> None:
    settings = app_settings(functions)
    missing = [name for name in KEYSTEWARD_SETTINGS if name not in settings]
    assert not missing, f"shared/config/settings.py reads {missing}, which infra never sets"
    unknown = [n for n in settings if n.startswith("KEYSTEWARD_") and n not in KEYSTEWARD_SETTINGS]
    assert not unknown, f"infra sets {unknown}, which the code never reads"
    test_only = [name for name in TEST_SETTINGS if name in settings]
    assert not test_only, f"{test_only} are for tests only and must never be set in Azure"


def test_app_settings_default_to_what_the_code_defaults_to(functions: dict[str, Any]) -> None:
    settings = app_settings(functions)
    defaults = {
        field.name: field.default
        for field in dataclasses.fields(Settings)
        if field.default is not dataclasses.MISSING and field.default is not None
    }
    assert defaults["refresh_schedule"] == settings_module.DEFAULT_REFRESH_SCHEDULE
    checked = []
    for name in KEYSTEWARD_SETTINGS:
        field = name.removeprefix("KEYSTEWARD_").lower()
        if field not in defaults or defaults[field] == ():
            continue
        default = defaults[field]
        candidates = leaves(settings[name], functions)
        if isinstance(default, int | float):
            numbers = [float(c) for c in candidates if c.replace(".", "", 1).isdigit()]
            assert float(default) in numbers, f"{name}: {candidates}, the code's default {default}"
        else:
            assert str(default) in candidates, f"{name}: {candidates}, the code's default {default}"
        checked.append(name)
    assert len(checked) >= 8, checked


def test_secrets_are_key_vault_references_resolved_as_the_identity(
    functions: dict[str, Any],
) -> None:
    settings = app_settings(functions)
    hook = hooks()
    for name, secret_var, secret in [
        ("KEYSTEWARD_ENCRYPTION_KEYS", "encryptionKeysSecretName", hook.ENCRYPTION_KEYS_SECRET),
        ("KEYSTEWARD_WEBHOOK_SECRET", "webhookSecretSecretName", hook.WEBHOOK_SECRET_SECRET),
    ]:
        assert settings[name] == (
            f"@Microsoft.KeyVault(VaultName=${{keyVaultName}};SecretName=${{{secret_var}}})"
        )
        assert variable(functions, secret_var) == secret  # the hook creates what the app reads
    loop = variable(functions, "appSecretSettings")
    assert loop["loop_type"]["detail"]["array_name"] == "appSecretSettingNames"
    assert loop["config"]["value"] == (
        "@Microsoft.KeyVault(VaultName=${keyVaultName};"
        "SecretName=${toLower(replace(settingName, '_', '-'))})"
    )
    assert hook.secret_name("PAGERDUTY_CLIENT_SECRET") == "pagerduty-client-secret"
    site = body(functions["resources"]["functionApp"])
    assert site["properties"]["keyVaultReferenceIdentity"] == "identityId"
    assert site["identity"] == {
        "type": "UserAssigned",
        "userAssignedIdentities": {"'${identityId}'": {}},
    }


def test_storage_is_identity_based_and_no_setting_holds_a_key(functions: dict[str, Any]) -> None:
    settings = app_settings(functions)
    assert settings["AzureWebJobsStorage__credential"] == "managedidentity"
    assert settings["AzureWebJobsStorage__clientId"] == "identityClientId"
    for service in ("blob", "queue", "table"):
        uri = settings[f"AzureWebJobsStorage__{service}ServiceUri"]
        assert uri == f"https://${{storageAccountName}}.{service}.${{storageSuffix}}"
    assert settings["KEYSTEWARD_APPS_FILE"] == "apps.yaml"
    assert settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == (
        "ClientId=${identityClientId};Authorization=AAD"
    )
    forbidden = {
        "AzureWebJobsStorage",  # a connection string: shared keys are off
        "APPINSIGHTS_INSTRUMENTATIONKEY",
        "FUNCTIONS_WORKER_RUNTIME",  # not allowed on Flex Consumption: functionAppConfig.runtime
        "FUNCTIONS_EXTENSION_VERSION",
        "WEBSITE_RUN_FROM_PACKAGE",
    }
    assert not forbidden & set(settings)


# What the deployment feeds app/functions.bicep's parameters without defaults, and the two
# variables that depend on the cloud (environment()), as in Azure's public cloud.
DEPLOYED = {
    "name": "func-abc123",
    "storageAccountName": "stabc123",
    "identityClientId": "00000000-0000-0000-0000-000000000001",
    "applicationInsightsConnectionString": "InstrumentationKey=0;IngestionEndpoint=https://x/",
    "keyVaultName": "kv-abc123",
    "storageSuffix": "core.windows.net",
    "appServiceSuffix": "azurewebsites.net",
}


def evaluate(value: Any, parsed: dict[str, Any]) -> str:
    """The value of a setting's Bicep expression with every parameter at its default. Handles the
    forms the settings use: literals, variables, parameters, ${...} and `empty(x) ? a : b`."""
    if isinstance(value, dict):
        operands = value["operator"]["operands"]
        assert value["operator"]["type"] == "conditional"
        tested = operands["condition"]["function"]
        assert tested["type"] == "empty"
        empty = evaluate(tested["parameters"]["item_to_test"], parsed) == ""
        return evaluate(operands["true_value" if empty else "false_value"], parsed)
    if value in DEPLOYED:
        return DEPLOYED[value]
    if value in parsed["variables"]:
        return evaluate(variable(parsed, value), parsed)
    if value in parsed["parameters"]:
        return str(parsed["parameters"][value].get("default", ""))
    return re.sub(r"\$\{(\w+)\}", lambda m: evaluate(m.group(1), parsed), str(value))


def test_the_settings_as_deployed_are_accepted_by_keysteward(functions: dict[str, Any]) -> None:
    """Evaluate every app setting as deployed with default parameters, put the Key Vault secrets
    the postprovision hook generates in place of the references, and let Keysteward read it."""
    hook = hooks()
    env = {name: evaluate(value, functions) for name, value in app_settings(functions).items()}
    assert env["KEYSTEWARD_ENCRYPTION_KEYS"] == (
        "@Microsoft.KeyVault(VaultName=kv-abc123;SecretName=keysteward-encryption-keys)"
    )
    env["KEYSTEWARD_ENCRYPTION_KEYS"] = hook.new_key()
    vault = FakeVault({})
    hook.ensure_secrets(vault, {}, lambda _: None)
    env["KEYSTEWARD_WEBHOOK_SECRET"] = vault.secrets[hook.WEBHOOK_SECRET_SECRET]
    parsed = Settings.from_env(env)
    assert parsed.storage.identity_based
    assert parsed.storage.credential == "managedidentity"
    assert parsed.storage.client_id == DEPLOYED["identityClientId"]
    assert parsed.storage.table_uri == "https://stabc123.table.core.windows.net"
    assert parsed.storage.queue_uri == "https://stabc123.queue.core.windows.net"
    assert parsed.public_url == "https://func-abc123.azurewebsites.net"
    assert str(parsed.apps_file) == "apps.yaml"
    assert parsed.refresh_schedule == settings_module.DEFAULT_REFRESH_SCHEDULE
    assert parsed.webhook_url is None
    assert parsed.allowed_return_urls == ()


def test_the_public_url_defaults_to_the_default_host_name(functions: dict[str, Any]) -> None:
    url = variable(functions, "keystewardPublicUrl")["operator"]["operands"]
    assert url["true_value"] == "https://${name}.${appServiceSuffix}"
    assert url["false_value"] == "publicUrl"
    outputs = functions["outputs"]
    assert outputs["uri"]["value"] == "https://${functionApp.properties.defaultHostName}"


# -- the function app, storage, vault and monitoring --------------------------------------------


def test_the_function_app_runs_on_flex_consumption(functions: dict[str, Any]) -> None:
    plan = body(functions["resources"]["plan"])
    assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    assert plan["properties"]["reserved"] is True
    site = body(functions["resources"]["functionApp"])
    assert site["kind"] == "functionapp,linux"
    config = site["properties"]["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "3.11"}
    storage = config["deployment"]["storage"]
    assert storage["type"] == "blobContainer"
    assert storage["authentication"] == {
        "type": "UserAssignedIdentity",
        "userAssignedIdentityResourceId": "identityId",
    }
    assert set(config["scaleAndConcurrency"]) == {"maximumInstanceCount", "instanceMemoryMB"}
    assert site["properties"]["httpsOnly"] is True
    site_config = site["properties"]["siteConfig"]
    assert site_config["minTlsVersion"] == "1.2"
    assert site_config["ftpsState"] == "Disabled"


def test_the_runtime_is_the_python_the_project_targets(functions: dict[str, Any]) -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'target-version = "py311"' in pyproject
    config = body(functions["resources"]["functionApp"])["properties"]["functionAppConfig"]
    assert config["runtime"]["version"] == "3.11"


def test_basic_publishing_credentials_are_off(functions: dict[str, Any]) -> None:
    policies = {
        body(r)["name"]: body(r)["properties"]
        for r in functions["resources"].values()
        if r["type"] == "Microsoft.Web/sites/basicPublishingCredentialsPolicies"
    }
    assert policies == {"ftp": {"allow": False}, "scm": {"allow": False}}


def test_the_site_is_tagged_for_azd(functions: dict[str, Any]) -> None:
    site = body(functions["resources"]["functionApp"])
    assert site["tags"]["function"]["parameters"]["arg_2"] == {"'azd-service-name'": "serviceName"}
    main = bicep("main.bicep")
    assert main["modules"]["functions"]["config"]["params"]["serviceName"] == "api"
    assert variable(main, "tags") == {"'azd-env-name'": "environmentName"}
    text = (INFRA / "main.bicep").read_text()
    assert (
        "var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))"
        in text
    )
    assert "name: '${abbrs.resourcesResourceGroups}${environmentName}'" in text
    outputs = bicep("main.bicep")["outputs"]
    for name in ("AZURE_LOCATION", "AZURE_TENANT_ID", "AZURE_RESOURCE_GROUP",
                 "AZURE_FUNCTION_APP_NAME", "AZURE_KEY_VAULT_NAME", "AZURE_KEY_VAULT_ENDPOINT",
                 "SERVICE_API_NAME", "SERVICE_API_URI"):  # fmt: skip
        assert name in outputs, f"main.bicep should output {name}"


def test_storage_allows_no_shared_key_and_no_anonymous_access() -> None:
    storage = body(bicep("core/storage.bicep")["resources"]["storage"])["properties"]
    assert storage["allowSharedKeyAccess"] is False
    assert storage["allowBlobPublicAccess"] is False
    assert storage["minimumTlsVersion"] == "TLS1_2"
    assert storage["supportsHttpsTrafficOnly"] is True
    assert storage["defaultToOAuthAuthentication"] is True


def test_the_vault_uses_rbac_and_cannot_be_purged() -> None:
    vault = body(bicep("core/keyvault.bicep")["resources"]["vault"])["properties"]
    assert vault["enableRbacAuthorization"] is True
    assert vault["enableSoftDelete"] is True
    assert vault["enablePurgeProtection"] is True


def test_application_insights_sits_on_log_analytics_without_local_auth() -> None:
    monitor = bicep("core/monitor.bicep")
    insights = body(monitor["resources"]["applicationInsights"])["properties"]
    assert insights["WorkspaceResourceId"] == "logAnalytics.id"
    assert insights["DisableLocalAuth"] is True


def role_assignments() -> Iterator[tuple[str, str, str, str]]:
    """(file, principal, role definition id, scope) of every role assignment in infra/."""
    for path in BICEP_FILES:
        parsed = parse(path)
        for resource in parsed["resources"].values():
            if resource["type"] != "Microsoft.Authorization/roleAssignments":
                continue
            config = body(resource)
            assert config["name"]["function"]["type"] == "guid", "name role assignments by guid()"
            role = config["properties"]["roleDefinitionId"]["function"]["parameters"]
            assert role["resource_type"] == "Microsoft.Authorization/roleDefinitions"
            names = [role["resource_name_1"]]
            loop = resource["config"].get("loop_type")
            if loop and loop["detail"]["item_name"] == names[0]:  # [for role in someRoles: ...]
                names = variable(parsed, loop["detail"]["array_name"])
            for name in names:
                role_id = variable(parsed, name)
                yield path.name, config["properties"]["principalId"], role_id, config["scope"]


def test_the_app_identity_holds_only_the_roles_it_needs() -> None:
    used = {role for _, _, role, _ in role_assignments()}
    assert used == set(ROLES.values()), f"unexpected role ids: {used - set(ROLES.values())}"
    app = {(file, role, scope) for file, who, role, scope in role_assignments()
           if who == "appPrincipalId"}  # fmt: skip
    assert app == {
        ("storage.bicep", ROLES["Storage Blob Data Owner"], "containers[i]"),
        ("storage.bicep", ROLES["Storage Table Data Contributor"], "storage"),
        ("storage.bicep", ROLES["Storage Queue Data Contributor"], "storage"),
        ("keyvault.bicep", ROLES["Key Vault Secrets User"], "vault"),
        ("monitor.bicep", ROLES["Monitoring Metrics Publisher"], "applicationInsights"),
    }


def test_blob_data_owner_is_granted_per_container_including_the_deployment_one() -> None:
    storage = bicep("core/storage.bicep")
    assert variable(storage, "blobContainerNames") == [
        "deploymentContainerName",
        "azure-webjobs-hosts",
        "azure-webjobs-secrets",
    ]
    main = bicep("main.bicep")
    container = main["modules"]["storage"]["config"]["params"]["deploymentContainerName"]
    assert storage["outputs"]["deploymentContainerUrl"]["value"] == (
        "${storage.properties.primaryEndpoints.blob}${deploymentContainerName}"
    )
    assert container == "app-package"


def test_no_parameter_default_is_a_secret() -> None:
    for path in BICEP_FILES:
        for name, param in parse(path)["parameters"].items():
            secure = any(d["type"] == "secure" for d in param["decorators"])
            lowered = name.lower()
            if secure or lowered.endswith(("secret", "password", "key", "keys", "token")):
                assert param.get("default") in (None, ""), f"{path.name}: {name} has a default"
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    for name, entry in parameters.items():
        assert str(entry["value"]).startswith("${"), f"{name}: only ${{ENV}} references here"


def test_the_parameters_file_matches_main() -> None:
    main = bicep("main.bicep")["parameters"]
    given = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert set(given) <= set(main), f"unknown parameters: {set(given) - set(main)}"
    required = {name for name, param in main.items() if "default" not in param}
    assert required <= set(given), f"azd would prompt for {required - set(given)}"
    assert given["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    assert given["location"]["value"] == "${AZURE_LOCATION}"


# -- azure.yaml and the hooks -------------------------------------------------------------------


def test_azure_yaml_deploys_this_directory_as_the_function_app() -> None:
    project = yaml.safe_load((ROOT / "azure.yaml").read_text())
    assert project["name"] == "keysteward"
    assert project["metadata"]["template"].startswith("keysteward@")
    assert project["services"] == {
        "api": {"project": ".", "language": "python", "host": "function"}
    }
    commands = {
        hook: {shell["run"].split()[-1] for shell in spec.values()}
        for hook, spec in project["hooks"].items()
    }
    assert commands == {"prepackage": {"check-apps"}, "postprovision": {"ensure-secrets"}}
    for spec in project["hooks"].values():
        for shell in spec.values():
            assert " infra/hooks/keysteward.py " in f" {shell['run']} "


def test_a_generated_key_ring_is_one_keysteward_accepts() -> None:
    hook = hooks()
    ring = hook.new_key(datetime(2026, 11, 22, 16, 5, 9, tzinfo=UTC))
    assert ring.startswith("k20261122160509:")
    ((kid, key),) = settings_module._key_ring(ring)
    assert kid == "k20261122160509"
    assert len(key) == 32


def test_rotating_puts_a_new_key_first_and_keeps_the_old_ones() -> None:
    hook = hooks()
    old = hook.new_key(datetime(2026, 1, 1, tzinfo=UTC))
    ring = hook.rotated(old, datetime(2026, 6, 1, tzinfo=UTC))
    kids = [kid for kid, _ in settings_module._key_ring(ring)]
    assert kids == ["k20260601000000", "k20260101000000"]
    assert ring.endswith("," + old)
    assert hook.dropped(ring, "k20260101000000") == ring.split(",")[0]
    with pytest.raises(hook.HookError, match="sealed with: rotate first"):
        hook.dropped(ring, "k20260601000000")
    with pytest.raises(hook.HookError, match="already in the ring"):
        hook.rotated(ring, datetime(2026, 6, 1, tzinfo=UTC))
    with pytest.raises(hook.HookError, match="no key 'nope'"):
        hook.dropped(ring, "nope")
    with pytest.raises(hook.HookError, match="not 'kid:base64key'"):
        hook.rotated("garbage")


class FakeVault:
    def __init__(self, secrets: dict[str, str]) -> None:
        self.secrets = dict(secrets)
        self.writes: list[str] = []

    def get(self, name: str) -> str | None:
        return self.secrets.get(name)

    def set(self, name: str, value: str, content_type: str) -> None:
        self.secrets[name] = value
        self.writes.append(name)


def test_ensure_secrets_creates_what_is_missing_and_never_overwrites() -> None:
    hook = hooks()
    vault = FakeVault({})
    env = {"KEYSTEWARD_APP_SECRETS": "PAGERDUTY_CLIENT_SECRET, OKTA_CLIENT_SECRET"}
    missing = hook.ensure_secrets(vault, env, lambda _: None)
    assert vault.writes == [hook.ENCRYPTION_KEYS_SECRET, hook.WEBHOOK_SECRET_SECRET]
    assert missing == ["PAGERDUTY_CLIENT_SECRET", "OKTA_CLIENT_SECRET"]
    settings_module._key_ring(vault.secrets[hook.ENCRYPTION_KEYS_SECRET])
    assert len(vault.secrets[hook.WEBHOOK_SECRET_SECRET]) >= 32  # what Keysteward requires

    later = datetime(2099, 1, 1, tzinfo=UTC)
    rotated_ring = hook.rotated(vault.secrets[hook.ENCRYPTION_KEYS_SECRET], later)
    vault.secrets[hook.ENCRYPTION_KEYS_SECRET] = rotated_ring
    vault.secrets["okta-client-secret"] = "s"
    vault.writes.clear()
    assert hook.ensure_secrets(vault, env, lambda _: None) == ["PAGERDUTY_CLIENT_SECRET"]
    assert vault.writes == []
    assert vault.secrets[hook.ENCRYPTION_KEYS_SECRET] == rotated_ring


def test_check_apps_needs_apps_yaml_and_every_reference_listed(tmp_path: Path) -> None:
    hook = hooks()
    (problem,) = hook.check_apps(tmp_path, {})
    assert "apps.yaml is missing" in problem
    (tmp_path / "apps.yaml").write_text((ROOT / "apps.example.yaml").read_text())
    (problem,) = hook.check_apps(tmp_path, {"KEYSTEWARD_APP_SECRETS": "OKTA_CLIENT_ID"})
    assert "${PAGERDUTY_CLIENT_ID}" in problem
    assert "${OKTA_CLIENT_ID}" not in problem
    assert "${ENV_NAME}" not in problem  # only in a comment
    listed = ",".join(hook.references((tmp_path / "apps.yaml").read_text()))
    assert hook.check_apps(tmp_path, {"KEYSTEWARD_APP_SECRETS": listed}) == []
    (tmp_path / "apps.yaml").write_text("apps: {}\n")
    assert hook.check_apps(tmp_path, {}) == []
    with pytest.raises(hook.HookError, match="letters, digits and '_'"):
        hook.check_apps(tmp_path, {"KEYSTEWARD_APP_SECRETS": "BAD-NAME"})


def test_the_rest_vault_waits_for_its_role_and_refuses_to_revive_a_deleted_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hook = hooks()
    calls: list[tuple[str, str, str | None]] = []
    answers: list[Any] = [403, 403, {"value": "ring"}, 409, 404]

    class Response(io.BytesIO):
        status = 200

        def __enter__(self) -> Response:
            return self

        def __exit__(self, *args: object) -> None:
            return None

    def urlopen(request: Any, timeout: float) -> Response:
        calls.append((request.get_method(), request.full_url, request.get_header("Authorization")))
        answer = answers.pop(0)
        if isinstance(answer, int):
            raise urllib.error.HTTPError(request.full_url, answer, "no", Message(), None)
        return Response(json.dumps(answer).encode())

    monkeypatch.setattr(hook.urllib.request, "urlopen", urlopen)
    scopes: list[str] = []
    slept: list[float] = []

    def token(scope: str) -> str:
        scopes.append(scope)
        return "t"

    vault = hook.RestVault("https://kv-abc.vault.azure.net/", token, sleep=slept.append)
    assert vault.get("keysteward-encryption-keys") == "ring"
    assert slept == [5.0, 10.0]
    assert set(scopes) == {"https://vault.azure.net/.default"}
    assert calls[0] == (
        "GET",
        "https://kv-abc.vault.azure.net/secrets/keysteward-encryption-keys?api-version=7.4",
        "Bearer t",
    )
    with pytest.raises(hook.HookError, match="az keyvault secret recover --vault-name kv-abc"):
        vault.set("keysteward-encryption-keys", "v", "t")
    assert vault.get("missing") is None
    with pytest.raises(hook.HookError, match="not a Key Vault endpoint"):
        hook.RestVault("http://kv.vault.azure.net", token)


def test_the_hooks_never_print_a_secret(capsys: pytest.CaptureFixture[str]) -> None:
    hook = hooks()
    vault = FakeVault({})
    said: list[str] = []
    hook.ensure_secrets(vault, {}, said.append)
    out = "\n".join(said) + capsys.readouterr().out
    for value in vault.secrets.values():
        assert value not in out
    assert vault.secrets[hook.ENCRYPTION_KEYS_SECRET].partition(":")[2] not in out


# -- the deployment package ---------------------------------------------------------------------


def funcignore() -> pathspec.GitIgnoreSpec:
    return pathspec.GitIgnoreSpec.from_lines((ROOT / ".funcignore").read_text().splitlines())


def package(root: Path, ignore: pathspec.GitIgnoreSpec) -> set[str]:
    """The files `func azure functionapp publish` and azd zip: the tree minus .funcignore
    (gitignore semantics; an ignored directory is not entered)."""
    files: set[str] = set()
    for directory, dirs, names in os.walk(root):
        relative = Path(directory).relative_to(root)
        dirs[:] = [d for d in dirs if not ignore.match_file(f"{(relative / d).as_posix()}/")]
        files |= {
            (relative / n).as_posix()
            for n in names
            if not ignore.match_file((relative / n).as_posix())
        }
    return files


NEEDED = ["function_app.py", "host.json", "requirements.txt", "apps.yaml",
          "shared/config/providers.yaml", "shared/config/settings.py",
          "shared/providers/drivers/__init__.py", "functions/__init__.py"]  # fmt: skip
KEPT_OUT = [
    "tests/test_infra.py", "bench/__init__.py", "devhost/stack.py", "infra/main.bicep",
    "infra/hooks/keysteward.py", "node_modules/azurite/package.json", ".venv/bin/python",
    ".local/keyring", "local.settings.json", "docs/deploy.md", ".azure/prod/.env",
    ".azure/config.json", ".git/HEAD", ".github/workflows/ci.yml", ".gitignore",
    "shared/__pycache__/settings.cpython-311.pyc", ".pytest_cache/v/cache", ".mypy_cache/x.json",
    ".ruff_cache/x", ".hypothesis/examples/x", "__azurite_db_table__.json", "azure.yaml",
    "Makefile", "requirements-dev.txt", "pyproject.toml", "package.json", "package-lock.json",
]  # fmt: skip


def test_funcignore_keeps_what_azure_needs_and_nothing_else(tmp_path: Path) -> None:
    for relative in NEEDED + KEPT_OUT:
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text("x")
    files = package(tmp_path, funcignore())
    assert set(NEEDED) <= files, f"left out: {sorted(set(NEEDED) - files)}"
    assert not files & set(KEPT_OUT), f"shipped: {sorted(files & set(KEPT_OUT))}"


def test_the_package_of_this_checkout_is_what_azure_needs() -> None:
    files = package(ROOT, funcignore())
    needed_files = (
        "function_app.py",
        "host.json",
        "requirements.txt",
        "shared/config/providers.yaml",
    )
    for needed in needed_files:
        assert needed in files
    for directory in ("functions/", "shared/"):
        assert any(f.startswith(directory) and f.endswith(".py") for f in files), directory
    excluded = ("tests/", "bench/", "devhost/", "infra/", "node_modules/", ".venv/", ".local/",
                "docs/", ".azure/", ".git/", ".hypothesis/")  # fmt: skip
    shipped = sorted(f for f in files if f.startswith(excluded) or "__pycache__" in f)
    assert not shipped, f"the package would ship: {shipped[:20]}"
    assert "local.settings.json" not in files


def test_the_apps_file_is_read_relative_to_the_package_root() -> None:
    """The Functions host starts the Python worker in the app's root (/home/site/wwwroot), so the
    relative KEYSTEWARD_APPS_FILE names the apps.yaml at the top of the package."""
    assert Settings.from_env(_minimal_env()).apps_file == Path("apps.yaml")
    assert not funcignore().match_file("apps.yaml")


def _minimal_env() -> Mapping[str, str]:
    return {
        "AzureWebJobsStorage__accountName": "stabc123",
        "KEYSTEWARD_ENCRYPTION_KEYS": hooks().new_key(),
        "KEYSTEWARD_PUBLIC_URL": "https://f.example",
        "KEYSTEWARD_APPS_FILE": "apps.yaml",
    }
