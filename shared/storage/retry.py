"""The one conflict-retry discipline for read-modify-writes of a row.

Every read-modify-write reads the row, changes it and writes it back conditionally on the ETag it
read; another writer in between makes the write fail with ``ConcurrencyConflict``. ``on_conflict``
runs such an attempt again from a fresh read, a bounded number of times with a short jittered
back-off, and when the tries run out raises ``Contended`` (503 with Retry-After at the HTTP edge,
redelivery on a queue): never a silent fall-through. Emit audit rows and events after it returns,
so they only ever describe a write that happened.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from shared.foundation.errors import ConcurrencyConflict, Contended

T = TypeVar("T")

TRIES = 8
_FIRST_DELAY = 0.01
_MAX_DELAY = 0.2


def on_conflict(attempt: Callable[[], T], *, what: str, tries: int = TRIES) -> T:
    """``attempt()`` until it wins its race; after ``tries``, ``Contended`` naming ``what``."""
    delay = _FIRST_DELAY
    for tried in range(1, tries + 1):
        try:
            return attempt()
        except ConcurrencyConflict:
            if tried == tries:
                break
        time.sleep(delay * random.uniform(0.5, 1.5))  # noqa: S311 - spreading writers, not a secret
        delay = min(delay * 2, _MAX_DELAY)
    raise Contended(f"{what} kept changing under other writers; try again shortly")
