"""Signed webhook delivery, with a durable backoff kept on the queue itself.

Signing follows Standard Webhooks (https://www.standardwebhooks.com): ``webhook-id`` (the event
id, the same on every attempt, so receivers can drop duplicates), ``webhook-timestamp`` (unix
seconds at send time) and ``webhook-signature: v1,<base64(HMAC-SHA256(secret,
"{id}.{timestamp}.{body}"))>``. The HMAC key is the secret's bytes: what follows ``whsec_``,
base64-decoded, for a Standard Webhooks secret, else the UTF-8 bytes of the raw secret
(``config.settings``).

A queue message is not an identity: anyone who may write to ``webhook-deliveries`` could put an
event there. Only a message whose seal (``storage.crypto.MessageSeals``, made by
``trail.events``) verifies over its event is signed and sent; any other is dropped and audited
(``webhook.dropped``), never retried.

One ``webhook-deliveries`` message is one attempt. A failed attempt does not raise: it queues the
next one with a visibility timeout of ``retry_base * 2**(attempt-1)`` seconds (capped at an hour,
+/-20% jitter), so the backoff survives restarts and scale-out and a dead receiver causes no retry
storm; the host then deletes the handled message. After ``max_attempts`` the message goes to
``webhook-deliveries-poison`` and stays there for an operator. Delivery is at least once.
Nothing here logs the secret, a signature or the URL (which may carry a token of its own).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import math
import random
import threading
from collections.abc import Mapping

import requests
from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueClient, QueueServiceClient

from shared.foundation.clock import Clock
from shared.foundation.errors import WebhookVerificationError
from shared.foundation.version import VERSION
from shared.storage.clients import encode_message
from shared.storage.crypto import MessageSeals
from shared.storage.tables.audit import AuditOutcome
from shared.trail.audit import AuditLog
from shared.trail.events import WEBHOOK_QUEUE

log = logging.getLogger(__name__)

POISON_QUEUE = f"{WEBHOOK_QUEUE}-poison"
CONTENT_TYPE = "application/cloudevents+json"
TOLERANCE_SECONDS = 300
MAX_BACKOFF_SECONDS = 3600
TIMEOUT = (5.0, 10.0)  # connect, read: a slow receiver costs one attempt, not the worker

DELIVERED = "delivered"
RETRY_SCHEDULED = "retry_scheduled"
DEAD_LETTERED = "dead_lettered"
DROPPED = "dropped"  # not sealed by Keysteward: audited, never delivered
ACTOR = "system:webhooks"


def sign(secret: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value for one message."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def verify(
    secret: bytes,
    headers: Mapping[str, str],
    body: bytes,
    now: int,
    tolerance: int = TOLERANCE_SECONDS,
) -> None:
    """Raise ``WebhookVerificationError`` unless ``body`` carries a valid, fresh signature.

    ``headers`` are matched case-insensitively; ``webhook-signature`` may list several
    space-separated signatures (a receiver rotating secrets), one valid one suffices.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    msg_id = lowered.get("webhook-id", "")
    raw_timestamp = lowered.get("webhook-timestamp", "")
    signatures = lowered.get("webhook-signature", "")
    if not msg_id or not raw_timestamp or not signatures:
        raise WebhookVerificationError(
            "missing webhook-id, webhook-timestamp or webhook-signature header"
        )
    try:
        timestamp = int(raw_timestamp)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not unix seconds") from None
    if abs(now - timestamp) > tolerance:
        raise WebhookVerificationError(
            f"webhook-timestamp is outside the {tolerance} s replay window"
        )
    expected = sign(secret, msg_id, timestamp, body).encode()
    valid = False
    for candidate in signatures.split():
        # Compare every candidate, in constant time, rather than stopping at the first match.
        valid |= hmac.compare_digest(candidate.encode("utf-8", "replace"), expected)
    if not valid:
        raise WebhookVerificationError("no valid v1 signature for this body and timestamp")


class WebhookSender:
    def __init__(
        self,
        *,
        url: str,
        secret: bytes,
        session: requests.Session,
        clock: Clock,
        queues: QueueServiceClient,
        seals: MessageSeals,
        audit: AuditLog,
        retry_base_seconds: float,
        max_attempts: int,
    ) -> None:
        if not secret:
            raise ValueError("a webhook secret is required")
        if retry_base_seconds <= 0 or max_attempts < 1:
            raise ValueError("retry_base_seconds must be positive and max_attempts at least 1")
        self._url = url
        self._secret = secret
        self._session = session
        self._clock = clock
        self._queues = queues
        self._seals = seals
        self._audit = audit
        self.retry_base_seconds = retry_base_seconds
        self.max_attempts = max_attempts
        self._ready: set[str] = set()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"WebhookSender(max_attempts={self.max_attempts})"

    def receive(self, raw: bytes, message_id: str) -> str:
        """Handle a ``webhook-deliveries`` message as the queue trigger gets it (JSON bytes)."""
        try:
            message = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return self._drop(None, "not JSON", message_id)
        if not isinstance(message, dict):
            return self._drop(None, "not a JSON object", message_id)
        return self.deliver(message, message_id)

    def deliver(self, message: Mapping[str, object], message_id: str | None = None) -> str:
        """Make one delivery attempt for a ``webhook-deliveries`` message.

        Returns ``DELIVERED``, ``RETRY_SCHEDULED``, ``DEAD_LETTERED`` or ``DROPPED`` (no valid
        seal: audited, nothing sent); a failed POST never raises. Only a failure to queue the next
        attempt or to audit a drop raises, so that the host retries this message instead.
        """
        claimed = message.get("event")
        if not isinstance(claimed, dict):
            return self._drop(message, "no event", message_id)
        # The exact bytes the publisher sealed: JSON parsed and dumped again is byte-identical.
        body = json.dumps(claimed, separators=(",", ":")).encode()
        problem = self._seals.problem(message.get("seal"), body)
        if problem is not None:
            return self._drop(message, problem, message_id)
        event, attempt = _parse(message)
        if event is None:
            log.error("webhook delivery message is malformed; moved to %s", POISON_QUEUE)
            self._send(POISON_QUEUE, {"message": dict(message), "reason": "malformed"})
            return DEAD_LETTERED
        return self._attempt(event, attempt, body)

    def _attempt(self, event: Mapping[str, object], attempt: int, body: bytes) -> str:
        """POST a genuine event; on failure queue the next attempt, or park it when none is left."""
        seal = self._seals.seal(body)  # under the ring's first key, should it have rotated
        event_id, event_type = event["id"], event.get("type")
        failure = self._post(str(event_id), body)
        if failure is None:
            log.info("webhook delivered: event %s (%s), attempt %d", event_id, event_type, attempt)
            return DELIVERED
        if attempt >= self.max_attempts:
            log.error(
                "webhook delivery abandoned after %d attempts: event %s (%s), last failure %s; "
                "the message is in %s",
                attempt,
                event_id,
                event_type,
                failure,
                POISON_QUEUE,
            )
            poisoned = {"event": event, "attempt": attempt, "reason": failure, "seal": seal}
            self._send(POISON_QUEUE, poisoned)
            return DEAD_LETTERED
        delay = self.backoff(attempt)
        log.warning(
            "webhook delivery failed: event %s (%s), attempt %d of %d, %s; next in %d s",
            event_id,
            event_type,
            attempt,
            self.max_attempts,
            failure,
            delay,
        )
        retry = {"event": event, "attempt": attempt + 1, "seal": seal}
        self._send(WEBHOOK_QUEUE, retry, delay=delay)
        return RETRY_SCHEDULED

    def _drop(
        self, message: Mapping[str, object] | None, reason: str, message_id: str | None
    ) -> str:
        """Audit and forget a message Keysteward did not seal (its claims are bounded, redacted)."""
        detail: dict[str, object] = {"reason": reason, "queue": WEBHOOK_QUEUE}
        claimed = message.get("event") if message is not None else None
        if isinstance(claimed, dict):
            for name in ("id", "type"):
                if isinstance(claimed.get(name), str):
                    detail[f"event_{name}"] = claimed[name][:100]
        seal = message.get("seal") if message is not None else None
        if isinstance(seal, str) and seal.count(".") == 2:
            detail["kid"] = seal.split(".")[1][:32]
        subject = f"message:{message_id}" if message_id else f"queue:{WEBHOOK_QUEUE}"
        self._audit.record(
            ACTOR, "webhook.dropped", subject, outcome=AuditOutcome.FAILURE, detail=detail
        )
        log.error("%s message %s dropped, not delivered: %s", WEBHOOK_QUEUE, message_id, reason)
        return DROPPED

    def backoff(self, attempt: int) -> int:
        """Whole seconds to wait after failed ``attempt`` (queue visibility is in seconds)."""
        nominal = min(self.retry_base_seconds * 2.0 ** min(attempt - 1, 32), MAX_BACKOFF_SECONDS)
        jittered = nominal * random.uniform(0.8, 1.2)  # noqa: S311 - spreading load, not a secret
        return max(1, min(MAX_BACKOFF_SECONDS, math.ceil(jittered)))

    def _post(self, event_id: str, body: bytes) -> str | None:
        """POST one attempt, signed now; None when delivered, else why not (no secrets)."""
        timestamp = int(self._clock.now().timestamp())
        headers = {
            "Content-Type": CONTENT_TYPE,
            "User-Agent": f"Keysteward/{VERSION}",
            "webhook-id": event_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self._secret, event_id, timestamp, body),
        }
        try:
            response = self._session.post(
                self._url, data=body, headers=headers, timeout=TIMEOUT, allow_redirects=False
            )
        except requests.RequestException as exc:
            return type(exc).__name__
        response.close()
        if 200 <= response.status_code < 300:
            return None
        return f"HTTP {response.status_code}"

    def _send(self, queue: str, payload: Mapping[str, object], delay: int | None = None) -> None:
        text = json.dumps(payload, separators=(",", ":"), default=str)
        # Poisoned deliveries never expire: they wait for an operator.
        ttl = -1 if queue == POISON_QUEUE else None
        self._client(queue).send_message(
            encode_message(text), visibility_timeout=delay, time_to_live=ttl
        )

    def _client(self, queue: str) -> QueueClient:
        client = self._queues.get_queue_client(queue)
        if queue not in self._ready:
            with self._lock:
                if queue not in self._ready:
                    with contextlib.suppress(ResourceExistsError):
                        client.create_queue()
                    self._ready.add(queue)
        return client


def _parse(message: Mapping[str, object]) -> tuple[dict[str, object] | None, int]:
    event = message.get("event")
    attempt = message.get("attempt", 1)
    if (
        not isinstance(event, dict)
        or not isinstance(event.get("id"), str)
        or not event["id"]
        or not isinstance(attempt, int)
        or isinstance(attempt, bool)
        or attempt < 1
    ):
        return None, 0
    return event, attempt
