from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared.config import settings as s
from shared.foundation.errors import SettingsError
from tests.peers.processes import ROOT

KEY = base64.b64encode(b"k" * 32).decode()
BASE = {
    s.STORAGE: "AccountName=devstoreaccount1;AccountKey=c2VjcmV0;TableEndpoint=http://x/y",
    s.ENCRYPTION_KEYS: f"k1:{KEY}",
    s.PUBLIC_URL: "https://keysteward.contoso.com/",
}


def load(**changes: str | None) -> s.Settings:
    env = {**BASE, **changes}
    return s.Settings.from_env({k: v for k, v in env.items() if v is not None})


def test_defaults() -> None:
    settings = load()
    assert settings.public_url == "https://keysteward.contoso.com"
    assert settings.apps_file == Path("apps.yaml")
    assert settings.encryption_keys == (("k1", b"k" * 32),)
    assert settings.refresh_schedule == "0 */5 * * * *"
    assert settings.expiry_sweep_schedule == "0 0 2 * * *"
    assert settings.webhook_url is None
    assert settings.allowed_return_urls == ()


def test_a_full_configuration() -> None:
    settings = load(
        KEYSTEWARD_ENCRYPTION_KEYS=f"new:{KEY}, old:{base64.b64encode(b'o' * 32).decode()}",
        KEYSTEWARD_APPS_FILE="/etc/keysteward/apps.yaml",
        KEYSTEWARD_ALLOWED_RETURN_URLS="https://portal.contoso.com/done, https://x.contoso.com/",
        KEYSTEWARD_WEBHOOK_URL="https://hooks.contoso.com/keysteward",
        KEYSTEWARD_WEBHOOK_SECRET="w" * 40,
        KEYSTEWARD_REFRESH_SCHEDULE="0 */2 * * * *",
        KEYSTEWARD_LOG_LEVEL="debug",
    )
    assert [kid for kid, _ in settings.encryption_keys] == ["new", "old"]
    assert settings.allowed_return_urls == (
        "https://portal.contoso.com/done",
        "https://x.contoso.com/",
    )
    assert settings.webhook_secret == b"w" * 40
    assert settings.refresh_schedule == "0 */2 * * * *"
    assert settings.log_level == "DEBUG"


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({s.ENCRYPTION_KEYS: None}, s.ENCRYPTION_KEYS),
        ({s.ENCRYPTION_KEYS: "nokid"}, s.ENCRYPTION_KEYS),
        ({s.ENCRYPTION_KEYS: "k1:not base64!"}, "'k1' is not valid base64"),
        ({s.ENCRYPTION_KEYS: f"k1:{base64.b64encode(b'short').decode()}"}, "32 bytes"),
        ({s.ENCRYPTION_KEYS: f"k1:{KEY},k1:{KEY}"}, "appears twice"),
        ({s.PUBLIC_URL: None}, s.PUBLIC_URL),
        ({s.PUBLIC_URL: "keysteward.contoso.com"}, s.PUBLIC_URL),
        ({s.STORAGE: None}, "storage is not configured"),
        ({s.STORAGE: "garbage"}, s.STORAGE),
        ({s.ALLOWED_RETURN_URLS: "https://ok.example, /relative"}, s.ALLOWED_RETURN_URLS),
        ({s.WEBHOOK_URL: "https://hooks.example"}, s.WEBHOOK_SECRET),
        ({s.WEBHOOK_URL: "https://hooks.example", s.WEBHOOK_SECRET: "short"}, s.WEBHOOK_SECRET),
        ({s.WEBHOOK_RETRY_SECONDS: "soon"}, s.WEBHOOK_RETRY_SECONDS),
        ({s.WEBHOOK_MAX_ATTEMPTS: "0"}, s.WEBHOOK_MAX_ATTEMPTS),
        ({s.REFRESH_SCHEDULE: "*/5 * * * *"}, s.REFRESH_SCHEDULE),
        ({s.EXPIRY_SWEEP_SCHEDULE: "0 0 25 * * *"}, s.EXPIRY_SWEEP_SCHEDULE),
        ({s.LOG_LEVEL: "LOUD"}, s.LOG_LEVEL),
    ],
)
def test_a_missing_or_malformed_setting_is_named(
    changes: dict[str, str | None], named: str
) -> None:
    with pytest.raises(SettingsError, match=named):
        load(**changes)


def test_secret_values_appear_in_no_message_or_repr() -> None:
    secret_key = base64.b64encode(b"S" * 31).decode()
    with pytest.raises(SettingsError) as caught:
        load(KEYSTEWARD_ENCRYPTION_KEYS=f"k1:{secret_key}")
    assert secret_key not in str(caught.value)
    settings = load(
        KEYSTEWARD_WEBHOOK_URL="https://hooks.example", KEYSTEWARD_WEBHOOK_SECRET="z" * 40
    )
    text = repr(settings)
    assert KEY not in text
    assert "z" * 40 not in text
    assert "c2VjcmV0" not in text  # the storage account key in the connection string


def test_public_url_falls_back_to_the_azure_host_name() -> None:
    settings = load(KEYSTEWARD_PUBLIC_URL=None, WEBSITE_HOSTNAME="ks-abc.azurewebsites.net")
    assert settings.public_url == "https://ks-abc.azurewebsites.net"


def test_identity_based_storage_by_account_name() -> None:
    settings = load(
        AzureWebJobsStorage=None,
        AzureWebJobsStorage__accountName="stkeysteward01",
        AzureWebJobsStorage__credential="managedidentity",
        AzureWebJobsStorage__clientId="00000000-0000-0000-0000-000000000001",
    )
    storage = settings.storage
    assert storage.identity_based
    assert storage.table_uri == "https://stkeysteward01.table.core.windows.net"
    assert storage.queue_uri == "https://stkeysteward01.queue.core.windows.net"
    assert storage.credential == "managedidentity"
    assert storage.client_id == "00000000-0000-0000-0000-000000000001"


def test_identity_based_storage_by_service_uris() -> None:
    storage = load(
        AzureWebJobsStorage=None,
        AzureWebJobsStorage__tableServiceUri="https://st.table.core.usgovcloudapi.net",
        AzureWebJobsStorage__queueServiceUri="https://st.queue.core.usgovcloudapi.net",
    ).storage
    assert storage.table_uri == "https://st.table.core.usgovcloudapi.net"
    assert storage.credential is None


def test_identity_based_storage_rejects_an_unknown_credential_kind() -> None:
    with pytest.raises(SettingsError, match="credential"):
        load(
            AzureWebJobsStorage=None,
            AzureWebJobsStorage__accountName="stkeysteward01",
            AzureWebJobsStorage__credential="password",
        )


def test_the_app_fails_at_start_up_naming_the_missing_setting() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYSTEWARD_", "AzureWeb"))}
    env.update({"PYTHONPATH": str(ROOT), **BASE})
    del env[s.ENCRYPTION_KEYS]
    result = subprocess.run(
        [sys.executable, "-c", "import function_app"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "SettingsError" in result.stderr
    assert s.ENCRYPTION_KEYS in result.stderr


def test_only_the_settings_module_reads_the_environment() -> None:
    sources = sorted((ROOT / "shared").rglob("*.py")) + sorted((ROOT / "functions").rglob("*.py"))
    readers = [
        path.relative_to(ROOT).as_posix()
        for path in sources
        if "os.environ" in path.read_text() or "os.getenv" in path.read_text()
    ]
    assert readers == ["shared/config/settings.py"]


def test_every_setting_is_documented() -> None:
    documented = (ROOT / "docs" / "configuration.md").read_text()
    for name in (*s.KEYSTEWARD_SETTINGS, *s.TEST_SETTINGS, s.STORAGE):
        assert f"`{name}`" in documented, name


REFERENCE = (
    "@Microsoft.KeyVault(SecretUri=https://kv-keysteward.vault.azure.net/secrets/"
    "keysteward-webhook-secret/)"
)


@pytest.mark.parametrize(
    "name", [s.ENCRYPTION_KEYS, s.WEBHOOK_SECRET, s.STORAGE, s.PUBLIC_URL, s.APPS_FILE]
)
@pytest.mark.parametrize(
    "reference",
    [REFERENCE, "@Microsoft.KeyVault(VaultName=kv;SecretName=s)", " @microsoft.keyvault (x)"],
    ids=["secret-uri", "vault-name", "spaced-lower-case"],
)
def test_an_unresolved_key_vault_reference_is_refused_in_one_line(
    name: str, reference: str
) -> None:
    """App Service leaves a reference as its text until it resolves it (issue 19, point 1): an
    unresolved webhook secret is ~75 characters and passed the 32-character minimum."""
    with pytest.raises(SettingsError) as caught:
        load(**{name: reference}, KEYSTEWARD_WEBHOOK_URL="https://hooks.example")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{name} is an unresolved Key Vault reference")
    assert "refresh" in message
