"""User ids as callers name them: checked once, at the edge, and resolved to one identity.

A user id is refused (never trimmed or normalised for the caller) when it starts or ends with
whitespace, holds a control or formatting character, or is not NFC: a silent fix at one entry
point and not another is how ``alice@x `` got a token that revoking ``alice@x `` did not reach.
Ids compare by ``inputs.fold``; every table stays keyed by the form first given, which
``UserIds`` registers on the first connect link and resolves every later spelling to.
"""

from __future__ import annotations

import logging
import threading
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from shared.foundation.clock import Clock
from shared.foundation.errors import AlreadyExists, ConcurrencyConflict, InputError
from shared.foundation.inputs import fold
from shared.foundation.redaction import looks_secret
from shared.storage.retry import on_conflict
from shared.storage.store import Row, Store
from shared.storage.tablekeys import encode_key
from shared.storage.tables.connections import UserConnection
from shared.storage.tables.pats import ManagedPat
from shared.storage.tables.user_ids import BACKFILLED, UserId

MAX_USER_ID = 256
log = logging.getLogger("keysteward.user_ids")


def check_user_id(user_id: object) -> str:
    if not isinstance(user_id, str) or not user_id.strip():
        raise InputError("'user_id' is required: the user's id at the provider or in your org")
    if len(user_id) > MAX_USER_ID:
        raise InputError(f"'user_id' is at most {MAX_USER_ID} characters")
    if user_id != user_id.strip():
        raise InputError(
            "'user_id' starts or ends with whitespace: send it without (ids are never trimmed "
            "for you, so that one user cannot become two)"
        )
    if not user_id.isprintable():
        raise InputError(
            "'user_id' holds a control or invisible formatting character (a line break, tab, "
            "non-breaking or zero-width space...): send the id without it"
        )
    if not unicodedata.is_normalized("NFC", user_id):
        raise InputError("'user_id' is not in Unicode NFC form: normalise it to NFC and send again")
    if "/" in user_id:
        raise InputError("'user_id' cannot contain '/': it could not be addressed in a URL path")
    if looks_secret(user_id):
        # The audit trail refuses secret-looking subjects: refused now, not as a 500 later.
        raise InputError("'user_id' looks like a credential (a token or key), not a user's id")
    encode_key(user_id)  # refused now, not after the user consented, if it cannot be a key
    return user_id


def _key(user_id: str) -> str:
    """The UserIds key of an id: its fold (a stored id from before the checks is cleaned first,
    so the backfill files ``alice@x `` where a caller's ``alice@x`` looks)."""
    return fold(unicodedata.normalize("NFC", user_id.strip()))


@dataclass
class BackfillReport:
    done_before: bool = False
    registered: int = 0
    already: int = 0
    collisions: list[dict[str, str]] = field(default_factory=list)  # {"kept", "shadowed"}
    respelled: list[str] = field(default_factory=list)  # reachable by their clean form only
    unreachable: list[str] = field(default_factory=list)  # no caller can name them

    def public(self) -> dict[str, Any]:
        return {
            "done_before": self.done_before, "registered": self.registered,
            "already_registered": self.already, "collisions": self.collisions,
            "respelled": self.respelled, "unreachable": self.unreachable,
        }  # fmt: skip


class UserIds:
    """Every spelling of a user id resolved to the one first given."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        # Found mappings only: a registration never changes, but a miss may be registered later.
        self._known: dict[str, str] = {}
        self._lock = threading.Lock()

    def resolve(self, user_id: object) -> str:
        """A caller's user id, checked, in the form first given (itself when unregistered)."""
        given = check_user_id(user_id)
        key = _key(given)
        with self._lock:
            known = self._known.get(key)
        if known is not None:
            return known
        row = self._store.read(UserId, key, "id")
        return given if row is None else self._remember(key, row.user_id)

    def register(self, user_id: object) -> str:
        """Resolve, registering the id as given when no spelling of it is known yet; of two
        concurrent first registrations ("Alice", "alice") both callers get the winner."""
        given = check_user_id(user_id)
        key = _key(given)
        with self._lock:
            known = self._known.get(key)
        if known is not None:
            return known
        row = self._store.read(UserId, key, "id")
        if row is not None:
            return self._remember(key, row.user_id)
        try:
            self._store.create(UserId(folded=key, user_id=given, created_at=self._clock.now()))
            return self._remember(key, given)
        except AlreadyExists:
            winner = self._store.read(UserId, key, "id")
            assert winner is not None  # registrations are never deleted
            return self._remember(key, winner.user_id)

    def forms(self, user_id: str) -> list[str]:
        """Every stored id that is this user: the registered one first, then ids the backfill
        found differing only by case (what revocation by user must reach too)."""
        row = self._store.read(UserId, _key(user_id), "id")
        if row is None:
            return [user_id]
        return list(dict.fromkeys([row.user_id, *row.shadowed, user_id]))

    def _remember(self, key: str, user_id: str) -> str:
        with self._lock:
            return self._known.setdefault(key, user_id)

    # -- the backfill of ids stored before UserIds existed -------------------------------------

    def backfill(self) -> BackfillReport:
        """Register every stored user id once; the marker row makes every later run one read.
        Ids differing only by case keep the first registered and are reported, never merged."""
        if self._store.get(UserId.TABLE, *BACKFILLED) is not None:
            return BackfillReport(done_before=True)
        report = BackfillReport()
        for stored in self._stored_ids():
            self._adopt(stored, report)
        for collision in report.collisions:
            log.warning("user ids: '%s' differs only by case from '%s', kept as its own stored "
                        "rows; revocation by user reaches both", collision["shadowed"],
                        collision["kept"])  # fmt: skip
        # Written last: a run killed half way runs again, and adopting an id twice changes nothing.
        marker = Row(*BACKFILLED, {"at": self._clock.now(), "registered": report.registered})
        self._store.upsert(UserId.TABLE, marker)
        return report

    def _stored_ids(self) -> Iterator[str]:
        seen: set[str] = set()
        everything = {"none": ""}
        rows = self._store.query(UserConnection.TABLE, "PartitionKey ne @none", everything,
                                 select=[])  # fmt: skip
        ids = (row.partition_key for row in rows)
        pats = self._store.query(ManagedPat.TABLE, "PartitionKey ne @none", everything,
                                 select=["user_id"])  # fmt: skip
        for user_id in (*ids, *(str(p.data.get("user_id") or "") for p in pats)):
            if user_id and user_id not in seen:
                seen.add(user_id)
                yield user_id

    def _adopt(self, stored: str, report: BackfillReport) -> None:
        try:
            check_user_id(stored)
        except InputError:
            try:
                check_user_id(unicodedata.normalize("NFC", stored.strip()))
            except InputError:
                report.unreachable.append(stored)
                return
            report.respelled.append(stored)
        key = _key(stored)

        def attempt() -> str | None:
            row = self._store.read(UserId, key, "id")
            if row is None:
                try:
                    self._store.create(UserId(folded=key, user_id=stored,
                                              created_at=self._clock.now()))  # fmt: skip
                except AlreadyExists:
                    raise ConcurrencyConflict("UserIds: registered meanwhile") from None
                return None
            if row.user_id != stored and stored not in row.shadowed:
                row.shadowed.append(stored)
                self._store.save(row)
            return row.user_id

        kept = on_conflict(attempt, what=f"the user id registration of '{stored}'")
        if kept is None:
            report.registered += 1
        elif kept == stored:
            report.already += 1
        else:
            report.collisions.append({"kept": kept, "shadowed": stored})
