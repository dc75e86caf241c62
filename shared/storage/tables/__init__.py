"""Every table Keysteward keeps, one module per family of rows, data only: no behaviour that
needs a provider, the trail or a service. ``TABLES`` lists them all; ``SEALED`` (derived from the
field types) is what ``rekey`` re-seals."""

from __future__ import annotations

from shared.storage.entities import Entity, sealed_fields
from shared.storage.tables.api_keys import ApiKey
from shared.storage.tables.audit import AuditEntry
from shared.storage.tables.connect_links import ConnectLink, OAuthState, SessionExpiry
from shared.storage.tables.connections import Connection, UserConnection
from shared.storage.tables.expiry_warnings import ExpiryWarning
from shared.storage.tables.misconfigured_apps import MisconfiguredApp
from shared.storage.tables.pats import ManagedPat, PatOfConnection
from shared.storage.tables.revocations import Outcome, PendingRevocation, Revocation
from shared.storage.tables.schedule import ScheduleEntry
from shared.storage.tables.user_ids import UserId

TABLES: tuple[type[Entity], ...] = (
    ApiKey, AuditEntry, ConnectLink, OAuthState, Connection, UserConnection, ExpiryWarning,
    ManagedPat, PatOfConnection, Revocation, Outcome, PendingRevocation, ScheduleEntry,
    UserId, MisconfiguredApp, SessionExpiry,
)  # fmt: skip
# Rows with sealed fields, one class per table (Revocations' two row kinds share a table).
SEALED: tuple[type[Entity], ...] = tuple(cls for cls in TABLES if sealed_fields(cls))
