"""Every setting Keysteward reads, read from the environment once and validated.

This is the only module that reads ``os.environ``. A missing or malformed setting raises
``SettingsError`` naming it, so a misconfigured app fails at start-up rather than on first use.
Values of secret settings never appear in messages or reprs.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from croniter import croniter

from shared.foundation import crashpoints
from shared.foundation.errors import InputError, SettingsError
from shared.foundation.urls import browser_url

STORAGE = "AzureWebJobsStorage"
ENCRYPTION_KEYS = "KEYSTEWARD_ENCRYPTION_KEYS"
APPS_FILE = "KEYSTEWARD_APPS_FILE"
PUBLIC_URL = "KEYSTEWARD_PUBLIC_URL"
ALLOWED_RETURN_URLS = "KEYSTEWARD_ALLOWED_RETURN_URLS"
WEBHOOK_URL = "KEYSTEWARD_WEBHOOK_URL"
WEBHOOK_SECRET = "KEYSTEWARD_WEBHOOK_SECRET"  # noqa: S105 - a setting name
WEBHOOK_RETRY_SECONDS = "KEYSTEWARD_WEBHOOK_RETRY_SECONDS"
WEBHOOK_MAX_ATTEMPTS = "KEYSTEWARD_WEBHOOK_MAX_ATTEMPTS"
REFRESH_SCHEDULE = "KEYSTEWARD_REFRESH_SCHEDULE"
EXPIRY_SWEEP_SCHEDULE = "KEYSTEWARD_EXPIRY_SWEEP_SCHEDULE"
LOG_LEVEL = "KEYSTEWARD_LOG_LEVEL"
REFRESH_LEASE_SECONDS = "KEYSTEWARD_REFRESH_LEASE_SECONDS"
REFRESH_COOLDOWN_SECONDS = "KEYSTEWARD_REFRESH_COOLDOWN_SECONDS"
PROVIDER_TIMEOUT_SECONDS = "KEYSTEWARD_PROVIDER_TIMEOUT_SECONDS"
ROTATION_GRACE_MINUTES = "KEYSTEWARD_ROTATION_GRACE_MINUTES"
# Test only: kill the process at a named point (shared.foundation.crashpoints). Never set in Azure.
TEST_FAULT = crashpoints.SETTING
# Test only: a legacy Azure DevOps app may use an http loopback public URL, for the suite's fake
# of its OAuth (real Azure DevOps takes only https redirect URIs). Never set in Azure.
TEST_HTTP_LOOPBACK = "KEYSTEWARD_TEST_HTTP_LOOPBACK"
WEBSITE_HOSTNAME = "WEBSITE_HOSTNAME"  # set by Azure App Service / Functions

# Every setting the code reads (the infrastructure test checks the Bicep app settings against it).
KEYSTEWARD_SETTINGS = (
    ENCRYPTION_KEYS,
    APPS_FILE,
    PUBLIC_URL,
    ALLOWED_RETURN_URLS,
    WEBHOOK_URL,
    WEBHOOK_SECRET,
    WEBHOOK_RETRY_SECONDS,
    WEBHOOK_MAX_ATTEMPTS,
    REFRESH_SCHEDULE,
    EXPIRY_SWEEP_SCHEDULE,
    LOG_LEVEL,
    REFRESH_LEASE_SECONDS,
    PROVIDER_TIMEOUT_SECONDS,
    ROTATION_GRACE_MINUTES,
)
TEST_SETTINGS = (TEST_FAULT, TEST_HTTP_LOOPBACK)

DEFAULT_REFRESH_SCHEDULE = "0 */5 * * * *"
DEFAULT_EXPIRY_SWEEP_SCHEDULE = "0 0 2 * * *"
_KID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
WHSEC = "whsec_"  # Standard Webhooks' prefix of a base64 symmetric secret


@dataclass(frozen=True)
class StorageSettings:
    """Where Table and Queue Storage live, the way the Functions host reads ``AzureWebJobsStorage``.

    Either a connection string, or identity-based: service URIs (or an account name they are
    derived from) and a token credential (a user-assigned managed identity when ``client_id``).
    """

    connection_string: str | None = field(default=None, repr=False)
    table_uri: str | None = None
    queue_uri: str | None = None
    credential: str | None = None
    client_id: str | None = None

    @property
    def identity_based(self) -> bool:
        return self.connection_string is None


@dataclass(frozen=True)
class Settings:
    storage: StorageSettings
    encryption_keys: tuple[tuple[str, bytes], ...] = field(repr=False)
    public_url: str
    apps_file: Path = Path("apps.yaml")
    allowed_return_urls: tuple[str, ...] = ()
    webhook_url: str | None = None
    webhook_secret: bytes | None = field(default=None, repr=False)
    webhook_retry_seconds: float = 30.0
    webhook_max_attempts: int = 8
    refresh_schedule: str = DEFAULT_REFRESH_SCHEDULE
    expiry_sweep_schedule: str = DEFAULT_EXPIRY_SWEEP_SCHEDULE
    log_level: str = "INFO"
    refresh_lease_seconds: float = 30.0
    refresh_cooldown_seconds: float = 30.0
    provider_timeout_seconds: float = 20.0
    rotation_grace_minutes: float = 60.0
    # The environment as read at start-up, for the apps file's ${NAME} secret references.
    test_fault: str | None = None
    test_http_loopback: bool = False
    environment: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        for name in (STORAGE, *KEYSTEWARD_SETTINGS):
            refuse_unresolved(name, env.get(name, ""))

        raw_webhook = get(WEBHOOK_URL)
        webhook_url = _url(WEBHOOK_URL, raw_webhook) if raw_webhook else None
        webhook_secret = _webhook_secret(get(WEBHOOK_SECRET), webhook_url is not None)
        return cls(
            storage=_storage(env),
            encryption_keys=_key_ring(get(ENCRYPTION_KEYS)),
            public_url=_public_url(get(PUBLIC_URL), get(WEBSITE_HOSTNAME)),
            apps_file=Path(get(APPS_FILE) or "apps.yaml"),
            allowed_return_urls=tuple(
                _return_url(u.strip())
                for u in (get(ALLOWED_RETURN_URLS) or "").split(",")
                if u.strip()
            ),
            webhook_url=webhook_url,
            webhook_secret=webhook_secret,
            webhook_retry_seconds=_number(WEBHOOK_RETRY_SECONDS, get(WEBHOOK_RETRY_SECONDS), 30.0),
            webhook_max_attempts=int(
                _number(WEBHOOK_MAX_ATTEMPTS, get(WEBHOOK_MAX_ATTEMPTS), 8, integer=True)
            ),
            refresh_schedule=_schedule(REFRESH_SCHEDULE, get(REFRESH_SCHEDULE))
            or DEFAULT_REFRESH_SCHEDULE,
            expiry_sweep_schedule=_schedule(EXPIRY_SWEEP_SCHEDULE, get(EXPIRY_SWEEP_SCHEDULE))
            or DEFAULT_EXPIRY_SWEEP_SCHEDULE,
            log_level=_log_level(get(LOG_LEVEL)),
            refresh_lease_seconds=_number(REFRESH_LEASE_SECONDS, get(REFRESH_LEASE_SECONDS), 30.0),
            refresh_cooldown_seconds=_number(
                REFRESH_COOLDOWN_SECONDS, get(REFRESH_COOLDOWN_SECONDS), 30.0
            ),
            provider_timeout_seconds=_number(
                PROVIDER_TIMEOUT_SECONDS, get(PROVIDER_TIMEOUT_SECONDS), 20.0
            ),
            rotation_grace_minutes=_number(
                ROTATION_GRACE_MINUTES, get(ROTATION_GRACE_MINUTES), 60.0
            ),
            test_fault=get(TEST_FAULT),
            test_http_loopback=get(TEST_HTTP_LOOPBACK) == "true",
            environment=dict(env),
        )


_cached: Settings | None = None
_lock = threading.Lock()


def get_settings() -> Settings:
    """The process's settings, read from the environment on first call and kept."""
    global _cached  # noqa: PLW0603 - the one process-wide read of the environment
    with _lock:
        if _cached is None:
            _cached = Settings.from_env(os.environ)
        return _cached


# App Service leaves a Key Vault reference as its literal text until it can resolve it (the secret
# does not exist yet, or the identity cannot read it): such a value must never become a key ring,
# a connection string or a signing secret (a reference is longer than the 32-character minimum).
_KEY_VAULT_REFERENCE = re.compile(r"^\s*@Microsoft\.KeyVault\s*\(", re.IGNORECASE)


def refuse_unresolved(name: str, value: str) -> None:
    """``SettingsError`` when ``value`` is an App Service Key Vault reference left unresolved."""
    if _KEY_VAULT_REFERENCE.match(value):
        raise SettingsError(
            f"{name} is an unresolved Key Vault reference ({value.strip()[:90]}): create the "
            "secret and let the app's identity read it, then refresh the app's Key Vault "
            "references and restart it (docs/deploy.md)"
        )


def _public_url(value: str | None, website_hostname: str | None) -> str:
    if value is None and website_hostname:
        value = f"https://{website_hostname}"
    if value is None:
        raise SettingsError(
            f"{PUBLIC_URL} is not set: the URL users reach Keysteward at "
            "(for example https://keysteward.contoso.com)"
        )
    return _url(PUBLIC_URL, value).rstrip("/")


def _storage(env: Mapping[str, str]) -> StorageSettings:
    prefix = f"{STORAGE}__"
    connection_string = env.get(STORAGE, "").strip()
    if connection_string:
        parts = _parse_connection_string(connection_string)
        if not parts.get("accountname") and "usedevelopmentstorage" not in parts:
            raise SettingsError(f"{STORAGE}: connection string has no AccountName")
        return StorageSettings(connection_string=connection_string)
    account = env.get(f"{prefix}accountName", "").strip()
    table_uri = env.get(f"{prefix}tableServiceUri", "").strip()
    queue_uri = env.get(f"{prefix}queueServiceUri", "").strip()
    if account:
        if not re.fullmatch(r"[a-z0-9]{3,24}", account):
            raise SettingsError(f"{prefix}accountName: not a storage account name")
        table_uri = table_uri or f"https://{account}.table.core.windows.net"
        queue_uri = queue_uri or f"https://{account}.queue.core.windows.net"
    if not table_uri or not queue_uri:
        raise SettingsError(
            f"storage is not configured: set {STORAGE} (a connection string) or "
            f"{prefix}accountName, or both {prefix}tableServiceUri and {prefix}queueServiceUri"
        )
    credential = env.get(f"{prefix}credential", "").strip() or None
    if credential not in (None, "managedidentity"):
        raise SettingsError(f"{prefix}credential: only 'managedidentity' is supported")
    return StorageSettings(
        table_uri=_url(f"{prefix}tableServiceUri", table_uri),
        queue_uri=_url(f"{prefix}queueServiceUri", queue_uri),
        credential=credential,
        client_id=env.get(f"{prefix}clientId", "").strip() or None,
    )


def _parse_connection_string(value: str) -> dict[str, str]:
    parts: dict[str, str] = {}
    for item in value.split(";"):
        if item.strip():
            name, sep, val = item.partition("=")
            if not sep:
                raise SettingsError(
                    f"{STORAGE}: malformed connection string (expected Name=Value;...)"
                )
            parts[name.strip().lower()] = val
    return parts


def _key_ring(value: str | None) -> tuple[tuple[str, bytes], ...]:
    if value is None:
        raise SettingsError(
            f"{ENCRYPTION_KEYS} is not set: a key ring 'kid:base64key[,kid2:base64key]' of "
            "256-bit keys (see docs/configuration.md)"
        )
    ring: list[tuple[str, bytes]] = []
    for position, item in enumerate(value.split(","), start=1):
        kid, sep, encoded = item.strip().partition(":")
        if not sep or not _KID.match(kid):
            raise SettingsError(
                f"{ENCRYPTION_KEYS}: entry {position} is not 'kid:base64key' with a kid of "
                "letters, digits, '-' or '_' (at most 32)"
            )
        try:
            key = base64.b64decode(encoded.strip(), validate=True)
        except binascii.Error:
            raise SettingsError(f"{ENCRYPTION_KEYS}: key '{kid}' is not valid base64") from None
        if len(key) != 32:
            raise SettingsError(f"{ENCRYPTION_KEYS}: key '{kid}' must be 32 bytes (AES-256)")
        if any(kid == seen for seen, _ in ring):
            raise SettingsError(f"{ENCRYPTION_KEYS}: kid '{kid}' appears twice")
        ring.append((kid, key))
    return tuple(ring)


def _url(name: str, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SettingsError(f"{name}: '{value}' is not an absolute http(s) URL")
    return value


def _return_url(value: str) -> str:
    try:
        return browser_url(value, ALLOWED_RETURN_URLS)
    except InputError as exc:
        raise SettingsError(f"{exc.message} ('{value[:100]}')") from None


def _webhook_secret(value: str | None, needed: bool) -> bytes | None:
    """The HMAC key: ``whsec_`` + base64 as Standard Webhooks serialises it, or a raw secret."""
    if value is None:
        if needed:
            raise SettingsError(f"{WEBHOOK_SECRET} is required when {WEBHOOK_URL} is set")
        return None
    if value.startswith(WHSEC):
        encoded = value.removeprefix(WHSEC)
        try:
            # Padding may be left off, as the Standard Webhooks libraries allow.
            key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except binascii.Error:
            raise SettingsError(f"{WEBHOOK_SECRET} is not valid base64 after '{WHSEC}'") from None
        # The spec's symmetric secret: "Random. Between 24 bytes (192 bits) and 64 bytes".
        if not 24 <= len(key) <= 64:
            raise SettingsError(
                f"{WEBHOOK_SECRET}: a '{WHSEC}' secret must decode to 24 to 64 bytes"
            )
        return key
    if len(value) < 32:
        raise SettingsError(f"{WEBHOOK_SECRET} must be at least 32 characters")
    return value.encode()


def _number(name: str, value: str | None, default: float, integer: bool = False) -> float:
    if value is None:
        return default
    try:
        number = int(value) if integer else float(value)
    except ValueError:
        raise SettingsError(f"{name}: '{value}' is not a number") from None
    if number <= 0:
        raise SettingsError(f"{name}: must be greater than zero")
    return number


def _schedule(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    if len(value.split()) != 6 or not croniter.is_valid(value, second_at_beginning=True):
        raise SettingsError(
            f"{name}: '{value}' is not a 6-field NCRONTAB expression "
            "(second minute hour day month day-of-week)"
        )
    return value


def _log_level(value: str | None) -> str:
    level = (value or "INFO").upper()
    if level not in _LOG_LEVELS:
        raise SettingsError(f"{LOG_LEVEL}: one of {', '.join(_LOG_LEVELS)}")
    return level
