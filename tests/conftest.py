"""Session-wide real peers: one Azurite for the run, fresh tables and queues for each test."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.data.tables import TableServiceClient
from azure.storage.queue import QueueServiceClient

from shared.config.settings import StorageSettings
from shared.storage.clients import queue_service, table_service
from shared.storage.crypto import KeyRing
from shared.storage.store import Store
from tests.peers.azurite import Azurite, start_azurite
from tests.peers.world import World, running_world


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    server = start_azurite(log=tmp_path_factory.mktemp("azurite") / "azurite.log")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def storage_settings(azurite: Azurite) -> StorageSettings:
    return StorageSettings(connection_string=azurite.connection_string)


@pytest.fixture(scope="session")
def key_ring_spec() -> str:
    """A KEYSTEWARD_ENCRYPTION_KEYS value made for this run."""
    return ",".join(
        f"{kid}:{base64.b64encode(os.urandom(32)).decode()}" for kid in ("test1", "test0")
    )


@pytest.fixture(scope="session")
def key_ring(key_ring_spec: str) -> KeyRing:
    keys = []
    for item in key_ring_spec.split(","):
        kid, _, key = item.partition(":")
        keys.append((kid, base64.b64decode(key)))
    return KeyRing(keys)


@pytest.fixture
def tables(storage_settings: StorageSettings) -> Iterator[TableServiceClient]:
    """The table service with no table before the test (other modules' devhosts write to the same
    Azurite) and none left after it."""
    service = table_service(storage_settings)

    def empty() -> None:
        for table in list(service.list_tables()):
            service.delete_table(table.name)

    empty()
    try:
        yield service
    finally:
        empty()


@pytest.fixture
def queues(storage_settings: StorageSettings) -> Iterator[QueueServiceClient]:
    """The queue service, with no queue before the test (other modules' devhosts publish to the
    same Azurite) and none left after it."""
    service = queue_service(storage_settings)

    def empty() -> None:
        for queue in list(service.list_queues()):
            service.delete_queue(queue.name)

    empty()
    try:
        yield service
    finally:
        empty()


@pytest.fixture
def store(tables: TableServiceClient, key_ring: KeyRing) -> Store:
    return Store(tables, key_ring)


@pytest.fixture(scope="session")
def app_env(azurite: Azurite, key_ring_spec: str) -> dict[str, str]:
    """The environment a devhost or CLI process of this test run gets."""
    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYSTEWARD_", "AzureWebJobs"))}
    env.update(
        {
            "PYTHONPATH": str(root),
            "AzureWebJobsStorage": azurite.connection_string,
            "KEYSTEWARD_ENCRYPTION_KEYS": key_ring_spec,
            "KEYSTEWARD_PUBLIC_URL": "http://127.0.0.1:7071",
        }
    )
    return env


@pytest.fixture(scope="module")
def world(app_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """Keysteward on devhost with real OAuth peers and fakes (tests/peers/world.py)."""
    with running_world(app_env, tmp_path_factory.mktemp("world")) as running:
        yield running
