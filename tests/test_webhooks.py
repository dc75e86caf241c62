from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import re
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import QueueClient, QueueMessage, QueueServiceClient

from shared.config.settings import Settings
from shared.foundation.clock import Clock, FixedClock, SystemClock
from shared.foundation.errors import SettingsError, WebhookVerificationError
from shared.storage.clients import encode_message
from shared.storage.crypto import KeyRing, MessageSeals
from shared.storage.store import Store
from shared.trail import events
from shared.trail.audit import AuditLog
from shared.trail.events import SEAL_PURPOSE, WEBHOOK_QUEUE, EventPublisher
from shared.trail.webhooks import (
    ACTOR,
    CONTENT_TYPE,
    DEAD_LETTERED,
    DELIVERED,
    DROPPED,
    MAX_BACKOFF_SECONDS,
    POISON_QUEUE,
    RETRY_SCHEDULED,
    WebhookSender,
    sign,
    verify,
)
from tests.peers.devhost import start_devhost
from tests.peers.processes import free_port, wait_until
from tests.peers.receiver import WebhookReceiver

SECRET = secrets.token_urlsafe(32).encode()
SenderFactory = Callable[..., WebhookSender]
RING = KeyRing([("hooks1", os.urandom(32))])
SEALS = MessageSeals(RING, SEAL_PURPOSE)
STARTED = datetime.now(UTC) - timedelta(minutes=5)  # audit reads from here (tables are per test)


def _sealed(event: dict[str, Any], attempt: int = 1, seals: MessageSeals = SEALS) -> dict[str, Any]:
    """A delivery message as Keysteward's publisher queues it."""
    body = json.dumps(event, separators=(",", ":")).encode()
    return {"event": event, "attempt": attempt, "seal": seals.seal(body)}


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver(SECRET).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as http:
        http.trust_env = False  # no proxy between us and 127.0.0.1
        yield http


@pytest.fixture
def audit(store: Store) -> AuditLog:
    return AuditLog(store, SystemClock())


@pytest.fixture
def make_sender(
    queues: QueueServiceClient, session: requests.Session, audit: AuditLog
) -> SenderFactory:
    def make(
        url: str,
        *,
        max_attempts: int = 4,
        base: float = 0.5,
        clock: Clock | None = None,
        seals: MessageSeals = SEALS,
        secret: bytes = SECRET,
    ) -> WebhookSender:
        return WebhookSender(
            url=url,
            secret=secret,
            session=session,
            clock=clock or SystemClock(),
            queues=queues,
            seals=seals,
            audit=audit,
            retry_base_seconds=base,
            max_attempts=max_attempts,
        )

    return make


def _event(subject: str = "pd/alice@contoso.com") -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": "9a0c1f7e-4c8e-4d4b-8f31-2f6f0f1f2a3b",
        "source": "https://keysteward.contoso.com",
        "type": events.CONNECTION_NEEDS_REAUTH,
        "time": "2026-11-22T08:30:15.123456Z",
        "subject": subject,
        "datacontenttype": "application/json",
        "data": {"app": "pd", "user_id": "alice@contoso.com"},
    }


def _closed_url() -> str:
    return f"http://127.0.0.1:{free_port()}/hooks"  # nothing listens there


def _queue(queues: QueueServiceClient, name: str) -> QueueClient:
    return queues.get_queue_client(name)


def _decode(message: QueueMessage) -> dict[str, Any]:
    value = json.loads(base64.b64decode(message.content, validate=True))
    assert isinstance(value, dict)
    return value


def _count(client: QueueClient) -> int:
    try:
        return int(client.get_queue_properties().approximate_message_count or 0)
    except ResourceNotFoundError:
        return 0


def _next_delivery(queues: QueueServiceClient, timeout: float = 10) -> dict[str, Any]:
    """Wait for the next visible delivery, take it and delete it, as the host's trigger does."""
    client = _queue(queues, WEBHOOK_QUEUE)
    message = wait_until(client.receive_message, timeout=timeout, what="a visible delivery")
    assert isinstance(message, QueueMessage)
    client.delete_message(message)
    return _decode(message)


# -- signatures -------------------------------------------------------------------------------


def test_signature_matches_the_standard_webhooks_test_vector() -> None:
    secret = base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")  # whsec_ prefix removed
    body = b'{"test": 2432232314}'
    signature = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    headers = {
        "Webhook-Id": "msg_p5jXN8AQM9LWM0D4loKWxJek",  # header names are case-insensitive
        "Webhook-Timestamp": "1614265330",
        "Webhook-Signature": f"v1,bm9wZQ== {signature}",  # one valid of several is enough
    }
    verify(secret, headers, body, now=1614265330 + 299)


def _headers(body: bytes, timestamp: int, msg_id: str = "evt-1") -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(SECRET, msg_id, timestamp, body),
    }


def test_verify_accepts_a_fresh_signature_and_rejects_tampering() -> None:
    now = int(time.time())
    body = json.dumps(_event()).encode()
    headers = _headers(body, now)
    verify(SECRET, headers, body, now=now)

    cases: list[tuple[bytes, bytes, dict[str, str], int, str]] = [
        (SECRET, body.replace(b"alice", b"mallory"), headers, now, "no valid v1 signature"),
        (b"another-secret-of-enough-length!!", body, headers, now, "no valid v1 signature"),
        (SECRET, body, {**headers, "webhook-id": "evt-2"}, now, "no valid v1 signature"),
        (SECRET, body, {**headers, "webhook-signature": "v1,AAAA"}, now, "no valid v1"),
        (SECRET, body, headers, now + 301, "replay window"),  # stale
        (SECRET, body, headers, now - 301, "replay window"),  # from the future
        (SECRET, body, {**headers, "webhook-timestamp": "soon"}, now, "unix seconds"),
        (SECRET, body, {"webhook-id": "evt-1"}, now, "missing"),
    ]
    for secret, payload, hdrs, at, message in cases:
        with pytest.raises(WebhookVerificationError, match=message):
            verify(secret, hdrs, payload, now=at)
    # a re-signed message with a moved timestamp is a new signature, not a replay of the old one
    moved = {**headers, "webhook-timestamp": str(now + 1)}
    with pytest.raises(WebhookVerificationError):
        verify(SECRET, moved, body, now=now)


# -- delivery ---------------------------------------------------------------------------------


def test_delivery_to_a_live_receiver_is_signed_and_verified(
    make_sender: SenderFactory, receiver: WebhookReceiver, queues: QueueServiceClient
) -> None:
    event = _event()
    assert make_sender(receiver.url).deliver(_sealed(event, 1)) == DELIVERED
    [delivery] = receiver.accepted
    assert receiver.rejected == []
    assert delivery.event == event
    headers = {k.lower(): v for k, v in delivery.headers.items()}
    assert headers["content-type"] == CONTENT_TYPE
    assert headers["webhook-id"] == event["id"]
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 5
    assert headers["webhook-signature"].startswith("v1,")
    assert _count(_queue(queues, WEBHOOK_QUEUE)) == 0


def test_a_receiver_with_another_secret_rejects_the_delivery_which_is_retried(
    make_sender: SenderFactory, queues: QueueServiceClient
) -> None:
    other = WebhookReceiver(b"x" * 32).start()
    try:
        assert make_sender(other.url).deliver(_sealed(_event(), 1)) == RETRY_SCHEDULED
        assert other.accepted == []
        assert [d.reason for d in other.rejected] == ["No matching signature found"]
    finally:
        other.stop()
    assert _count(_queue(queues, WEBHOOK_QUEUE)) == 1


def test_a_down_receiver_schedules_the_next_attempt_later_without_raising(
    make_sender: SenderFactory, queues: QueueServiceClient
) -> None:
    event = _event()
    sender = make_sender(_closed_url(), base=0.5)
    started = time.monotonic()
    assert sender.deliver(_sealed(event, 1)) == RETRY_SCHEDULED
    returned = time.monotonic()
    assert returned - started < 5

    deliveries = _queue(queues, WEBHOOK_QUEUE)
    assert _count(deliveries) == 1  # queued...
    assert deliveries.peek_messages() == []  # ...but invisible for now
    assert _next_delivery(queues) == _sealed(event, 2)  # visible later
    assert time.monotonic() - returned >= 0.5
    assert _count(_queue(queues, POISON_QUEUE)) == 0


def test_exhausted_attempts_go_to_the_poison_queue(
    make_sender: SenderFactory, queues: QueueServiceClient, caplog: pytest.LogCaptureFixture
) -> None:
    event = _event()
    sender = make_sender(_closed_url(), max_attempts=3)
    caplog.set_level(logging.ERROR, logger="shared.trail.webhooks")
    assert sender.deliver(_sealed(event, 3)) == DEAD_LETTERED
    assert _count(_queue(queues, WEBHOOK_QUEUE)) == 0
    [poisoned] = _queue(queues, POISON_QUEUE).peek_messages()
    assert _decode(poisoned) == {**_sealed(event, 3), "reason": "ConnectionError"}
    assert f"event {event['id']} ({event['type']})" in caplog.text
    assert "after 3 attempts" in caplog.text


def test_a_receiver_that_comes_back_gets_the_event_on_a_later_attempt(
    make_sender: SenderFactory, queues: QueueServiceClient
) -> None:
    port = free_port()
    event = _event()
    sender = make_sender(f"http://127.0.0.1:{port}/hooks/keysteward", base=0.5)
    assert sender.deliver(_sealed(event, 1)) == RETRY_SCHEDULED

    receiver = WebhookReceiver(SECRET, port=port).start()  # the receiver is back up
    try:
        message = _next_delivery(queues)  # the host would now run the function again
        assert message["attempt"] == 2
        assert sender.deliver(message) == DELIVERED
        [delivery] = receiver.accepted
        assert delivery.event == event
        assert delivery.headers["webhook-id"] == event["id"]
    finally:
        receiver.stop()
    assert _count(_queue(queues, WEBHOOK_QUEUE)) == 0


def test_a_failing_receiver_is_retried_with_a_fresh_signature(
    make_sender: SenderFactory, receiver: WebhookReceiver, queues: QueueServiceClient
) -> None:
    clock = FixedClock(datetime.now(UTC))
    sender = make_sender(receiver.url, base=0.5, clock=clock)
    receiver.fail_next(1)
    assert sender.deliver(_sealed(_event(), 1)) == RETRY_SCHEDULED
    clock.advance(timedelta(seconds=2))
    message = _next_delivery(queues)
    assert sender.deliver(message) == DELIVERED

    [failed] = receiver.failed
    [accepted] = receiver.accepted
    assert failed.body == accepted.body
    assert failed.headers["webhook-id"] == accepted.headers["webhook-id"]
    stamps = [int(d.headers["webhook-timestamp"]) for d in (failed, accepted)]
    assert stamps[1] - stamps[0] == 2  # signed at send time, not at publish time
    assert failed.headers["webhook-signature"] != accepted.headers["webhook-signature"]


def test_attempts_end_in_poison_after_max_attempts_when_the_receiver_keeps_failing(
    make_sender: SenderFactory, receiver: WebhookReceiver, queues: QueueServiceClient
) -> None:
    sender = make_sender(receiver.url, max_attempts=2, base=0.5)
    receiver.fail_next(10)
    assert sender.deliver(_sealed(_event(), 1)) == RETRY_SCHEDULED
    assert sender.deliver(_next_delivery(queues)) == DEAD_LETTERED
    assert len(receiver.failed) == 2
    [poisoned] = _queue(queues, POISON_QUEUE).peek_messages()
    assert _decode(poisoned)["reason"] == "HTTP 500"


def test_backoff_doubles_is_capped_and_jittered(make_sender: SenderFactory) -> None:
    sender = make_sender(_closed_url(), base=30, max_attempts=12)
    for attempt, nominal in [(1, 30), (2, 60), (3, 120), (7, 1920)]:
        delays = {sender.backoff(attempt) for _ in range(50)}
        assert all(0.8 * nominal <= d <= 1.2 * nominal + 1 for d in delays)
        assert len(delays) > 1  # jittered, so instances that failed together spread out
    assert all(sender.backoff(a) <= MAX_BACKOFF_SECONDS for a in (8, 20, 100))
    assert make_sender(_closed_url(), base=0.01).backoff(1) == 1  # queue delays are whole seconds


def test_malformed_sealed_messages_are_dead_lettered_not_retried(
    make_sender: SenderFactory, receiver: WebhookReceiver, queues: QueueServiceClient
) -> None:
    sender = make_sender(receiver.url)
    # Sealed, so Keysteward's own (an operator may edit "attempt" of a poisoned one), yet unusable.
    for message in (_sealed({"type": "x"}), _sealed(_event(), 0)):
        assert sender.deliver(message) == DEAD_LETTERED
    assert receiver.accepted == []
    assert _count(_queue(queues, POISON_QUEUE)) == 2


def test_nothing_secret_is_logged(
    make_sender: SenderFactory, receiver: WebhookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = secrets.token_urlsafe(16)
    down = make_sender(f"{_closed_url()}?token={token}", max_attempts=2)
    down.deliver(_sealed(_event(), 1))
    down.deliver(_sealed(_event(), 2))
    receiver.fail_next(1)
    make_sender(receiver.url).deliver(_sealed(_event(), 1))
    make_sender(receiver.url).deliver(_sealed(_event(), 1))
    signatures = [d.headers["webhook-signature"] for d in receiver.failed + receiver.accepted]
    assert "webhook delivery failed" in caplog.text
    for value in (SECRET.decode(), token, *signatures, *(s.split(",", 1)[1] for s in signatures)):
        assert value not in caplog.text
    assert SECRET.decode() not in repr(down)


# -- with the publisher and the function ------------------------------------------------------


def test_publishing_with_a_down_webhook_neither_fails_nor_blocks(
    make_sender: SenderFactory, queues: QueueServiceClient
) -> None:
    publisher = EventPublisher(
        queues,
        SystemClock(),
        source="https://keysteward.contoso.com",
        webhook_enabled=True,
        seals=SEALS,
    )
    started = time.monotonic()
    event = publisher.publish(events.CREDENTIAL_REVOKED, "pd/alice@contoso.com", {"app": "pd"})
    assert time.monotonic() - started < 2  # nothing waits on the receiver
    message = _next_delivery(queues)
    assert message == _sealed(event, 1)
    # the delivery worker, later, meets the dead receiver and only schedules a retry
    assert make_sender(_closed_url()).deliver(message) == RETRY_SCHEDULED


def test_the_queue_function_delivers_through_the_runtime(
    monkeypatch: pytest.MonkeyPatch,
    app_env: dict[str, str],
    receiver: WebhookReceiver,
    store: Store,
    key_ring: KeyRing,
) -> None:
    import azure.functions as func
    from azure.functions.decorators.queue import QueueTrigger
    from azure.functions.queue import QueueMessage

    host_message: Callable[..., func.QueueMessage] = QueueMessage  # unannotated constructor

    from shared import runtime
    from shared.config import settings

    env = {
        **app_env,
        "KEYSTEWARD_WEBHOOK_URL": receiver.url,
        "KEYSTEWARD_WEBHOOK_SECRET": SECRET.decode(),
        "KEYSTEWARD_WEBHOOK_RETRY_SECONDS": "0.5",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(settings, "_cached", None)
    monkeypatch.setattr(runtime, "_runtime", runtime.Runtime.build(settings.Settings.from_env(env)))
    from functions import webhooks as function_module

    app = func.FunctionApp()
    app.register_functions(function_module.bp)
    [function] = app.get_functions()
    trigger = function.get_trigger()
    assert isinstance(trigger, QueueTrigger)
    assert (trigger.queue_name, trigger.connection) == (WEBHOOK_QUEUE, "AzureWebJobsStorage")
    deliver = function.get_user_function()

    event = _event()
    body = json.dumps(_sealed(event, 1, MessageSeals(key_ring, SEAL_PURPOSE))).encode()
    deliver(host_message(id="m1", body=body, dequeue_count=1))
    assert [d.event for d in receiver.accepted] == [event]

    for junk in (b"not json", b"[1, 2]", b"\xff\xfe", b"[" * 40_000):
        deliver(host_message(id="m2", body=junk, dequeue_count=1))  # audited and dropped
    assert len(receiver.accepted) == 1
    reasons = [e.detail["reason"] for e in AuditLog(store, SystemClock()).read(STARTED)]
    assert reasons == ["not JSON", "not a JSON object", "not JSON", "not JSON"]


def test_the_documented_verification_snippet_accepts_real_deliveries(
    make_sender: SenderFactory, receiver: WebhookReceiver
) -> None:
    docs = (Path(__file__).resolve().parents[1] / "docs" / "events.md").read_text()
    [snippet] = [
        b for b in re.findall(r"```python\n(.*?)```", docs, re.S) if "def verify_webhook" in b
    ]
    namespace: dict[str, Any] = {}
    exec(snippet, namespace)  # noqa: S102 - our own documentation, run to keep it true
    verify_webhook = namespace["verify_webhook"]

    make_sender(receiver.url).deliver(_sealed(_event(), 1))
    [delivery] = receiver.accepted
    verify_webhook(SECRET, delivery.headers, delivery.body)
    with pytest.raises(ValueError, match="no valid signature"):
        verify_webhook(SECRET, delivery.headers, delivery.body + b" ")
    with pytest.raises(ValueError, match="no valid signature"):
        verify_webhook(b"x" * 32, delivery.headers, delivery.body)
    stale = {**delivery.headers, "webhook-timestamp": str(int(time.time()) - 301)}
    with pytest.raises(ValueError, match="replay window"):
        verify_webhook(SECRET, stale, delivery.body)

    [example] = [b for b in re.findall(r"```json\n(.*?)```", docs, re.S) if "specversion" in b]
    assert set(json.loads(example)) == set(_event()) | {"keystewardversion"}


# -- queue messages are not identities: only what Keysteward sealed is signed and sent ---------


def _forged(note: str) -> dict[str, Any]:
    return {**_event(), "id": str(uuid.uuid4()), "data": {"app": "pd", "note": note}}


def _forgeries(ours: KeyRing = RING) -> list[tuple[dict[str, Any], str]]:
    """Messages an attacker who may write to the queue can make, and why each is refused."""
    kid = ours.primary
    same_kid = MessageSeals(KeyRing([(kid, os.urandom(32))]), SEAL_PURPOSE)
    foreign = MessageSeals(KeyRing([("elsewhere", os.urandom(32))]), SEAL_PURPOSE)
    other_purpose = MessageSeals(ours, "revocation-requests")
    changed = _sealed(_forged("as sealed"), 1, MessageSeals(ours, SEAL_PURPOSE))
    changed["event"] = {**changed["event"], "data": {"app": "pd", "note": "changed after"}}
    return [
        ({"event": _forged("no seal"), "attempt": 1}, "unsealed"),
        ({"event": _forged("bad"), "attempt": 1, "seal": f"s1.{kid}.AAAA"}, "does not match"),
        ({"event": _forged("junk"), "attempt": 1, "seal": "not-a-seal"}, "malformed seal"),
        ({"event": _forged("typed"), "attempt": 1, "seal": 42}, "malformed seal"),
        (_sealed(_forged("same kid, other ring"), 1, same_kid), "does not match"),
        (_sealed(_forged("other ring"), 1, foreign), "key not in the ring"),
        (_sealed(_forged("other purpose"), 1, other_purpose), "does not match"),
        (changed, "does not match"),
        ({"attempt": 1, "seal": _sealed(_event(), 1, MessageSeals(ours, SEAL_PURPOSE))["seal"]},
         "no event"),
    ]  # fmt: skip


def _put_and_take(queues: QueueServiceClient, text: str) -> tuple[str, bytes]:
    """Put a message straight onto webhook-deliveries and take it as the host's trigger does."""
    client = _queue(queues, WEBHOOK_QUEUE)
    with contextlib.suppress(ResourceExistsError):
        client.create_queue()
    client.send_message(encode_message(text))
    message = wait_until(client.receive_message, timeout=10, what="the message")
    assert isinstance(message, QueueMessage)
    client.delete_message(message)
    return str(message.id), base64.b64decode(message.content, validate=True)


def test_forged_messages_on_the_queue_are_dropped_audited_and_never_sent(
    make_sender: SenderFactory,
    receiver: WebhookReceiver,
    queues: QueueServiceClient,
    store: Store,
) -> None:
    sender = make_sender(receiver.url)
    forgeries = _forgeries()
    ids = []
    for message, _ in forgeries:
        message_id, raw = _put_and_take(queues, json.dumps(message))
        ids.append(message_id)
        assert sender.receive(raw, message_id) == DROPPED
    assert receiver.accepted == receiver.rejected == receiver.failed == []
    assert _count(_queue(queues, WEBHOOK_QUEUE)) == 0  # no retry of a forgery
    assert _count(_queue(queues, POISON_QUEUE)) == 0

    rows = AuditLog(store, SystemClock()).read(STARTED)
    assert [r.subject for r in rows] == [f"message:{i}" for i in ids]
    for row, (message, why) in zip(rows, forgeries, strict=True):
        assert (row.actor, row.action, row.outcome) == (ACTOR, "webhook.dropped", "failure")
        assert why in str(row.detail["reason"])
        assert row.detail.get("event_id") == message.get("event", {}).get("id")

    genuine = _event()
    message_id, raw = _put_and_take(queues, json.dumps(_sealed(genuine)))
    assert sender.receive(raw, message_id) == DELIVERED
    assert [d.event for d in receiver.accepted] == [genuine]


def test_a_message_sealed_under_the_previous_key_of_a_rotated_ring_still_verifies(
    make_sender: SenderFactory, receiver: WebhookReceiver, queues: QueueServiceClient
) -> None:
    old, new = ("old", os.urandom(32)), ("new", os.urandom(32))
    before = EventPublisher(
        queues, SystemClock(), "https://keysteward.contoso.com", True,
        seals=MessageSeals(KeyRing([old]), SEAL_PURPOSE),
    )  # fmt: skip
    event = before.publish(events.CONNECTION_CREATED, "pd/alice@contoso.com", {"app": "pd"})
    queued = _next_delivery(queues)
    assert str(queued["seal"]).startswith("s1.old.")

    rotated = MessageSeals(KeyRing([new, old]), SEAL_PURPOSE)
    receiver.fail_next(1)
    assert make_sender(receiver.url, seals=rotated).deliver(queued) == RETRY_SCHEDULED
    retry = _next_delivery(queues)
    assert str(retry["seal"]).startswith("s1.new.")  # re-sealed under the ring's first key
    assert make_sender(receiver.url, seals=rotated).deliver(retry) == DELIVERED
    assert [d.event for d in receiver.accepted] == [event]

    # Once the old key has left the ring, what it sealed is no longer Keysteward's.
    without_old = MessageSeals(KeyRing([new]), SEAL_PURPOSE)
    assert make_sender(receiver.url, seals=without_old).deliver(queued) == DROPPED
    assert len(receiver.accepted) == 1


def _settings(secret: str) -> Settings:
    return Settings.from_env({
        "AzureWebJobsStorage": "UseDevelopmentStorage=true",
        "KEYSTEWARD_ENCRYPTION_KEYS": f"k1:{base64.b64encode(os.urandom(32)).decode()}",
        "KEYSTEWARD_PUBLIC_URL": "https://keysteward.contoso.com",
        "KEYSTEWARD_WEBHOOK_URL": "https://hooks.contoso.com/keysteward",
        "KEYSTEWARD_WEBHOOK_SECRET": secret,
    })  # fmt: skip


def test_a_whsec_secret_signs_what_a_standard_webhooks_receiver_verifies(
    make_sender: SenderFactory,
) -> None:
    # The Standard Webhooks test vector, with the secret in the form its libraries take.
    key = _settings("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").webhook_secret
    assert key is not None
    signature = sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

    raw = secrets.token_urlsafe(32)
    for configured, receiver_secret in (
        (whsec := "whsec_" + base64.b64encode(os.urandom(32)).decode(), whsec),
        (whsec.rstrip("="), whsec),  # unpadded, as the reference libraries accept it
        (raw, raw.encode()),  # a raw secret: its UTF-8 bytes are the key
    ):
        secret = _settings(configured).webhook_secret
        assert secret is not None
        receiver = WebhookReceiver(receiver_secret).start()
        try:
            assert make_sender(receiver.url, secret=secret).deliver(_sealed(_event())) == DELIVERED
            assert len(receiver.accepted) == 1
        finally:
            receiver.stop()


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("whsec_" + "*" * 40, "is not valid base64 after 'whsec_'"),
        ("whsec_" + base64.b64encode(b"s" * 16).decode(), "24 to 64 bytes"),
        ("whsec_" + base64.b64encode(b"s" * 65).decode(), "24 to 64 bytes"),
        ("whsec_", "24 to 64 bytes"),
        ("r" * 31, "at least 32 characters"),
    ],
)
def test_a_bad_webhook_secret_is_refused_in_one_line(secret: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message) as caught:
        _settings(secret)
    text = str(caught.value)
    assert "\n" not in text
    assert "KEYSTEWARD_WEBHOOK_SECRET" in text
    assert secret.removeprefix("whsec_") not in text or not secret.removeprefix("whsec_")


def test_on_a_running_host_only_sealed_events_reach_the_receiver(
    app_env: dict[str, str],
    tmp_path: Path,
    receiver: WebhookReceiver,
    queues: QueueServiceClient,
    store: Store,
) -> None:
    """The attack as an outsider makes it: forged messages put on the queue a devhost serves."""
    key_ring = store.ring  # the app's own ring (app_env's KEYSTEWARD_ENCRYPTION_KEYS)
    assert key_ring is not None
    env = {**app_env, "KEYSTEWARD_WEBHOOK_URL": receiver.url,
           "KEYSTEWARD_WEBHOOK_SECRET": SECRET.decode()}  # fmt: skip
    host = start_devhost(env, tmp_path / "devhost.log", args=("--no-timers",))
    try:
        client = _queue(queues, WEBHOOK_QUEUE)
        with contextlib.suppress(ResourceExistsError):
            client.create_queue()
        forgeries = _forgeries(key_ring)
        for message, _ in forgeries:
            client.send_message(encode_message(json.dumps(message)))
        publisher = EventPublisher(queues, SystemClock(), "https://keysteward.contoso.com", True,
                                   seals=MessageSeals(key_ring, SEAL_PURPOSE))  # fmt: skip
        genuine = publisher.publish(events.CREDENTIAL_ROTATED, "pat:p1", {"pat_id": "p1"})
        audit = AuditLog(store, SystemClock())

        def settled() -> bool:
            return bool(receiver.accepted) and len(audit.read(STARTED)) >= len(forgeries)

        wait_until(settled, timeout=30, what="the genuine delivery and every forgery audited")
    finally:
        host.stop()
    assert [d.event for d in receiver.accepted] == [genuine]
    assert receiver.rejected == receiver.failed == []
    rows = audit.read(STARTED)
    assert len(rows) == len(forgeries)
    assert {(r.actor, r.action) for r in rows} == {(ACTOR, "webhook.dropped")}
    reasons = {r.detail.get("event_id"): str(r.detail["reason"]) for r in rows}
    for message, why in forgeries:
        assert why in reasons[message.get("event", {}).get("id")]
