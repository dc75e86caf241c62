from __future__ import annotations

import base64
import json
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue import QueueClient, QueueMessage, QueueServiceClient

from shared.foundation.clock import Clock, FixedClock, SystemClock
from shared.foundation.errors import WebhookVerificationError
from shared.trail import events
from shared.trail.events import WEBHOOK_QUEUE, EventPublisher
from shared.trail.webhooks import (
    CONTENT_TYPE,
    DEAD_LETTERED,
    DELIVERED,
    MAX_BACKOFF_SECONDS,
    POISON_QUEUE,
    RETRY_SCHEDULED,
    WebhookSender,
    sign,
    verify,
)
from tests.peers.processes import free_port, wait_until
from tests.peers.receiver import WebhookReceiver

SECRET = secrets.token_urlsafe(32).encode()
SenderFactory = Callable[..., WebhookSender]


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
def make_sender(queues: QueueServiceClient, session: requests.Session) -> SenderFactory:
    def make(
        url: str, *, max_attempts: int = 4, base: float = 0.5, clock: Clock | None = None
    ) -> WebhookSender:
        return WebhookSender(
            url=url,
            secret=SECRET,
            session=session,
            clock=clock or SystemClock(),
            queues=queues,
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
    assert make_sender(receiver.url).deliver({"event": event, "attempt": 1}) == DELIVERED
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
        assert make_sender(other.url).deliver({"event": _event(), "attempt": 1}) == RETRY_SCHEDULED
        assert other.accepted == []
        assert [d.reason for d in other.rejected] == [
            "no valid v1 signature for this body and timestamp"
        ]
    finally:
        other.stop()
    assert _count(_queue(queues, WEBHOOK_QUEUE)) == 1


def test_a_down_receiver_schedules_the_next_attempt_later_without_raising(
    make_sender: SenderFactory, queues: QueueServiceClient
) -> None:
    event = _event()
    sender = make_sender(_closed_url(), base=0.5)
    started = time.monotonic()
    assert sender.deliver({"event": event, "attempt": 1}) == RETRY_SCHEDULED
    returned = time.monotonic()
    assert returned - started < 5

    deliveries = _queue(queues, WEBHOOK_QUEUE)
    assert _count(deliveries) == 1  # queued...
    assert deliveries.peek_messages() == []  # ...but invisible for now
    assert _next_delivery(queues) == {"event": event, "attempt": 2}  # visible later
    assert time.monotonic() - returned >= 0.5
    assert _count(_queue(queues, POISON_QUEUE)) == 0


def test_exhausted_attempts_go_to_the_poison_queue(
    make_sender: SenderFactory, queues: QueueServiceClient, caplog: pytest.LogCaptureFixture
) -> None:
    event = _event()
    sender = make_sender(_closed_url(), max_attempts=3)
    caplog.set_level(logging.ERROR, logger="shared.trail.webhooks")
    assert sender.deliver({"event": event, "attempt": 3}) == DEAD_LETTERED
    assert _count(_queue(queues, WEBHOOK_QUEUE)) == 0
    [poisoned] = _queue(queues, POISON_QUEUE).peek_messages()
    assert _decode(poisoned) == {"event": event, "attempt": 3, "reason": "ConnectionError"}
    assert f"event {event['id']} ({event['type']})" in caplog.text
    assert "after 3 attempts" in caplog.text


def test_a_receiver_that_comes_back_gets_the_event_on_a_later_attempt(
    make_sender: SenderFactory, queues: QueueServiceClient
) -> None:
    port = free_port()
    event = _event()
    sender = make_sender(f"http://127.0.0.1:{port}/hooks/keysteward", base=0.5)
    assert sender.deliver({"event": event, "attempt": 1}) == RETRY_SCHEDULED

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
    assert sender.deliver({"event": _event(), "attempt": 1}) == RETRY_SCHEDULED
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
    assert sender.deliver({"event": _event(), "attempt": 1}) == RETRY_SCHEDULED
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


def test_malformed_messages_are_dead_lettered_not_retried(
    make_sender: SenderFactory, receiver: WebhookReceiver, queues: QueueServiceClient
) -> None:
    sender = make_sender(receiver.url)
    for message in ({"attempt": 1}, {"event": {"type": "x"}}, {"event": _event(), "attempt": 0}):
        assert sender.deliver(message) == DEAD_LETTERED
    assert receiver.accepted == []
    assert _count(_queue(queues, POISON_QUEUE)) == 3


def test_nothing_secret_is_logged(
    make_sender: SenderFactory, receiver: WebhookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = secrets.token_urlsafe(16)
    down = make_sender(f"{_closed_url()}?token={token}", max_attempts=2)
    down.deliver({"event": _event(), "attempt": 1})
    down.deliver({"event": _event(), "attempt": 2})
    receiver.fail_next(1)
    make_sender(receiver.url).deliver({"event": _event(), "attempt": 1})
    make_sender(receiver.url).deliver({"event": _event(), "attempt": 1})
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
        queues, SystemClock(), source="https://keysteward.contoso.com", webhook_enabled=True
    )
    started = time.monotonic()
    event = publisher.publish(events.CREDENTIAL_REVOKED, "pd/alice@contoso.com", {"app": "pd"})
    assert time.monotonic() - started < 2  # nothing waits on the receiver
    message = _next_delivery(queues)
    assert message == {"event": event, "attempt": 1}
    # the delivery worker, later, meets the dead receiver and only schedules a retry
    assert make_sender(_closed_url()).deliver(message) == RETRY_SCHEDULED


def test_the_queue_function_delivers_through_the_runtime(
    monkeypatch: pytest.MonkeyPatch,
    app_env: dict[str, str],
    receiver: WebhookReceiver,
    queues: QueueServiceClient,
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
    body = json.dumps({"event": event, "attempt": 1}).encode()
    deliver(host_message(id="m1", body=body, dequeue_count=1))
    assert [d.event for d in receiver.accepted] == [event]

    for junk in (b"not json", b"[1, 2]", b"\xff\xfe"):
        deliver(host_message(id="m2", body=junk, dequeue_count=1))  # logged and dropped
    assert len(receiver.accepted) == 1


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

    make_sender(receiver.url).deliver({"event": _event(), "attempt": 1})
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
