from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta

import pytest
from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueServiceClient

from shared.access.api_keys import ApiKeys
from shared.access.key_requests import NewKey
from shared.foundation.clock import FixedClock
from shared.lifecycle.expiry_warnings import ExpirySweep, thresholds_crossed
from shared.storage.clients import decode_message
from shared.storage.store import Store
from shared.trail.audit import AuditLog
from shared.trail.events import APIKEY_EXPIRING, LIFECYCLE_QUEUE, EventPublisher

START = datetime(2026, 11, 22, 2, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START)


@pytest.fixture
def world(store: Store, queues: QueueServiceClient, clock: FixedClock):
    audit = AuditLog(store, clock)
    keys = ApiKeys(store, audit, clock)
    events = EventPublisher(queues, clock, source="https://ks.example", webhook_enabled=False)
    return keys, ExpirySweep(store, keys, audit, events, clock), audit


def expiring_events(queues: QueueServiceClient) -> list[dict[str, object]]:
    queue = queues.get_queue_client(LIFECYCLE_QUEUE)
    with contextlib.suppress(ResourceExistsError):
        queue.create_queue()
    found = []
    for message in queue.receive_messages(max_messages=32):
        event = json.loads(decode_message(message.content))
        queue.delete_message(message)
        if event["type"] == APIKEY_EXPIRING:
            found.append(event)
    return found


def test_thresholds() -> None:
    expires = START + timedelta(days=30)
    assert thresholds_crossed(expires, START, []) == []
    assert thresholds_crossed(expires, expires - timedelta(days=10), []) == [10]
    assert thresholds_crossed(expires, expires - timedelta(days=10), [10]) == []
    assert thresholds_crossed(expires, expires - timedelta(hours=3), [10]) == [1]
    assert thresholds_crossed(expires, expires - timedelta(hours=3), []) == [10, 1]
    assert thresholds_crossed(expires, expires, []) == []


def test_a_key_is_warned_at_10_days_and_at_1_day_once_each(world, queues, clock) -> None:
    keys, sweep, audit = world
    key, _ = keys.create(NewKey(name="ci", scopes=["tokens:read"], resources=["*"],
                       expires_in_days=30), actor="test")  # fmt: skip
    nights = []
    for night in range(31):
        clock.set(START + timedelta(days=night))
        sweep.run()
        nights.append([e["data"]["threshold_days"] for e in expiring_events(queues)])  # type: ignore[index]
    warned = {night: found for night, found in enumerate(nights) if found}
    assert warned == {20: [10], 29: [1]}
    event_subjects = {e.subject for e in audit.read(START, START + timedelta(days=31))
                      if e.action == "apikey.expiring"}  # fmt: skip
    assert event_subjects == {f"key:{key.id}"}


def test_a_short_lived_key_gets_one_warning_for_the_nearest_threshold(world, queues, clock) -> None:
    keys, sweep, _ = world
    keys.create(NewKey(name="short", scopes=["tokens:read"], resources=["*"],
                       expires_in_days=5), actor="test")  # fmt: skip
    sweep.run()
    events = expiring_events(queues)
    assert len(events) == 1
    data = events[0]["data"]
    assert data["threshold_days"] == 10  # type: ignore[index]
    assert data["days_left"] == 5  # type: ignore[index]
    sweep.run()
    assert expiring_events(queues) == []
    clock.advance(timedelta(days=4, hours=1))
    sweep.run()
    assert [e["data"]["threshold_days"] for e in expiring_events(queues)] == [1]  # type: ignore[index]


def test_two_sweeps_racing_warn_once(world, store, queues, clock) -> None:
    keys, sweep, audit = world
    keys.create(NewKey(name="race", scopes=["tokens:read"], resources=["*"],
                       expires_in_days=3), actor="test")  # fmt: skip
    other = ExpirySweep(
        store, keys, audit, EventPublisher(queues, clock, "https://ks.example", False), clock
    )
    listed = keys.list()  # both sweeps read the key before either writes
    first = sweep._warn_key(listed[0], clock.now())
    second = other._warn_key(keys.list()[0], clock.now())
    stale = other._warn_key(listed[0], clock.now())
    assert (first, second, stale) == (True, False, False)
    assert len(expiring_events(queues)) == 1


def test_a_key_used_while_the_sweep_warns_is_still_warned(world, store, queues, clock) -> None:
    keys, sweep, _ = world
    keys.create(NewKey(name="busy", scopes=["tokens:read"], resources=["*"],
                       expires_in_days=3), actor="test")  # fmt: skip
    listed = keys.list()[0]  # the sweep's read
    touched = keys.list()[0]
    touched.last_used_at = clock.now()  # another writer (a use of the key) lands first
    store.save(touched)
    assert sweep._warn_key(listed, clock.now()) is True  # read again, not given up
    assert len(expiring_events(queues)) == 1
    stored = keys.list()[0]
    assert stored.warned_days == [10]
    assert stored.last_used_at == touched.last_used_at  # the other write was not overwritten
