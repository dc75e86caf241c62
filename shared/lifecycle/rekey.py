"""Re-seal every stored secret under the key ring's primary key, so an older key can be removed.

Each row holding sealed fields is read and written back (ETag-conditional, again on conflict);
writing re-seals any value whose kid is not the primary. Rows already under the primary are left
untouched. Run it after putting a new key first in ``KEYSTEWARD_ENCRYPTION_KEYS``; once it reports
nothing left under old kids, the old key can go.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.foundation.errors import ConcurrencyConflict
from shared.storage.crypto import KeyRing, SealedSecret, kid_of
from shared.storage.entities import Entity
from shared.storage.retry import on_conflict
from shared.storage.store import Store
from shared.storage.tables import SEALED


@dataclass
class RekeyReport:
    checked: dict[str, int] = field(default_factory=dict)
    resealed: dict[str, int] = field(default_factory=dict)
    old_kids: dict[str, int] = field(default_factory=dict)  # what is still under another kid


def _stale(entity: Entity, ring: KeyRing) -> list[str]:
    return [
        kid_of(value.token)
        for value in vars(entity).values()
        if isinstance(value, SealedSecret) and kid_of(value.token) != ring.primary
    ]


def rekey(store: Store, *, dry_run: bool = False) -> RekeyReport:
    assert store.ring is not None
    ring = store.ring
    report = RekeyReport()
    for cls in SEALED:
        name = cls.TABLE
        report.checked[name] = report.resealed[name] = 0
        for row in list(store.select(cls, "PartitionKey ne @none", {"none": ""})):
            report.checked[name] += 1
            if dry_run:
                for kid in _stale(row, ring):
                    report.old_kids[kid] = report.old_kids.get(kid, 0) + 1
            elif _reseal(store, row, ring):
                report.resealed[name] += 1
    return report


def _reseal(store: Store, row: Entity, ring: KeyRing) -> bool:
    """Write the row back if a value is sealed under an old key (writing re-seals it); a row
    changed meanwhile is read again, so no concurrent write is lost."""
    rows = [row]

    def attempt() -> bool:
        entity = rows[-1]
        if not _stale(entity, ring):
            return False
        try:
            store.save(entity)
        except ConcurrencyConflict:
            found = store.read(type(entity), *entity.keys())
            if found is None:
                return False  # deleted meanwhile: nothing left to re-seal
            rows.append(found)
            raise
        return True

    return on_conflict(attempt, what=f"{row.TABLE} row being re-sealed")
