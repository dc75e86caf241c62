"""Lifecycle events: CloudEvents 1.0 (structured JSON) on the ``lifecycle-events`` queue.

When a webhook is configured, each event is also queued for delivery on ``webhook-deliveries``
(``{"event": <event>, "attempt": 1, "seal": <seal>}``); ``trail.webhooks`` signs and POSTs it from
there, so a slow or dead receiver never delays the action that raised the event. The seal
(``storage.crypto.MessageSeals``, under the key ring) is what makes a delivery genuine: whoever can
write to the queue cannot make one, so the sender signs only what this publisher sealed. Messages
are encoded as the Functions host expects (``storage.clients.encode_message``). Event data goes
through the audit trail's redaction: nothing secret leaves in an event.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Mapping
from datetime import UTC

from azure.core.exceptions import AzureError, ResourceExistsError
from azure.storage.queue import QueueClient, QueueServiceClient

from shared.foundation.clock import Clock
from shared.foundation.redaction import check_identifier, redact
from shared.foundation.version import VERSION
from shared.storage.clients import encode_message
from shared.storage.crypto import MessageSeals

log = logging.getLogger(__name__)

LIFECYCLE_QUEUE = "lifecycle-events"
WEBHOOK_QUEUE = "webhook-deliveries"
SEAL_PURPOSE = WEBHOOK_QUEUE  # the HKDF purpose of delivery seals

CONNECTION_CREATED = "keysteward.connection.created"
CONNECTION_RECOVERED = "keysteward.connection.recovered"
CONNECTION_RECONNECTED = "keysteward.connection.reconnected"
CONNECTION_NEEDS_REAUTH = "keysteward.connection.needs_reauth"
APP_MISCONFIGURED = "keysteward.app.misconfigured"
CREDENTIAL_ROTATED = "keysteward.credential.rotated"
CREDENTIAL_REVOKED = "keysteward.credential.revoked"
CREDENTIAL_EXPIRING = "keysteward.credential.expiring"
APIKEY_EXPIRING = "keysteward.apikey.expiring"
REVOCATION_COMPLETED = "keysteward.revocation.completed"
# A managed PAT's validTo or scope changed at Azure DevOps; a rotation an org policy refused.
PAT_CHANGED = "keysteward.pat.changed"
PAT_ROTATION_REFUSED = "keysteward.pat.rotation_refused"
EVENT_TYPES = (
    CONNECTION_CREATED,
    CONNECTION_RECOVERED,
    CONNECTION_RECONNECTED,
    CONNECTION_NEEDS_REAUTH,
    APP_MISCONFIGURED,
    CREDENTIAL_ROTATED,
    CREDENTIAL_REVOKED,
    CREDENTIAL_EXPIRING,
    APIKEY_EXPIRING,
    REVOCATION_COMPLETED,
    PAT_CHANGED,
    PAT_ROTATION_REFUSED,
)

_TYPE = re.compile(r"keysteward(\.[a-z][a-z0-9_]*){2,}")
# A queue message holds 64 KiB; base64 costs a third and the delivery wrapper a little more.
MAX_EVENT_BYTES = 45_000
_PUT_TRIES = 3
_PUT_BACKOFF = 0.2  # seconds, doubled per try: a blip is ridden out, an outage costs ~0.6 s
# Bounds for one queue call (our loop does the retrying), so an unreachable storage account
# cannot hold the caller for long; the storage SDK's own policy would wait for minutes.
_RETRIES = 0
_CONNECT_TIMEOUT = 5
_READ_TIMEOUT = 10


class EventPublisher:
    def __init__(
        self,
        queues: QueueServiceClient,
        clock: Clock,
        source: str,
        webhook_enabled: bool,
        seals: MessageSeals | None = None,
    ) -> None:
        if webhook_enabled and seals is None:
            raise ValueError("webhook deliveries must be sealed: pass the key ring's seals")
        self._seals = seals
        self._queues = queues
        self._clock = clock
        self.source = source
        self.webhook_enabled = webhook_enabled
        self._ready: set[str] = set()
        self._lock = threading.Lock()

    def publish(self, type: str, subject: str, data: Mapping[str, object]) -> dict[str, object]:
        """Build a CloudEvent, queue it (and its webhook delivery), and return it.

        An invalid type or subject, or an oversized event, is a programming error
        (``ValueError``). Queue failures are not the caller's: each put is tried a few times
        within about a second, then logged (event id and type only) and dropped, and the event is
        returned all the same -- an event must never fail or undo the action it reports.
        """
        if not _TYPE.fullmatch(type):
            raise ValueError(f"event type '{type}' is not 'keysteward.<noun>.<verb>'")
        check_identifier("event subject", subject)
        event: dict[str, object] = {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": self.source,
            "type": type,
            "time": rfc3339(self._clock),
            "subject": subject,
            "datacontenttype": "application/json",
            "keystewardversion": VERSION,
            "data": redact(data),
        }
        body = json.dumps(event, separators=(",", ":"))
        if len(body.encode("utf-8")) > MAX_EVENT_BYTES:
            raise ValueError(f"event {type} is larger than {MAX_EVENT_BYTES} bytes of JSON")
        self._put(LIFECYCLE_QUEUE, body, event)
        if self._seals is not None and self.webhook_enabled:
            seal = self._seals.seal(body.encode("utf-8"))
            delivery = json.dumps(
                {"event": event, "attempt": 1, "seal": seal}, separators=(",", ":")
            )
            self._put(WEBHOOK_QUEUE, delivery, event)
        return event

    def _put(self, queue: str, text: str, event: Mapping[str, object]) -> None:
        content = encode_message(text)
        delay = _PUT_BACKOFF
        for attempt in range(1, _PUT_TRIES + 1):
            try:
                self._client(queue).send_message(
                    content,
                    retry_total=_RETRIES,
                    connection_timeout=_CONNECT_TIMEOUT,
                    read_timeout=_READ_TIMEOUT,
                )
                return
            except AzureError as exc:
                if attempt == _PUT_TRIES:
                    log.error(
                        "event %s (%s) was not queued on %s: %s",
                        event["id"],
                        event["type"],
                        queue,
                        type(exc).__name__,
                    )
                    return
            time.sleep(delay)
            delay *= 2

    def _client(self, queue: str) -> QueueClient:
        client = self._queues.get_queue_client(queue)
        if queue not in self._ready:
            with self._lock:
                if queue not in self._ready:
                    with contextlib.suppress(ResourceExistsError):
                        client.create_queue(
                            retry_total=_RETRIES,
                            connection_timeout=_CONNECT_TIMEOUT,
                            read_timeout=_READ_TIMEOUT,
                        )
                    self._ready.add(queue)
        return client


def rfc3339(clock: Clock) -> str:
    """The clock's time as RFC 3339 UTC with microseconds and a ``Z``."""
    return clock.now().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
