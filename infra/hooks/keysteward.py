"""azd hooks and key-ring chores for Keysteward on Azure (azure.yaml, docs/deploy.md).

Standard library only, so any Python 3.9+ runs it without installing anything. It reads the azd
environment from its own environment (azd exports it to hooks) or asks ``azd env get-value``, and
talks to Key Vault with the signed-in azd account's token (``azd auth token``).

    check-apps       (prepackage) apps.yaml exists and every ${NAME} it references is listed
                     in KEYSTEWARD_APP_SECRETS, so the app cannot fail at start-up on a missing
                     setting.
    ensure-secrets   (postprovision) the vault holds the secrets Keysteward generates: the
                     encryption key ring and the webhook signing secret, created once and never
                     overwritten. Reports the apps' secrets that are not in the vault yet.
    rotate-key       puts a new key first in the key ring (new values are sealed with it; the old
                     keys still open what they sealed).
    drop-key KID     removes an old key from the ring once nothing is sealed with it any more.

Secret values are never printed and never passed on a command line.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

ENCRYPTION_KEYS_SECRET = "keysteward-encryption-keys"  # noqa: S105 - a secret's name
WEBHOOK_SECRET_SECRET = "keysteward-webhook-secret"  # noqa: S105 - a secret's name
APP_SECRETS = "KEYSTEWARD_APP_SECRETS"
API_VERSION = "7.4"
ROLE_WAIT_SECONDS = 300  # new role assignments can take minutes to reach Key Vault

_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_COMMENT = re.compile(r"(^|\s)#.*$")
_KID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


class HookError(Exception):
    """A problem the operator must fix; the message says how."""


# -- names --------------------------------------------------------------------------------------


def secret_name(setting: str) -> str:
    """The Key Vault secret an app setting refers to (as app/functions.bicep spells it)."""
    return setting.lower().replace("_", "-")


def app_secret_settings(value: str) -> list[str]:
    """KEYSTEWARD_APP_SECRETS as main.bicep reads it: comma-separated, spaces ignored."""
    names = [name for name in value.replace(" ", "").split(",") if name]
    bad = [name for name in names if not _SETTING_NAME.match(name)]
    if bad:
        raise HookError(
            f"{APP_SECRETS}: {', '.join(bad)}: an app setting name is letters, digits and '_'"
        )
    return names


def references(apps_yaml: str) -> list[str]:
    """The ${NAME} references in an apps file, outside comments, in order of appearance."""
    found: list[str] = []
    for line in apps_yaml.splitlines():
        for name in _REFERENCE.findall(_COMMENT.sub("", line)):
            if name not in found:
                found.append(name)
    return found


# -- the key ring -------------------------------------------------------------------------------


def new_key(now: datetime | None = None) -> str:
    """A ring entry ``kid:base64key``: 32 random bytes; the kid says when it was made."""
    # timezone.utc, not datetime.UTC: this runs on the operator's python3, maybe older than 3.11.
    kid = (now or datetime.now(timezone.utc)).strftime("k%Y%m%d%H%M%S")  # noqa: UP017
    return f"{kid}:{base64.b64encode(secrets.token_bytes(32)).decode()}"


def ring_kids(ring: str) -> list[str]:
    kids = []
    for position, item in enumerate(ring.split(","), start=1):
        kid, sep, encoded = item.strip().partition(":")
        if not sep or not _KID.match(kid):
            raise HookError(f"the key ring's entry {position} is not 'kid:base64key'")
        try:
            key = base64.b64decode(encoded.strip(), validate=True)
        except ValueError:
            raise HookError(f"the key ring's key '{kid}' is not valid base64") from None
        if len(key) != 32:
            raise HookError(f"the key ring's key '{kid}' is not 32 bytes")
        kids.append(kid)
    if len(set(kids)) != len(kids):
        raise HookError("the key ring names a kid twice")
    return kids


def rotated(ring: str, now: datetime | None = None) -> str:
    ring_kids(ring)
    entry = new_key(now)
    if entry.partition(":")[0] in ring_kids(ring):
        raise HookError("a key made this second is already in the ring; try again")
    return f"{entry},{ring}"


def dropped(ring: str, kid: str) -> str:
    kids = ring_kids(ring)
    if kid not in kids:
        raise HookError(f"the key ring has no key '{kid}' (it has {', '.join(kids)})")
    if kids[0] == kid:
        raise HookError(f"'{kid}' is the key new values are sealed with: rotate first")
    return ",".join(e.strip() for e in ring.split(",") if e.strip().partition(":")[0] != kid)


# -- Key Vault ----------------------------------------------------------------------------------


class Vault(Protocol):
    def get(self, name: str) -> str | None: ...

    def set(self, name: str, value: str, content_type: str) -> None: ...


class RestVault:
    """Key Vault's secrets REST API with a bearer token; retries while roles propagate."""

    def __init__(
        self,
        endpoint: str,
        token: Callable[[str], str],
        wait: float = ROLE_WAIT_SECONDS,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme != "https" or not parts.hostname:
            raise HookError(f"not a Key Vault endpoint: {endpoint!r}")
        self._base = f"https://{parts.hostname}"
        self._name = parts.hostname.partition(".")[0]
        # https://<vault>.vault.azure.net -> https://vault.azure.net/.default (any cloud)
        self._scope = f"https://{parts.hostname.partition('.')[2]}/.default"
        self._token = token
        self._wait = wait
        self._sleep = sleep

    def get(self, name: str) -> str | None:
        status, body = self._call("GET", name)
        if status == 404:
            return None
        return str(body["value"])

    def set(self, name: str, value: str, content_type: str) -> None:
        status, _ = self._call("PUT", name, {"value": value, "contentType": content_type})
        if status == 409:
            raise HookError(
                f"the vault has a deleted secret '{name}' that can still be recovered. If it is "
                f"Keysteward's, recover it (az keyvault secret recover --vault-name {self._name} "
                f"--name {name}); purge it only if you "
                "are sure nothing was sealed with it"
            )

    def _call(
        self, method: str, name: str, payload: dict[str, str] | None = None
    ) -> tuple[int, dict[str, object]]:
        url = f"{self._base}/secrets/{name}?api-version={API_VERSION}"
        data = json.dumps(payload).encode() if payload is not None else None
        deadline = time.monotonic() + self._wait
        delay = 5.0
        while True:
            request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - https only, checked in __init__
            request.add_header("Authorization", f"Bearer {self._token(self._scope)}")
            request.add_header("Content-Type", "application/json")
            try:
                with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - https only
                    return response.status, json.loads(response.read() or b"{}")
            except urllib.error.HTTPError as exc:
                if exc.code in (404, 409):
                    return exc.code, {}
                if exc.code == 403 and time.monotonic() < deadline:
                    self._sleep(delay)  # the role assignment has not reached Key Vault yet
                    delay = min(delay * 2, 30.0)
                    continue
                raise HookError(
                    f"Key Vault answered {exc.code} to {method} secret '{name}'"
                    + (
                        ": the signed-in azd account needs Key Vault Secrets Officer on the "
                        "vault (main.bicep grants it to AZURE_PRINCIPAL_ID)"
                        if exc.code == 403
                        else ""
                    )
                ) from None


def azd_token(tenant: str | None) -> Callable[[str], str]:
    def token(scope: str) -> str:
        command = ["azd", "auth", "token", "--output", "json", "--scope", scope]
        if tenant:
            command += ["--tenant-id", tenant]
        done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603 - azd, fixed arguments
        if done.returncode != 0:
            raise HookError(f"azd auth token failed: {done.stderr.strip()} (run azd auth login)")
        return str(json.loads(done.stdout)["token"])

    return token


# -- the commands -------------------------------------------------------------------------------


def check_apps(root: Path, env: Mapping[str, str]) -> list[str]:
    """Problems that would stop the deployed app at start-up; empty when there are none."""
    apps_file = root / "apps.yaml"
    if not apps_file.is_file():
        return [
            "apps.yaml is missing: the function app reads it (KEYSTEWARD_APPS_FILE). Copy "
            "apps.example.yaml to apps.yaml and keep the apps you use, or deploy with no apps yet "
            "with an apps.yaml that says: apps: {}"
        ]
    listed = set(app_secret_settings(env.get(APP_SECRETS, "")))
    missing = [name for name in references(apps_file.read_text()) if name not in listed]
    if not missing:
        return []
    wanted = ",".join(sorted(listed | set(missing)))
    return [
        f"apps.yaml refers to {', '.join('${' + n + '}' for n in missing)}, which the function "
        f"app would not have: azd env set {APP_SECRETS} {wanted} (each is a Key Vault reference; "
        "docs/deploy.md)"
    ]


def ensure_secrets(vault: Vault, env: Mapping[str, str], say: Callable[[str], None]) -> list[str]:
    """Create Keysteward's generated secrets if missing; return the apps' secrets still missing."""
    if vault.get(ENCRYPTION_KEYS_SECRET) is None:
        vault.set(ENCRYPTION_KEYS_SECRET, new_key(), "keysteward key ring: kid:base64key,...")
        say(f"created {ENCRYPTION_KEYS_SECRET}: a new key ring with one key")
    else:
        say(f"kept {ENCRYPTION_KEYS_SECRET}")
    if vault.get(WEBHOOK_SECRET_SECRET) is None:
        vault.set(WEBHOOK_SECRET_SECRET, secrets.token_urlsafe(48), "webhook HMAC-SHA256 secret")
        say(f"created {WEBHOOK_SECRET_SECRET}")
    else:
        say(f"kept {WEBHOOK_SECRET_SECRET}")
    return [
        name
        for name in app_secret_settings(env.get(APP_SECRETS, ""))
        if vault.get(secret_name(name)) is None
    ]


def _setting(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "")
    if value:
        return value
    command = ["azd", "env", "get-value", name]
    done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603 - azd, fixed arguments
    if done.returncode != 0 or not done.stdout.strip():
        raise HookError(f"{name} is not set in the azd environment: run azd provision first")
    return done.stdout.strip()


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="infra/hooks/keysteward.py", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check-apps", help="apps.yaml and its ${NAME} references")
    commands.add_parser("ensure-secrets", help="create the key ring and webhook secret if missing")
    commands.add_parser("rotate-key", help="put a new key first in the key ring")
    drop = commands.add_parser("drop-key", help="remove an old key from the key ring")
    drop.add_argument("kid")
    args = parser.parse_args(argv)
    env = os.environ if env is None else env
    try:
        if args.command == "check-apps":
            problems = check_apps(Path(__file__).resolve().parents[2], env)
            for problem in problems:
                print(f"keysteward: {problem}", file=sys.stderr)
            return 1 if problems else 0
        vault = RestVault(
            _setting(env, "AZURE_KEY_VAULT_ENDPOINT"), azd_token(env.get("AZURE_TENANT_ID"))
        )
        if args.command == "ensure-secrets":
            missing = ensure_secrets(vault, env, print)
            for name in missing:
                print(
                    f"keysteward: warning: {name} refers to secret '{secret_name(name)}', which "
                    "is not in the vault yet: the app cannot start until it is (docs/deploy.md)",
                    file=sys.stderr,
                )
            _check_public_url(env)
            return 0
        ring = vault.get(ENCRYPTION_KEYS_SECRET)
        if ring is None:
            raise HookError(f"the vault has no {ENCRYPTION_KEYS_SECRET}: run azd provision")
        ring = rotated(ring) if args.command == "rotate-key" else dropped(ring, args.kid)
        vault.set(ENCRYPTION_KEYS_SECRET, ring, "keysteward key ring: kid:base64key,...")
        print(f"{ENCRYPTION_KEYS_SECRET} now holds: {', '.join(ring_kids(ring))} (first seals)")
        print("Make the app read it: azd provision (or wait up to a day); docs/deploy.md")
        return 0
    except HookError as exc:
        print(f"keysteward: {exc}", file=sys.stderr)
        return 1


def _check_public_url(env: Mapping[str, str]) -> None:
    told, actual = env.get("SERVICE_API_PUBLIC_URL", ""), env.get("SERVICE_API_URI", "")
    if not env.get("KEYSTEWARD_PUBLIC_URL") and told and actual and told != actual:
        print(
            f"keysteward: warning: the app was told its URL is {told}, but Azure serves it at "
            f"{actual}: azd env set KEYSTEWARD_PUBLIC_URL {actual}, then azd provision",
            file=sys.stderr,
        )


if __name__ == "__main__":
    sys.exit(main())
