"""Clients for Table and Queue Storage, built once from ``StorageSettings``.

Connection strings and identity-based connections are both supported, as the Functions host
does: with ``credential=managedidentity`` (and a ``client_id`` for a user-assigned identity) a
managed identity is used; otherwise ``DefaultAzureCredential`` (developer sign-in, workload
identity, managed identity).
"""

from __future__ import annotations

import base64
import contextlib
from typing import Any

from azure.core.credentials import TokenCredential
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.data.tables import TableServiceClient
from azure.identity import DefaultAzureCredential, ManagedIdentityCredential
from azure.storage.queue import QueueClient, QueueServiceClient

from shared.config.settings import StorageSettings

# host.json sets extensions.queues.messageEncoding to this; producers and the devhost agree with it.
MESSAGE_ENCODING = "base64"


def _credential(storage: StorageSettings) -> TokenCredential:
    if storage.credential == "managedidentity":
        return ManagedIdentityCredential(client_id=storage.client_id)
    return DefaultAzureCredential(managed_identity_client_id=storage.client_id)


def table_service(storage: StorageSettings, **options: Any) -> TableServiceClient:
    """A TableServiceClient; ``options`` pass transport settings (timeouts, retries)."""
    if storage.connection_string:
        return TableServiceClient.from_connection_string(storage.connection_string, **options)
    assert storage.table_uri is not None  # settings guarantee it
    return TableServiceClient(
        endpoint=storage.table_uri, credential=_credential(storage), **options
    )


def queue_service(storage: StorageSettings, **options: Any) -> QueueServiceClient:
    if storage.connection_string:
        return QueueServiceClient.from_connection_string(storage.connection_string, **options)
    assert storage.queue_uri is not None
    return QueueServiceClient(
        account_url=storage.queue_uri, credential=_credential(storage), **options
    )


def encode_message(text: str) -> str:
    """A queue message body in the host's ``messageEncoding``."""
    if MESSAGE_ENCODING == "base64":
        return base64.b64encode(text.encode("utf-8")).decode("ascii")
    return text


def decode_message(content: str) -> bytes:
    """The inverse of ``encode_message``; raises ``ValueError`` for a body not in the encoding."""
    if MESSAGE_ENCODING == "base64":
        return base64.b64decode(content.encode("ascii"), validate=True)
    return content.encode("utf-8")


def queue_client(service: QueueServiceClient, name: str) -> QueueClient:
    return service.get_queue_client(name)


def send(service: QueueServiceClient, name: str, text: str, delay: float = 0) -> None:
    """Put one message on a queue (created if missing), encoded as the host reads it, visible
    after ``delay`` seconds (at most 7 days, the queue's limit)."""
    client = service.get_queue_client(name)
    visibility = min(int(delay), 7 * 24 * 3600) or None
    try:
        client.send_message(encode_message(text), visibility_timeout=visibility)
    except ResourceNotFoundError:
        with contextlib.suppress(ResourceExistsError):
            client.create_queue()
        client.send_message(encode_message(text), visibility_timeout=visibility)
