"""A running Keysteward with real peers around it: the devhost serving function_app.py, a real
oidc-provider over http (the ``oidc`` driver) and over https under /op (the ``entra`` driver
through MSAL), the PagerDuty and legacy Azure DevOps OAuth fakes, an apps file wiring them, and a
``keys:admin`` key to call it with."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
import yaml
from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableServiceClient
from azure.storage.queue import QueueServiceClient

from devhost.oidc import DEFAULT_SCOPES, OidcClient, OidcServer
from shared.access.api_keys import ApiKeys
from shared.access.key_requests import SCOPES, NewKey
from shared.config.settings import Settings
from shared.foundation.clock import SystemClock
from shared.storage.clients import decode_message, table_service
from shared.storage.crypto import KeyRing
from shared.storage.store import Store
from shared.storage.tables.audit import AuditEntry
from shared.storage.tables.connections import Connection
from shared.trail.audit import AuditLog
from shared.trail.events import LIFECYCLE_QUEUE
from tests.fakes.ado_pats import AdoPatsFake
from tests.fakes.azure_devops_oauth import AzureDevOpsApp, AzureDevOpsOAuthFake
from tests.fakes.pagerduty import PagerDutyApp, PagerDutyFake
from tests.peers.devhost import DevHost, start_devhost
from tests.peers.processes import free_port

SECRETS = {
    "OIDC_DEMO_SECRET": "oidc-demo-client-secret-0123456789",
    "ENTRA_DEMO_SECRET": "entra-demo-client-secret-0123456789",
    "PD_CLIENT_SECRET": "pd-client-secret-0123456789abcdef",
    "ADO_CLIENT_SECRET": "ado-app-secret-0123456789abcdefghijklmnop",
}
PD_CLIENT_ID = "pd-client-id"
# Azure DevOps as an Entra resource (its application id), and the scope real deployments ask.
ADO_RESOURCE = "499b84ac-1321-427f-aa17-267ca6975798"
ADO_DEFAULT = f"{ADO_RESOURCE}/.default"
ADO_CLIENT_ID = "6b9c2f1e-4a3d-4c55-9f0e-2d1b7a8c9e01"
RETURN_URL = "https://portal.example.com/connected"
RETURN_PREFIX = "https://app.example.test/cb/"  # allowed with everything under it
LEASE_SECONDS = 6
GRACE_MINUTES = 0.03  # about 2 seconds
PROVIDER_TIMEOUT = 3


@dataclass
class World:
    devhost: DevHost
    oidc: OidcServer
    entra_op: OidcServer
    pagerduty: PagerDutyFake
    ado: AzureDevOpsOAuthFake
    store: Store
    admin_key: str
    keys: ApiKeys
    env: dict[str, str]
    ado_pats: AdoPatsFake
    http: requests.Session = field(default_factory=requests.Session)
    seen_events: list[dict[str, Any]] = field(default_factory=list)

    def events(self, subject: str, kind: str | None = None) -> list[dict[str, Any]]:
        """Lifecycle events about ``subject``: the queue is drained into ``seen_events``."""
        queue = QueueServiceClient.from_connection_string(
            self.env["AzureWebJobsStorage"]
        ).get_queue_client(LIFECYCLE_QUEUE)
        with contextlib.suppress(ResourceNotFoundError):
            while True:
                batch = list(queue.receive_messages(messages_per_page=32, max_messages=32))
                if not batch:
                    break
                for message in batch:
                    self.seen_events.append(json.loads(decode_message(message.content)))
                    queue.delete_message(message)
        return [e for e in self.seen_events
                if e["subject"] == subject and (kind is None or e["type"] == kind)]  # fmt: skip

    def audit_actions(self, action: str) -> list[AuditEntry]:
        since = datetime.now(UTC) - timedelta(hours=1)
        return [e for e in AuditLog(self.store, SystemClock()).read(since) if e.action == action]

    def audit(self, subject: str, action: str | None = None) -> list[AuditEntry]:
        since = datetime.now(UTC) - timedelta(hours=1)
        entries = AuditLog(self.store, SystemClock()).read(since, subject=subject)
        return [e for e in entries if action is None or e.action == action]

    def api(self, path: str) -> str:
        return self.devhost.api(path)

    def call(
        self, method: str, path: str, key: str | None = None, **kwargs: Any
    ) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}))
        headers.setdefault("Authorization", f"Bearer {key or self.admin_key}")
        return self.http.request(method, self.api(path), headers=headers, timeout=30, **kwargs)

    def another_devhost(self, log: Path) -> DevHost:
        """One more instance of the same app on the same storage (no timers: one runs them)."""
        return start_devhost(self.env, log, args=("--no-timers",))

    def connection(self, app: str, user_id: str) -> Connection:
        found = self.store.read(Connection, app, user_id)
        assert found is not None, f"no connection {app}/{user_id}"
        return found

    def token(
        self, app: str, user_id: str, host: DevHost | None = None, **params: Any
    ) -> requests.Response:
        url = (host or self.devhost).api(f"connections/{app}/{user_id}/token")
        return self.http.get(url, params=params, timeout=60,
                             headers={"Authorization": f"Bearer {self.admin_key}"})  # fmt: skip

    def key(self, scopes: list[str], resources: list[str], **extra: Any) -> str:
        request = NewKey(name="test", scopes=scopes, resources=resources, **extra)
        return self.keys.create(request, actor="test")[1]

    def connect_link(self, app: str, user_id: str, return_to: str | None = None) -> str:
        body: dict[str, Any] = {"app": app, "user_id": user_id}
        if return_to:
            body["return_to"] = return_to
        response = self.call("POST", "connect-sessions", json=body)
        assert response.status_code == 201, response.text
        return str(response.json()["url"])

    def authorize_url(self, link: str) -> str:
        """Open the link as a browser would; the provider URL Keysteward redirects to."""
        response = self.http.get(link, allow_redirects=False, timeout=30)
        assert response.status_code == 302, response.text
        return response.headers["Location"]

    def consent(self, app: str, authorize_url: str, account: str) -> str:
        """The provider's redirect back to Keysteward, after the user consents."""
        if app.startswith("oidc-"):
            return self.oidc.login_and_consent(authorize_url, account=account)
        if app == "entra-demo":
            return self.entra_op.login_and_consent(authorize_url, account=account)
        if app.startswith("pagerduty"):
            self.pagerduty.sign_in(account)
            return self.pagerduty.authorize_redirect(authorize_url)
        self.ado.sign_in(account)
        return self.ado.authorize_redirect(authorize_url)

    def connect(self, app: str, user_id: str, account: str | None = None) -> requests.Response:
        """The whole flow; the callback's response."""
        authorize = self.authorize_url(self.connect_link(app, user_id))
        callback = self.consent(app, authorize, account or user_id)
        return self.http.get(callback, allow_redirects=False, timeout=30)


def state_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["state"][0]


def _ca_bundle(extra: Path, directory: Path) -> Path:
    """The machine's CA bundle plus the test server's self-signed certificate."""
    system = Path(os.environ.get("REQUESTS_CA_BUNDLE") or "/etc/ssl/certs/ca-certificates.crt")
    bundle = directory / "ca-bundle.pem"
    bundle.write_text((system.read_text() if system.exists() else "") + "\n" + extra.read_text())
    return bundle


@contextmanager
def running_world(
    base_env: dict[str, str],
    directory: Path,
    *,
    devhost_args: tuple[str, ...] = (),
    extra_env: dict[str, str] | None = None,
) -> Iterator[World]:
    port = free_port()
    closed_port = free_port()  # nothing listens here: a provider that refuses connections
    public = f"http://127.0.0.1:{port}"

    def callback(app: str) -> str:
        return f"{public}/api/oauth/{app}/callback"

    with ExitStack() as stack:
        oidc = OidcServer(
            directory / "oidc",
            clients=[OidcClient("oidc-demo-client", SECRETS["OIDC_DEMO_SECRET"],
                                [callback("oidc-demo")]),
                     OidcClient("oidc-open-client", SECRETS["OIDC_DEMO_SECRET"],
                                [callback("oidc-open")])],
        ).start()  # fmt: skip
        stack.callback(oidc.stop)
        entra_op = OidcServer(
            directory / "entra",
            https=True,
            mount_path="/op",
            entra_claims=True,
            scopes=(*DEFAULT_SCOPES, ADO_DEFAULT),
            clients=[OidcClient("entra-demo-client", SECRETS["ENTRA_DEMO_SECRET"],
                                [callback("entra-demo")])],
        ).start()  # fmt: skip
        stack.callback(entra_op.stop)
        pagerduty = PagerDutyFake(
            [PagerDutyApp(PD_CLIENT_ID, SECRETS["PD_CLIENT_SECRET"],
                          callback("pagerduty-incidents")),
             PagerDutyApp(f"{PD_CLIENT_ID}-2", SECRETS["PD_CLIENT_SECRET"],
                          callback("pagerduty-bad-scope"))],
            scopes=["incidents.read", "incidents.write", "services.read", "users.read"],
        ).start()  # fmt: skip
        stack.callback(pagerduty.stop)
        ado = AzureDevOpsOAuthFake(
            AzureDevOpsApp(ADO_CLIENT_ID, SECRETS["ADO_CLIENT_SECRET"], callback("ado-legacy"),
                           allow_http_loopback=True),
        ).start()  # fmt: skip
        stack.callback(ado.stop)

        def entra_user(token: str) -> str | None:
            # Azure DevOps accepts the user's Entra access token: ask the issuer whose it is.
            found = entra_op.introspect(token, "entra-demo-client", SECRETS["ENTRA_DEMO_SECRET"])
            return str(found["sub"]) if found.get("active") else None

        ado_pats = AdoPatsFake(organizations=("contoso", "fabrikam"), bearer=entra_user,
                               page_size=2).start()  # fmt: skip
        stack.callback(ado_pats.stop)
        apps = {
            "apps": {
                "oidc-demo": {
                    "provider": "oidc", "issuer": oidc.issuer, "client_id": "oidc-demo-client",
                    "client_secret": "${OIDC_DEMO_SECRET}",
                    "scopes": ["openid", "offline_access", "profile", "api.read"],
                    "identity": {"claim": "preferred_username", "match": "casefold"},
                },
                # No identity policy: whoever signs in is recorded, and only a reconnect checks.
                "oidc-open": {
                    "provider": "oidc", "issuer": oidc.issuer, "client_id": "oidc-open-client",
                    "client_secret": "${OIDC_DEMO_SECRET}",
                    "scopes": ["openid", "offline_access", "email", "api.read"],
                },
                "entra-demo": {
                    "provider": "entra", "oidc_authority": entra_op.issuer,
                    "client_id": "entra-demo-client", "client_secret": "${ENTRA_DEMO_SECRET}",
                    # As a real deployment asks (docs/providers.md): Entra answers with the
                    # concrete permission, ADO_RESOURCE/user_impersonation.
                    "scopes": [ADO_DEFAULT], "prompt": "consent",
                    "identity": {"claim": "preferred_username"},
                    "organization": "contoso", "pat_api_url": ado_pats.url,
                    "devops_url": ado_pats.url,
                    # Expiring soon, whatever the day the suite runs.
                    "client_secret_expires_at": (datetime.now(UTC) + timedelta(days=5))
                    .date()
                    .isoformat(),
                },
                "pagerduty-incidents": {
                    "provider": "pagerduty", "client_id": PD_CLIENT_ID,
                    "client_secret": "${PD_CLIENT_SECRET}",
                    "authorize_url": f"{pagerduty.url}/oauth/authorize",
                    "token_url": f"{pagerduty.url}/oauth/token",
                    "revoke_url": f"{pagerduty.url}/oauth/revoke",
                    "revocation": True,
                    "scopes": ["incidents.read", "services.read"],
                    "identity": {"claim": "email"},
                },
                "pagerduty-bad-scope": {
                    "provider": "pagerduty", "client_id": f"{PD_CLIENT_ID}-2",
                    "client_secret": "${PD_CLIENT_SECRET}",
                    "authorize_url": f"{pagerduty.url}/oauth/authorize",
                    "token_url": f"{pagerduty.url}/oauth/token",
                    "scopes": ["incidents.read", "no.such.scope"],
                },
                "pagerduty-down": {
                    "provider": "pagerduty", "client_id": PD_CLIENT_ID,
                    "client_secret": "${PD_CLIENT_SECRET}",
                    "authorize_url": f"http://127.0.0.1:{closed_port}/oauth/authorize",
                    "token_url": f"http://127.0.0.1:{closed_port}/oauth/token",
                    "scopes": ["incidents.read"],
                },
                "ado-legacy": {
                    "provider": "azure-devops-oauth", "client_id": ADO_CLIENT_ID,
                    "client_secret": "${ADO_CLIENT_SECRET}",
                    "authorize_url": f"{ado.url}/oauth2/authorize",
                    "token_url": f"{ado.url}/oauth2/token",
                    "profile_url": f"{ado.url}/_apis/profile/profiles/me?api-version=7.1",
                    "scopes": ["vso.work", "vso.code"],
                    "identity": {"claim": "email"},
                },
            }
        }  # fmt: skip
        apps_file = directory / "apps.yaml"
        apps_file.write_text(yaml.safe_dump(apps))
        assert entra_op.ca_file is not None
        env = {
            **base_env,
            **SECRETS,
            "KEYSTEWARD_APPS_FILE": str(apps_file),
            "KEYSTEWARD_PUBLIC_URL": public,
            "KEYSTEWARD_ALLOWED_RETURN_URLS": f"{RETURN_URL},{RETURN_PREFIX}",
            # The Azure DevOps OAuth fake takes loopback http; the real service takes only https.
            "KEYSTEWARD_TEST_HTTP_LOOPBACK": "true",
            "REQUESTS_CA_BUNDLE": str(_ca_bundle(entra_op.ca_file, directory)),
            # Short enough that crash and timeout tests finish quickly.
            "KEYSTEWARD_REFRESH_LEASE_SECONDS": str(LEASE_SECONDS),
            "KEYSTEWARD_PROVIDER_TIMEOUT_SECONDS": str(PROVIDER_TIMEOUT),
            "KEYSTEWARD_ROTATION_GRACE_MINUTES": str(GRACE_MINUTES),
            **(extra_env or {}),
        }
        _start_empty(env["AzureWebJobsStorage"])
        host = start_devhost(env, directory / "devhost.log", port=port, args=devhost_args)
        stack.callback(host.stop)
        settings = Settings.from_env(env)
        store = Store(table_service(settings.storage), KeyRing(settings.encryption_keys))
        keys = ApiKeys(store, AuditLog(store, SystemClock()), SystemClock())
        _, admin = keys.create(
            NewKey(name="admin", scopes=list(SCOPES), resources=["*"]), actor="test"
        )
        yield World(host, oidc, entra_op, pagerduty, ado, store, admin, keys, env, ado_pats)


def _start_empty(connection_string: str) -> None:
    """Azurite outlives a module's world: what an earlier module's world left (rows such as the
    expiry warnings already sent, messages such as its events) must not count as this world's."""
    tables = TableServiceClient.from_connection_string(connection_string)
    for table in list(tables.list_tables()):
        tables.delete_table(table.name)
    queues = QueueServiceClient.from_connection_string(connection_string)
    for queue in list(queues.list_queues()):
        with contextlib.suppress(ResourceNotFoundError):
            queues.get_queue_client(queue.name).clear_messages()
