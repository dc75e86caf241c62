"""Queue triggers: poll a queue and run the function once per message, as the host does.

Following host.json ``extensions.queues``: up to ``batchSize`` messages are received at once and
processed concurrently; a new batch is fetched when no more than ``newBatchThreshold`` are still
running. An empty queue is polled again after 100 ms, doubling up to ``maxPollingInterval``.
A message whose function succeeded is deleted. One whose function failed is made visible again
after ``visibilityTimeout``, unless it has been dequeued ``maxDequeueCount`` times: then its
content, unchanged, goes to ``<queue>-poison`` and it is deleted. A message that is not valid in
``messageEncoding`` cannot be bound, so it goes to the poison queue without retries.

Messages are competed for, so several devhost processes on one storage account share the work
as instances of one app do.
"""

from __future__ import annotations

import logging
import threading
import time

from azure.storage.queue import QueueMessage

from devhost.bindings import decode_body, function_message, queue_argument
from devhost.connections import Connections
from devhost.hostjson import QueueOptions
from devhost.invoker import Invoker
from devhost.leases import Lease, LeaseKeeper
from devhost.loader import FunctionSpec

log = logging.getLogger("devhost")

MIN_POLLING_INTERVAL = 0.1


class QueueListener:
    def __init__(
        self,
        spec: FunctionSpec,
        connections: Connections,
        options: QueueOptions,
        invoker: Invoker,
        *,
        lease_seconds: int,
        stop: threading.Event,
    ) -> None:
        assert spec.queue is not None
        self._spec = spec
        self._queue = spec.queue
        self._connections = connections
        self._options = options
        self._invoker = invoker
        self._lease_seconds = lease_seconds
        self._stop = stop
        self._client = connections.queue(spec.connection, spec.queue)
        self._keeper = LeaseKeeper(self._client, lease_seconds, spec.queue)
        self._cond = threading.Condition()
        self._in_flight = 0
        self._thread = threading.Thread(target=self._poll, name=f"queue-{spec.name}", daemon=True)

    def start(self) -> None:
        self._keeper.start()
        self._thread.start()

    def wake(self) -> None:
        """Let a poll waiting for free slots see that ``stop`` was set."""
        with self._cond:
            self._cond.notify_all()

    def drain(self, timeout: float) -> None:
        """Wait up to ``timeout`` for running invocations, then give the rest back to the queue."""
        deadline = time.monotonic() + timeout
        self.wake()
        self._thread.join(timeout)
        with self._cond:
            self._cond.wait_for(lambda: self._in_flight == 0, max(deadline - time.monotonic(), 0.0))
        given_back = self._keeper.abandon_all()
        if given_back:
            log.warning("queue %s: gave %d unfinished message(s) back", self._queue, given_back)

    def _poll(self) -> None:
        delay = MIN_POLLING_INTERVAL
        failing = False
        threshold = self._options.new_batch_threshold
        while not self._stop.is_set():
            with self._cond:
                self._cond.wait_for(lambda: self._in_flight <= threshold or self._stop.is_set())
            if self._stop.is_set():
                return
            try:
                messages = self._receive()
            except Exception as exc:  # storage may come back; keep polling
                if not failing:
                    log.warning("queue %s: receive failed (%s); retrying", self._queue, exc)
                failing = True
                self._stop.wait(self._options.max_polling_interval)
                continue
            if failing:
                log.info("queue %s: receiving again", self._queue)
                failing = False
            if not messages:
                self._stop.wait(delay)
                delay = min(delay * 2, self._options.max_polling_interval)
                continue
            if self._stop.is_set():
                self._give_back(messages)
                return
            delay = MIN_POLLING_INTERVAL
            for message in messages:
                with self._cond:
                    self._in_flight += 1
                name = f"message-{message.id}"
                # One daemon thread per message (at most batchSize + newBatchThreshold at once)
                # rather than an executor, whose workers are joined at exit: a function that
                # never returns must not keep a stopping devhost alive.
                threading.Thread(
                    target=self._process, args=(message,), name=name, daemon=True
                ).start()

    def _receive(self) -> list[QueueMessage]:
        count = self._options.batch_size
        # Creates the queue if storage was down when the listener started.
        self._client = self._connections.queue(self._spec.connection, self._queue)
        pages = self._client.receive_messages(
            messages_per_page=count, max_messages=count, visibility_timeout=self._lease_seconds
        ).by_page()
        # One page is one receive call; iterating further would poll again.
        return list(next(pages, []))

    def _give_back(self, messages: list[QueueMessage]) -> None:
        for message in messages:
            try:
                self._client.update_message(
                    message.id, pop_receipt=message.pop_receipt, visibility_timeout=0
                )
            except Exception as exc:  # its lease running out gives it back too
                log.warning("queue %s: could not give %s back (%s)", self._queue, message.id, exc)

    def _process(self, message: QueueMessage) -> None:
        lease = self._keeper.hold(message)
        try:
            self._settle(message, lease)
        except Exception as exc:  # the message reappears after its lease
            log.warning(
                "queue %s: message %s could not be settled (%s)", self._queue, message.id, exc
            )
        finally:
            lease.end()
            self._keeper.forget(lease)
            with self._cond:
                self._in_flight -= 1
                self._cond.notify_all()

    def _settle(self, message: QueueMessage, lease: Lease) -> None:
        tries = message.dequeue_count or 1
        limit = self._options.max_dequeue_count
        if tries > limit:
            # A message that crashed its consumers before they could settle it.
            self._poison(message, lease.end(), f"dequeued {tries} times")
            return
        try:
            body = decode_body(message.content, self._options.message_encoding)
        except ValueError:
            encoding = self._options.message_encoding
            self._poison(message, lease.end(), f"not valid {encoding}, so it cannot be bound")
            return
        trigger = function_message(
            id=message.id,
            body=body,
            dequeue_count=tries,
            pop_receipt=message.pop_receipt,
            insertion_time=message.inserted_on,
            expiration_time=message.expires_on,
            time_next_visible=message.next_visible_on,
        )
        detail = f" {self._queue} {message.id} try {tries}"
        outcome = self._invoker.invoke(self._spec, queue_argument(self._spec, trigger), detail)
        receipt = lease.end()
        if receipt is None:
            return  # given back at shutdown; another consumer will run it again
        if outcome.ok:
            self._client.delete_message(message.id, receipt)
        elif tries >= limit:
            self._poison(message, receipt, f"failed {tries} times (maxDequeueCount {limit})")
        else:
            self._client.update_message(
                message.id,
                pop_receipt=receipt,
                visibility_timeout=self._options.visibility_timeout_seconds,
            )

    def _poison(self, message: QueueMessage, receipt: str | None, reason: str) -> None:
        if receipt is None:
            return
        poison = f"{self._queue}-poison"
        self._connections.queue(self._spec.connection, poison).send_message(message.content)
        self._client.delete_message(message.id, receipt)
        log.warning("queue %s: message %s moved to %s: %s", self._queue, message.id, poison, reason)
