"""Apps the provider refuses outright (a client-level refusal: ``shared.providers.refusals``).

The first refusal marks the app misconfigured with a conditional insert, so the event
(``keysteward.app.misconfigured``) and the audit entry go out once however many connections and
instances meet it at the same moment. Nothing about the app's connections changes for it: they
stay active and back off. The next successful refresh or token exchange for the app clears the
mark (audited ``app.recovered``). ``GET /api/health`` and ``./keysteward status`` list the marks.
"""

from __future__ import annotations

import logging
import threading
import time

from shared.foundation.clock import Clock
from shared.foundation.errors import (
    AlreadyExists,
    ConcurrencyConflict,
    ProviderError,
    StoreError,
)
from shared.storage.store import Store
from shared.storage.tables.audit import AuditOutcome
from shared.storage.tables.misconfigured_apps import MISCONFIGURED_PARTITION, MisconfiguredApp
from shared.trail.audit import AuditLog
from shared.trail.events import APP_MISCONFIGURED, EventPublisher

log = logging.getLogger("keysteward.apps")

# How long a process trusts its own look at an app's mark: a success then clears a mark another
# instance set within this time, and every refresh does not cost a storage read to find none.
RECHECK_SECONDS = 60.0


class AppHealth:
    def __init__(self, store: Store, audit: AuditLog, events: EventPublisher, clock: Clock) -> None:
        self._store = store
        self._audit = audit
        self._events = events
        self._clock = clock
        self._unmarked: dict[str, float] = {}  # app -> when this process last found no mark
        self._lock = threading.Lock()

    def refused(self, app_id: str, exc: ProviderError, *, actor: str) -> None:
        """The provider refused the app itself: mark it, once."""
        mark = MisconfiguredApp(app=app_id, error=exc.oauth_error, since=self._clock.now(),
                                provider_code=exc.provider_code)  # fmt: skip
        with self._lock:
            self._unmarked.pop(app_id, None)
        try:
            self._store.create(mark)
        except AlreadyExists:
            return  # marked already (by us or another instance): no second event
        data = {"app": app_id, "error": exc.oauth_error, "provider_code": exc.provider_code}
        log.error("the provider refused app %s itself (%s%s): fix its registration or secret",
                  app_id, exc.oauth_error,
                  f", {exc.provider_code}" if exc.provider_code else "")  # fmt: skip
        self._events.publish(APP_MISCONFIGURED, f"app:{app_id}", data)
        self._audit.record(actor, "app.misconfigured", f"app:{app_id}",
                           outcome=AuditOutcome.FAILURE, detail=data)  # fmt: skip

    def working(self, app_id: str, *, actor: str) -> None:
        """The provider accepted the app again: clear its mark, if it has one (one point read, at
        most every ``RECHECK_SECONDS`` per app and process). A storage failure here is logged,
        never the caller's: the token it got is good."""
        now = time.monotonic()
        with self._lock:
            if now - self._unmarked.get(app_id, -RECHECK_SECONDS) < RECHECK_SECONDS:
                return
        try:
            mark = self._store.read(MisconfiguredApp, MISCONFIGURED_PARTITION, app_id)
            removed = mark is not None and self._store.remove(mark)
        except ConcurrencyConflict:
            return  # marked again meanwhile: the newer mark stands until the next success
        except StoreError as exc:
            log.warning("could not clear the misconfigured mark of %s (%s)", app_id, exc.error)
            return
        with self._lock:
            self._unmarked[app_id] = now
        if mark is not None and removed:
            detail = {"error": mark.error, "provider_code": mark.provider_code}
            self._audit.record(actor, "app.recovered", f"app:{app_id}", detail=detail)

    def misconfigured(self) -> list[MisconfiguredApp]:
        return list(self._store.entities_in(MisconfiguredApp, MISCONFIGURED_PARTITION))
