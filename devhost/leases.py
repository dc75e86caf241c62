"""Keeping received queue messages invisible while their functions run.

A message is received invisible for the lease (``--queue-lease-seconds``) and renewed every half
lease, so a long invocation keeps it while a killed devhost's messages reappear once the lease
runs out. At shutdown, messages still being processed are given back at once (made visible), so
another instance picks them up without waiting for the lease.
"""

from __future__ import annotations

import logging
import math
import threading
import time

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue import QueueClient, QueueMessage

log = logging.getLogger("devhost")


class Lease:
    def __init__(self, message: QueueMessage, seconds: float) -> None:
        self.id: str = message.id
        self.pop_receipt: str | None = message.pop_receipt
        self.renew_at = time.monotonic() + seconds / 2
        self.lock = threading.Lock()
        self.state = "held"  # then "ended" by its processor, or "abandoned" at shutdown

    def end(self) -> str | None:
        """Stop renewing; the pop receipt to settle the message with, or None if given back."""
        with self.lock:
            if self.state != "held":
                return None
            self.state = "ended"
            return self.pop_receipt


class LeaseKeeper:
    def __init__(self, client: QueueClient, seconds: int, name: str) -> None:
        self._client = client
        self._seconds = seconds
        self._leases: set[Lease] = set()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"lease-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def hold(self, message: QueueMessage) -> Lease:
        lease = Lease(message, self._seconds)
        with self._cond:
            self._leases.add(lease)
            self._cond.notify()
        return lease

    def forget(self, lease: Lease) -> None:
        with self._cond:
            self._leases.discard(lease)

    def abandon_all(self) -> int:
        """Give every held message back to the queue and stop renewing; how many there were."""
        with self._cond:
            self._closed = True
            leases = list(self._leases)
            self._cond.notify()
        given_back = 0
        for lease in leases:
            with lease.lock:
                if lease.state != "held":
                    continue
                lease.state = "abandoned"
                given_back += 1
                try:
                    self._client.update_message(
                        lease.id, pop_receipt=lease.pop_receipt, visibility_timeout=0
                    )
                except Exception as exc:  # the lease running out gives it back too
                    log.warning("message %s: could not give it back (%s)", lease.id, exc)
        return given_back

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._closed:
                    return
                now = time.monotonic()
                due = [lease for lease in self._leases if lease.renew_at <= now]
                if not due:
                    soonest = min(
                        (lease.renew_at for lease in self._leases if lease.renew_at < math.inf),
                        default=None,
                    )
                    self._cond.wait(None if soonest is None else soonest - now)
                    continue
            for lease in due:
                self._renew(lease)

    def _renew(self, lease: Lease) -> None:
        with lease.lock:
            if lease.state != "held":
                return
            try:
                receipt = self._client.update_message(
                    lease.id, pop_receipt=lease.pop_receipt, visibility_timeout=self._seconds
                )
            except ResourceNotFoundError:
                # The lease ran out and another consumer took the message: nothing left to renew.
                log.warning("message %s: lost its lease; it may be processed twice", lease.id)
                lease.renew_at = math.inf
                return
            except Exception as exc:  # keep trying while the function runs
                log.warning("message %s: lease renewal failed (%s)", lease.id, exc)
                lease.renew_at = time.monotonic() + self._seconds / 4
                return
            lease.pop_receipt = receipt.pop_receipt
            lease.renew_at = time.monotonic() + self._seconds / 2
