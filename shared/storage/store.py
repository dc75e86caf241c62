"""The one way into Table Storage.

Every read and write of Keysteward's state passes through ``Store``: it creates tables on first
use, encodes ids into keys (``tablekeys``), seals and opens secret fields (``crypto``), maps
storage errors onto the domain's (a stale ETag is ``ConcurrencyConflict``), and only ever filters
with parameters. Clients are created once and reused.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.data.tables import EntityProperty, TableClient, TableServiceClient, UpdateMode

from shared.foundation.errors import (
    AlreadyExists,
    ConcurrencyConflict,
    InputError,
    StorageUnavailable,
    StoreError,
)
from shared.storage import entities
from shared.storage.crypto import KeyRing
from shared.storage.entities import E, Entity
from shared.storage.tablekeys import decode_key, encode_key

_SYSTEM = ("PartitionKey", "RowKey", "Timestamp", "etag")


@dataclass
class Row:
    """One untyped row; keys are the ids as callers know them (encoded only inside the store)."""

    partition_key: str
    row_key: str
    data: dict[str, Any] = field(default_factory=dict)
    etag: str | None = None
    timestamp: datetime | None = None


@dataclass(frozen=True)
class Page:
    rows: list[Row]
    next_token: str | None


class Store:
    def __init__(self, service: TableServiceClient, ring: KeyRing | None = None) -> None:
        self._service = service
        self.ring = ring
        self._tables: dict[str, TableClient] = {}
        self._lock = threading.Lock()

    # -- rows -------------------------------------------------------------------------------

    def get(self, table: str, partition_key: str, row_key: str) -> Row | None:
        client = self._table(table)
        with _mapped():
            try:
                entity = client.get_entity(encode_key(partition_key), encode_key(row_key))
            except ResourceNotFoundError:
                return None
        return _row(entity)

    def insert(self, table: str, row: Row) -> Row:
        client = self._table(table)
        with _mapped():
            try:
                meta = client.create_entity(_entity(row))
            except ResourceExistsError:
                raise AlreadyExists(f"{table}: the row already exists") from None
        return _with_etag(row, meta)

    def upsert(self, table: str, row: Row, *, merge: bool = False) -> Row:
        client = self._table(table)
        mode = UpdateMode.MERGE if merge else UpdateMode.REPLACE
        with _mapped():
            meta = client.upsert_entity(_entity(row), mode=mode)
        return _with_etag(row, meta)

    def update(self, table: str, row: Row, *, etag: str, merge: bool = False) -> Row:
        """Write ``row`` only if it still has ``etag``; else ``ConcurrencyConflict``."""
        client = self._table(table)
        mode = UpdateMode.MERGE if merge else UpdateMode.REPLACE
        with _mapped():
            try:
                meta = client.update_entity(
                    _entity(row),
                    mode=mode,
                    etag=etag,
                    match_condition=MatchConditions.IfNotModified,
                )
            except (ResourceModifiedError, ResourceNotFoundError):
                raise ConcurrencyConflict(
                    f"{table}: the row changed or disappeared since it was read"
                ) from None
        return _with_etag(row, meta)

    def delete(
        self, table: str, partition_key: str, row_key: str, *, etag: str | None = None
    ) -> bool:
        """Delete a row (only if it still has ``etag``, when given). False if it was not there."""
        client = self._table(table)
        pk, rk = encode_key(partition_key), encode_key(row_key)
        with _mapped():
            try:
                if etag is None:
                    # Unconditional deletes of a missing row succeed silently; look first.
                    if self.get(table, partition_key, row_key) is None:
                        return False
                    client.delete_entity(pk, rk)
                else:
                    client.delete_entity(
                        pk, rk, etag=etag, match_condition=MatchConditions.IfNotModified
                    )
            except ResourceNotFoundError:
                return False
            except ResourceModifiedError:
                raise ConcurrencyConflict(f"{table}: the row changed since it was read") from None
        return True

    def query(
        self,
        table: str,
        query_filter: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        select: list[str] | None = None,
        page_size: int = 1000,
    ) -> Iterator[Row]:
        """Rows matching an OData filter whose values all come from ``parameters`` (``@name``).

        Key values in ``parameters`` must be encoded with ``tablekeys.encode_key``; ``partition``
        and ``key_range`` do that for you.
        """
        _check_filter(query_filter, parameters)
        client = self._table(table)
        with _mapped():
            pages = client.query_entities(
                query_filter,
                parameters=dict(parameters or {}),
                results_per_page=page_size,
                select=_select(select),
            )
            for entity in pages:
                yield _row(entity)

    def page(
        self,
        table: str,
        query_filter: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        page_size: int = 100,
        token: str | None = None,
        select: list[str] | None = None,
    ) -> Page:
        """One page of a query, with an opaque token for the next (None on the last page)."""
        _check_filter(query_filter, parameters)
        client = self._table(table)
        with _mapped():
            pager = client.query_entities(
                query_filter,
                parameters=dict(parameters or {}),
                results_per_page=page_size,
                select=_select(select),
            ).by_page(continuation_token=_decode_token(token))
            rows = [_row(entity) for entity in next(pager, [])]
        return Page(rows, _encode_token(pager.continuation_token))  # type: ignore[attr-defined]

    def partition(self, table: str, partition_key: str, **options: Any) -> Iterator[Row]:
        return self.query(
            table, "PartitionKey eq @pk", {"pk": encode_key(partition_key)}, **options
        )

    def key_range(self, table: str, low: str, high: str, **options: Any) -> Iterator[Row]:
        """Rows whose partition key lies in ``[low, high)`` (keys sort as encoded strings)."""
        return self.query(
            table,
            "PartitionKey ge @low and PartitionKey lt @high",
            {"low": encode_key(low), "high": encode_key(high)},
            **options,
        )

    # -- typed entities ---------------------------------------------------------------------

    def read(self, cls: type[E], partition_key: str, row_key: str) -> E | None:
        row = self.get(cls.TABLE, partition_key, row_key)
        return None if row is None else self._typed(cls, row)

    def create(self, entity: E) -> E:
        entity.etag = self.insert(entity.TABLE, self._untyped(entity)).etag
        return entity

    def save(self, entity: E) -> E:
        """Replace the row if it still has the entity's ETag (upsert when it has none)."""
        row = self._untyped(entity)
        if entity.etag is None:
            entity.etag = self.upsert(entity.TABLE, row).etag
        else:
            entity.etag = self.update(entity.TABLE, row, etag=entity.etag).etag
        return entity

    def remove(self, entity: Entity) -> bool:
        return self.delete(entity.TABLE, *entity.keys(), etag=entity.etag)

    def select(
        self,
        cls: type[E],
        query_filter: str,
        parameters: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Iterator[E]:
        for row in self.query(cls.TABLE, query_filter, parameters, **options):
            yield self._typed(cls, row)

    def entities_in(self, cls: type[E], partition_key: str) -> Iterator[E]:
        for row in self.partition(cls.TABLE, partition_key):
            yield self._typed(cls, row)

    def _typed(self, cls: type[E], row: Row) -> E:
        entity = entities.from_properties(
            cls, (row.partition_key, row.row_key), row.data, self.ring
        )
        entity.etag = row.etag
        return entity

    def _untyped(self, entity: Entity) -> Row:
        pk, rk = entity.keys()
        return Row(pk, rk, entities.to_properties(entity, self.ring, (pk, rk)))

    # -- plumbing ---------------------------------------------------------------------------

    def ping(self) -> None:
        """One cheap round trip to the table service (health checks)."""
        with _mapped():
            next(iter(self._service.list_tables(results_per_page=1).by_page()), None)

    def _table(self, name: str) -> TableClient:
        known = self._tables.get(name)
        if known is not None:
            return known
        with self._lock:
            if name not in self._tables:
                with _mapped():
                    self._tables[name] = self._service.create_table_if_not_exists(name)
            return self._tables[name]


def _entity(row: Row) -> dict[str, Any]:
    for name in row.data:
        if name in _SYSTEM:
            raise InputError(f"'{name}' is a reserved property name")
    return {
        "PartitionKey": encode_key(row.partition_key),
        "RowKey": encode_key(row.row_key),
        **row.data,
    }


def _row(entity: Any) -> Row:
    data = {
        k: v.value if isinstance(v, EntityProperty) else v
        for k, v in entity.items()
        if k not in _SYSTEM
    }
    return Row(
        decode_key(entity["PartitionKey"]),
        decode_key(entity["RowKey"]),
        data,
        etag=entity.metadata.get("etag"),
        timestamp=entity.metadata.get("timestamp"),
    )


def _with_etag(row: Row, meta: Mapping[str, Any]) -> Row:
    return Row(row.partition_key, row.row_key, row.data, etag=meta.get("etag"))


def _select(select: list[str] | None) -> list[str] | None:
    return None if select is None else ["PartitionKey", "RowKey", *select]


def _check_filter(query_filter: str, parameters: Mapping[str, Any] | None) -> None:
    # Values belong in parameters: a quote in the filter means one was formatted in.
    if "'" in query_filter or '"' in query_filter:
        raise InputError("OData filters take their values as @parameters, never inline")
    for name in parameters or {}:
        if f"@{name}" not in query_filter:
            raise InputError(f"filter parameter '{name}' is not used in the filter")


def _encode_token(token: Any) -> str | None:
    if not token:
        return None
    return base64.urlsafe_b64encode(json.dumps(token).encode()).decode("ascii")


def _decode_token(token: str | None) -> Any:
    if token is None:
        return None
    try:
        value = json.loads(base64.urlsafe_b64decode(token.encode("ascii")))
    except (ValueError, UnicodeError):
        raise InputError("malformed page token") from None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise InputError("malformed page token")
    return value


@contextmanager
def _mapped() -> Iterator[None]:
    """Storage errors become domain errors that say what happened, not how the SDK said it."""
    try:
        yield
    except (StoreError, InputError):
        raise
    except (ServiceRequestError, ServiceResponseError) as exc:
        raise StorageUnavailable("Table Storage did not answer") from exc
    except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError):
        raise
    except HttpResponseError as exc:
        if (exc.status_code or 0) >= 500:
            raise StorageUnavailable(f"Table Storage failed ({exc.status_code})") from exc
        if exc.status_code == 400:
            raise InputError(f"Table Storage refused the request: {_reason(exc)}") from exc
        raise StoreError(f"Table Storage error: {_reason(exc)}") from exc
    except AzureError as exc:
        raise StoreError(f"Table Storage error: {_reason(exc)}") from exc


def _reason(exc: AzureError) -> str:
    code = getattr(exc, "error_code", None)
    return str(code) if code else type(exc).__name__
