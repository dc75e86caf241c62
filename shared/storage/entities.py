"""Typed rows: dataclasses that say which of their fields are the partition and row keys.

The store turns them into Table entities and back. Field types map to Table properties:
``str``, ``int`` (Int64 when it does not fit Int32), ``float``, ``bool``, ``datetime`` (UTC),
``Secret`` (sealed with the key ring, bound to the row and field), enums (their value), and
lists/dicts (JSON text). ``None`` is not written, so a replaced row loses the property.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import types
import typing
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

from azure.data.tables import EdmType, EntityProperty

from shared.foundation.errors import CryptoError
from shared.foundation.secret import Secret
from shared.storage.crypto import KeyRing, SealedSecret, binding

_INT32 = range(-(2**31), 2**31)


class Entity:
    """Base of typed rows. Subclasses are dataclasses and set TABLE, PARTITION and ROW."""

    TABLE: ClassVar[str]
    PARTITION: ClassVar[str]  # the field holding the partition key
    ROW: ClassVar[str]  # the field holding the row key
    etag: str | None = None  # set by the store on read and write; not a dataclass field

    def keys(self) -> tuple[str, str]:
        return str(getattr(self, self.PARTITION)), str(getattr(self, self.ROW))


E = TypeVar("E", bound=Entity)


_FIELDS: dict[type, tuple[tuple[str, Any], ...]] = {}


def _fields(cls: type[Entity]) -> tuple[tuple[str, Any], ...]:
    """(name, type) of each non-key field; computed once per class."""
    known = _FIELDS.get(cls)
    if known is None:
        hints = typing.get_type_hints(cls)
        known = tuple(
            (f.name, hints[f.name])
            for f in dataclasses.fields(cls)  # type: ignore[arg-type]
            if f.name not in (cls.PARTITION, cls.ROW)
        )
        _FIELDS[cls] = known
    return known


def _base(annotation: Any) -> Any:
    """``X | None`` -> ``X``; ``list[str]`` -> ``list``."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = args[0]
    return typing.get_origin(annotation) or annotation


def sealed_fields(cls: type[Entity]) -> tuple[str, ...]:
    """The fields of ``cls`` that are sealed with the key ring (typed ``Secret``)."""
    return tuple(name for name, annotation in _fields(cls) if _base(annotation) is Secret)


def to_properties(entity: Entity, ring: KeyRing | None, keys: tuple[str, str]) -> dict[str, Any]:
    props: dict[str, Any] = {}
    for name, annotation in _fields(type(entity)):
        value = getattr(entity, name)
        if value is None:
            continue
        kind = _base(annotation)
        if kind is Secret:
            props[name] = _seal(value, ring, binding(entity.TABLE, *keys, name))
        elif isinstance(value, enum.Enum):
            props[name] = value.value
        elif kind in (list, dict, tuple):
            props[name] = json.dumps(value, separators=(",", ":"), sort_keys=True)
        elif kind is int and not isinstance(value, bool) and value not in _INT32:
            props[name] = EntityProperty(value, EdmType.INT64)
        elif kind is datetime:
            props[name] = value.astimezone(UTC)
        else:
            props[name] = value
    return props


def from_properties(
    cls: type[E], keys: tuple[str, str], props: dict[str, Any], ring: KeyRing | None
) -> E:
    values: dict[str, Any] = {cls.PARTITION: keys[0], cls.ROW: keys[1]}
    for name, annotation in _fields(cls):
        if name not in props or props[name] is None:
            continue
        value = props[name]
        kind = _base(annotation)
        if kind is Secret:
            if ring is None:
                raise CryptoError(f"{cls.TABLE}.{name} is sealed and this store has no key ring")
            value = SealedSecret(value, binding(cls.TABLE, *keys, name), ring)
        elif kind in (list, dict, tuple):
            value = kind(json.loads(value)) if kind is tuple else json.loads(value)
        elif isinstance(kind, type) and issubclass(kind, enum.Enum):
            value = kind(value)
        elif isinstance(value, EntityProperty):
            value = value.value
        elif kind is datetime:
            value = datetime.fromtimestamp(value.timestamp(), UTC)
        values[name] = value
    return cls(**values)


def _seal(value: Secret, ring: KeyRing | None, aad: bytes) -> str:
    if not isinstance(value, Secret):
        raise TypeError("secret fields take Secret values")
    if ring is None:
        raise CryptoError("cannot store a secret: this store has no key ring")
    if isinstance(value, SealedSecret) and value.reusable_for(aad):
        return value.token
    return ring.seal(value.reveal().encode("utf-8"), aad)
