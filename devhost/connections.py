"""Queue Storage clients for the connections bindings name, resolved as the host resolves them.

A binding's ``connection`` names an app setting (default ``AzureWebJobsStorage``). The host looks
for a connection string in ``NAME``, then in ``AzureWebJobsNAME``; failing that, for an
identity-based connection in ``NAME__queueServiceUri`` or ``NAME__accountName`` (with optional
``NAME__credential`` and ``NAME__clientId``). Clients are built with ``shared.storage``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping

from azure.core.exceptions import AzureError, ResourceExistsError
from azure.storage.queue import QueueClient, QueueServiceClient

from devhost.errors import StartupError
from shared.config.settings import STORAGE, StorageSettings
from shared.storage.clients import queue_client, queue_service

# Fail fast when storage is down rather than retrying for half a minute, so shutdown stays quick
# and a poll loop notices at once; devhost's own loops retry.
# (The storage SDK's own retries back off 15 s and more, far too long for a local poll loop.)
_TRANSPORT = {"retry_total": 0, "connection_timeout": 5, "read_timeout": 30}


def storage_settings(connection: str | None, env: Mapping[str, str]) -> StorageSettings:
    name = connection or STORAGE
    for candidate in (name, f"AzureWebJobs{name}"):
        value = env.get(candidate, "").strip()
        if value:
            return StorageSettings(connection_string=value)
    uri = env.get(f"{name}__queueServiceUri", "").strip()
    account = env.get(f"{name}__accountName", "").strip()
    if not uri and account:
        uri = f"https://{account}.queue.core.windows.net"
    if not uri:
        raise StartupError(
            f"storage connection '{name}' is not configured: set {name} to a connection string "
            f"(for Azurite, its development connection string) or {name}__queueServiceUri"
        )
    return StorageSettings(
        queue_uri=uri,
        credential=env.get(f"{name}__credential", "").strip() or None,
        client_id=env.get(f"{name}__clientId", "").strip() or None,
    )


log = logging.getLogger("devhost")


class Connections:
    """One service client per connection, and queues created on first use (as the host does)."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env
        self._services: dict[str, QueueServiceClient] = {}
        self._created: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def check(self, connection: str | None) -> None:
        storage_settings(connection, self._env)

    def queue(self, connection: str | None, name: str, *, create: bool = True) -> QueueClient:
        key = connection or STORAGE
        with self._lock:
            service = self._services.get(key)
            if service is None:
                service = queue_service(storage_settings(connection, self._env), **_TRANSPORT)
                self._services[key] = service
            needs_create = create and (key, name) not in self._created
        client = queue_client(service, name)
        if needs_create:
            try:
                client.create_queue()
            except ResourceExistsError:
                pass
            except AzureError as exc:  # storage is down: start anyway; the poll loop retries
                log.warning("queue %s: not created yet (%s)", name, type(exc).__name__)
                return client
            with self._lock:
                self._created.add((key, name))
        return client
