from __future__ import annotations

import base64
import json
import logging
import os
import re
import secrets
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue import QueueServiceClient

from shared.config.settings import StorageSettings
from shared.foundation.clock import FixedClock
from shared.foundation.redaction import REDACTED
from shared.storage.clients import queue_service
from shared.storage.crypto import KeyRing, MessageSeals
from shared.trail import events
from shared.trail.events import LIFECYCLE_QUEUE, SEAL_PURPOSE, WEBHOOK_QUEUE, EventPublisher
from tests.peers.azurite import connection_string
from tests.peers.processes import free_port

NOW = datetime(2026, 11, 22, 8, 30, 15, 123456, tzinfo=UTC)
SOURCE = "https://keysteward.contoso.com"
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
REQUIRED = {"specversion", "id", "source", "type"}
SEALS = MessageSeals(KeyRing([("test", os.urandom(32))]), SEAL_PURPOSE)


def _drain(queues: QueueServiceClient, name: str) -> list[dict[str, Any]]:
    """Every visible message of a queue, decoded as the Functions host does (base64, JSON)."""
    client = queues.get_queue_client(name)
    out = []
    try:
        for message in client.receive_messages(max_messages=32):
            out.append(json.loads(base64.b64decode(message.content, validate=True)))
            client.delete_message(message)
    except ResourceNotFoundError:
        return []
    return out


@pytest.fixture
def publisher(queues: QueueServiceClient) -> EventPublisher:
    return EventPublisher(queues, FixedClock(NOW), source=SOURCE, webhook_enabled=False)


def test_publish_queues_a_valid_cloudevent(
    publisher: EventPublisher, queues: QueueServiceClient
) -> None:
    data = {"app": "pagerduty-incidents", "user_id": "alice@contoso.com", "reason": "invalid_grant"}
    event = publisher.publish(
        events.CONNECTION_NEEDS_REAUTH, "pagerduty-incidents/alice@contoso.com", data
    )
    [queued] = _drain(queues, LIFECYCLE_QUEUE)
    assert queued == event
    assert set(queued) >= REQUIRED
    assert queued["specversion"] == "1.0"
    assert uuid.UUID(queued["id"]).version == 4
    assert queued["source"] == SOURCE
    assert queued["type"] == "keysteward.connection.needs_reauth"
    assert queued["subject"] == "pagerduty-incidents/alice@contoso.com"
    assert queued["datacontenttype"] == "application/json"
    assert queued["data"] == data
    assert RFC3339.match(queued["time"])
    assert datetime.fromisoformat(queued["time"].replace("Z", "+00:00")) == NOW
    # extension attribute names: lowercase letters and digits only (CloudEvents 1.0)
    for name in set(queued) - REQUIRED - {"time", "subject", "datacontenttype", "data"}:
        assert re.fullmatch(r"[a-z0-9]{1,20}", name)


def test_each_event_has_its_own_id_and_the_queue_is_created_once(
    publisher: EventPublisher, queues: QueueServiceClient
) -> None:
    ids = {
        publisher.publish(events.CREDENTIAL_ROTATED, "pats/p1", {"n": n})["id"] for n in range(3)
    }
    assert len(ids) == 3
    assert [e["data"] for e in _drain(queues, LIFECYCLE_QUEUE)] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert publisher._ready == {LIFECYCLE_QUEUE}


def test_a_delivery_is_queued_only_when_webhooks_are_enabled(queues: QueueServiceClient) -> None:
    off = EventPublisher(queues, FixedClock(NOW), source=SOURCE, webhook_enabled=False)
    off.publish(events.CONNECTION_CREATED, "pd/alice", {})
    assert _drain(queues, WEBHOOK_QUEUE) == []

    on = EventPublisher(queues, FixedClock(NOW), SOURCE, webhook_enabled=True, seals=SEALS)
    event = on.publish(events.CONNECTION_CREATED, "pd/bob", {"app": "pd"})
    [delivery] = _drain(queues, WEBHOOK_QUEUE)
    assert delivery == {"event": event, "attempt": 1, "seal": delivery["seal"]}
    assert len(_drain(queues, LIFECYCLE_QUEUE)) == 2


def test_a_delivery_is_sealed_over_the_exact_event_bytes(queues: QueueServiceClient) -> None:
    publisher = EventPublisher(queues, FixedClock(NOW), SOURCE, webhook_enabled=True, seals=SEALS)
    event = publisher.publish(events.CREDENTIAL_REVOKED, "pd/alice", {"app": "pd", "n": 1.5})
    [delivery] = _drain(queues, WEBHOOK_QUEUE)
    body = json.dumps(event, separators=(",", ":")).encode()
    assert str(delivery["seal"]).startswith("s1.test.")  # the ring's first kid, never a key
    assert SEALS.problem(delivery["seal"], body) is None
    assert SEALS.problem(delivery["seal"], body.replace(b"alice", b"bob")) is not None
    # An unsealed delivery cannot be asked for: the sender would drop every one of them.
    with pytest.raises(ValueError, match="must be sealed"):
        EventPublisher(queues, FixedClock(NOW), SOURCE, webhook_enabled=True)


def test_event_data_is_redacted(publisher: EventPublisher, queues: QueueServiceClient) -> None:
    token = secrets.token_urlsafe(32)
    event = publisher.publish(
        events.CREDENTIAL_ROTATED,
        "pats/p1",
        {"pat_id": "p1", "token": token, "note": f"new value {token}", "key_id": "k1"},
    )
    assert event["data"] == {
        "pat_id": "p1",
        "token": REDACTED,
        "note": f"new value {REDACTED}",
        "key_id": "k1",
    }
    [queued] = _drain(queues, LIFECYCLE_QUEUE)
    assert token not in json.dumps(queued)


def test_bad_types_and_secret_subjects_are_programming_errors(publisher: EventPublisher) -> None:
    for bad in ("connection.created", "keysteward.", "keysteward.Connection.Created", "x.y.z"):
        with pytest.raises(ValueError, match="event type"):
            publisher.publish(bad, "pd/alice", {})
    with pytest.raises(ValueError, match="looks like a secret"):
        publisher.publish(events.CONNECTION_CREATED, f"ks_{secrets.token_urlsafe(32)}", {})
    with pytest.raises(ValueError, match="larger than"):
        publisher.publish(events.REVOCATION_COMPLETED, "user:alice", {"x": "y" * 50_000})


def test_known_event_types_are_well_formed() -> None:
    assert len(set(events.EVENT_TYPES)) == len(events.EVENT_TYPES)
    documented = (Path(__file__).resolve().parents[1] / "docs" / "events.md").read_text()
    for event_type in events.EVENT_TYPES:
        assert events._TYPE.fullmatch(event_type)
        assert f"| `{event_type}` |" in documented  # every type in the event table
    assert events.APIKEY_EXPIRING == "keysteward.apikey.expiring"


def test_unreachable_storage_neither_fails_nor_blocks_the_caller(
    caplog: pytest.LogCaptureFixture,
) -> None:
    closed = free_port()  # nothing listens: every queue call is refused
    dead = queue_service(StorageSettings(connection_string=connection_string(closed, closed)))
    publisher = EventPublisher(dead, FixedClock(NOW), SOURCE, webhook_enabled=True, seals=SEALS)
    caplog.set_level(logging.ERROR, logger="shared.trail.events")
    started = time.monotonic()
    event = publisher.publish(events.CONNECTION_CREATED, "pd/alice", {"password": "hunter2"})
    assert time.monotonic() - started < 5
    assert event["type"] == events.CONNECTION_CREATED
    assert f"event {event['id']} ({events.CONNECTION_CREATED}) was not queued" in caplog.text
    assert LIFECYCLE_QUEUE in caplog.text
    assert WEBHOOK_QUEUE in caplog.text
    assert "hunter2" not in caplog.text
    assert publisher._ready == set()  # creation is tried again next time


def test_the_documented_event_types_are_the_emitted_ones() -> None:
    import re
    from pathlib import Path

    docs = (Path(__file__).resolve().parents[1] / "docs" / "events.md").read_text()
    documented = set(re.findall(r"^\| `(keysteward\.[a-z_.]+)` \|", docs, re.M))
    assert documented == set(events.EVENT_TYPES)
    assert "planned" not in docs.lower()
