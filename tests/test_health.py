from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from shared.foundation.version import VERSION
from tests.peers.azurite import DEV_KEY, connection_string
from tests.peers.devhost import DevHost, start_devhost
from tests.peers.processes import free_port


@pytest.fixture
def devhost(app_env: dict[str, str], tmp_path: Path) -> Iterator[DevHost]:
    host = start_devhost(app_env, tmp_path / "devhost.log")
    try:
        yield host
    finally:
        host.stop()


def test_health_is_ok_when_storage_answers(devhost: DevHost) -> None:
    response = requests.get(devhost.api("health"), timeout=10)
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "version": VERSION,
        "storage": "ok",
        "misconfigured_apps": [],
    }
    assert response.headers["Content-Type"].startswith("application/json")


def test_health_is_503_when_storage_does_not_answer(
    app_env: dict[str, str], key_ring_spec: str, tmp_path: Path
) -> None:
    closed = free_port()  # nothing listens here
    env = {**app_env, "AzureWebJobsStorage": connection_string(closed, closed)}
    host = start_devhost(env, tmp_path / "devhost.log", wait_healthy=False)
    try:
        response = requests.get(host.api("health"), timeout=30)
    finally:
        host.stop()
    assert response.status_code == 503
    body = response.json()
    assert body["storage"] == "unreachable"
    assert body["status"] != "ok"
    for secret in (DEV_KEY, key_ring_spec.split(",", 1)[0].split(":")[1], str(closed)):
        assert secret not in response.text
    assert set(body) == {"status", "version", "storage", "misconfigured_apps"}
    assert body["misconfigured_apps"] == []
