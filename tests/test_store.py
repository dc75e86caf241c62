from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from azure.data.tables import TableServiceClient

from shared.foundation.errors import AlreadyExists, ConcurrencyConflict, InputError
from shared.storage.entities import Entity
from shared.storage.store import Row, Store
from shared.storage.tablekeys import encode_key


class Colour(enum.StrEnum):
    RED = "red"
    BLUE = "blue"


@dataclass
class Sample(Entity):
    TABLE = "Samples"
    PARTITION = "group"
    ROW = "name"
    group: str
    name: str
    count: int = 0
    huge: int = 0
    ratio: float = 0.0
    flag: bool = False
    when: datetime | None = None
    colour: Colour = Colour.RED
    tags: list[str] = field(default_factory=list)
    extra: dict[str, int] = field(default_factory=dict)
    note: str | None = None


def test_tables_are_created_on_first_use_and_clients_reused(
    store: Store, tables: TableServiceClient
) -> None:
    assert "Samples" not in [t.name for t in tables.list_tables()]
    store.create(Sample("g", "a"))
    assert "Samples" in [t.name for t in tables.list_tables()]
    assert store._table("Samples") is store._table("Samples")


def test_typed_entities_round_trip_every_field_type(store: Store) -> None:
    when = datetime(2026, 11, 22, 8, 30, 15, 123456, tzinfo=UTC)
    written = Sample(
        "g", "all", count=7, huge=2**53, ratio=0.25, flag=True, when=when, colour=Colour.BLUE,
        tags=["x", "y"], extra={"a": 1}, note="n",
    )  # fmt: skip
    store.create(written)
    read = store.read(Sample, "g", "all")
    assert read == written
    assert read is not None
    assert read.etag == written.etag
    assert read.when is not None
    assert read.when.tzinfo is not None


def test_none_fields_are_not_written_and_replace_drops_them(store: Store) -> None:
    store.create(Sample("g", "n", note="present"))
    entity = store.read(Sample, "g", "n")
    assert entity is not None
    entity.note = None
    store.save(entity)
    raw = store.get("Samples", "g", "n")
    assert raw is not None
    assert "note" not in raw.data


def test_insert_of_an_existing_row_is_already_exists(store: Store) -> None:
    store.create(Sample("g", "dup"))
    with pytest.raises(AlreadyExists):
        store.create(Sample("g", "dup"))


def test_a_stale_etag_is_a_concurrency_conflict(store: Store) -> None:
    store.create(Sample("g", "race"))
    first = store.read(Sample, "g", "race")
    second = store.read(Sample, "g", "race")
    assert first is not None
    assert second is not None
    first.count = 1
    store.save(first)
    second.count = 2
    with pytest.raises(ConcurrencyConflict):
        store.save(second)
    with pytest.raises(ConcurrencyConflict):
        store.remove(second)
    current = store.read(Sample, "g", "race")
    assert current is not None
    assert current.count == 1


def test_conditional_update_of_a_deleted_row_is_a_conflict(store: Store) -> None:
    entity = store.create(Sample("g", "gone"))
    assert store.delete("Samples", "g", "gone")
    with pytest.raises(ConcurrencyConflict):
        store.save(entity)


def test_delete_reports_whether_the_row_was_there(store: Store) -> None:
    store.create(Sample("g", "d"))
    assert store.delete("Samples", "g", "d") is True
    assert store.delete("Samples", "g", "d") is False
    assert store.read(Sample, "g", "d") is None


def test_merge_updates_only_the_given_properties(store: Store) -> None:
    written = store.insert("Raw", Row("p", "r", {"a": 1, "b": "two"}))
    assert written.etag is not None
    store.update("Raw", Row("p", "r", {"b": "three"}), etag=written.etag, merge=True)
    row = store.get("Raw", "p", "r")
    assert row is not None
    assert row.data == {"a": 1, "b": "three"}


def test_queries_take_values_only_as_parameters(store: Store) -> None:
    hostile = "x' or PartitionKey ne 'y"
    store.create(Sample("g", "plain"))
    store.create(Sample(hostile, "evil"))
    found = list(store.select(Sample, "PartitionKey eq @pk", {"pk": encode_key(hostile)}))
    assert [s.name for s in found] == ["evil"]
    assert list(store.select(Sample, "PartitionKey eq @pk", {"pk": hostile})) == []
    with pytest.raises(InputError, match="parameters"):
        list(store.query("Samples", "PartitionKey eq 'g'"))
    with pytest.raises(InputError, match="not used"):
        list(store.query("Samples", "PartitionKey eq @pk", {"pk": "g", "other": 1}))


def test_paging_walks_every_row_once_with_opaque_tokens(store: Store) -> None:
    for i in range(25):
        store.insert("Paged", Row("p", f"{i:03d}", {"i": i}))
    seen: list[int] = []
    token = None
    pages = 0
    while True:
        page = store.page("Paged", "PartitionKey eq @pk", {"pk": "p"}, page_size=10, token=token)
        seen += [row.data["i"] for row in page.rows]
        pages += 1
        token = page.next_token
        if token is None:
            break
    assert seen == list(range(25))
    assert pages == 3
    with pytest.raises(InputError, match="page token"):
        store.page("Paged", "PartitionKey eq @pk", {"pk": "p"}, token="not-a-token")


def test_partition_and_key_range_queries(store: Store) -> None:
    for day in ("20261120", "20261121", "20261122"):
        store.insert("Days", Row(day, "r", {}))
    assert [r.partition_key for r in store.partition("Days", "20261121")] == ["20261121"]
    in_range = [r.partition_key for r in store.key_range("Days", "20261121", "20261123")]
    assert in_range == ["20261121", "20261122"]


def test_reserved_property_names_are_refused(store: Store) -> None:
    with pytest.raises(InputError, match="reserved"):
        store.insert("Raw", Row("p", "r", {"PartitionKey": "other"}))
