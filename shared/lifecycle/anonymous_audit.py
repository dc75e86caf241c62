"""How a failed connect step is audited: a row each when it is about a real sign-in, a count when
anyone could have caused it.

The callback and the link URL answer anyone. A refusal that needs no state or link to exist (no
state, an unknown one, an unknown link), or that leaves its state unspent (a wrong browser, a
wrong app), is something anyone can send as fast as they like: a row each let 200 requests write
200 rows in 3.5 s. Those are counted, one row per app, cause and minute (``AuditLog.count``). A
refusal that spends its state (expired, replayed, a refused code, another account) keeps its own
row with its detail: there are only as many as there are sign-ins.
"""

from __future__ import annotations

from shared.foundation.errors import CallbackFailed
from shared.lifecycle.grant_checks import IDENTITY_MISMATCH
from shared.storage.tables.audit import AuditOutcome
from shared.trail.audit import AuditLog

ACTOR = "user:browser"
FAILED = "connection.connect_failed"
# Causes anyone can send as often as they like: they need nothing stored to exist, or they leave
# the state unspent (a wrong browser or app must not stop the right one from finishing), so one
# authorize URL fetched without a browser would otherwise buy a row per request for ten minutes.
ANONYMOUS = frozenset({"missing_state", "unknown_state", "unknown_link", "wrong_browser",
                       "wrong_app"})  # fmt: skip


class ConnectFailures:
    def __init__(self, audit: AuditLog) -> None:
        self._audit = audit

    def record(self, failed: CallbackFailed, subject: str) -> CallbackFailed:
        """Audit ``failed`` (about ``subject``, ``app/user`` or ``?`` for what is not known) and
        hand it back to be raised."""
        if failed.error in ANONYMOUS:
            detail = {"reason": failed.error}
            self._audit.count(ACTOR, FAILED, subject, AuditOutcome.FAILURE, detail)
            return failed
        action = "connect.identity_mismatch" if failed.error == IDENTITY_MISMATCH else FAILED
        detail = {"reason": failed.error, **failed.detail}
        self._audit.record(ACTOR, action, subject, outcome=AuditOutcome.FAILURE, detail=detail)
        return failed
