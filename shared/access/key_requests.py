"""What a caller may ask of the API keys service, parsed and checked once: a new key
(``NewKey``) and a change to one (``KeyChange``). Built directly (the CLI, tests) or from a JSON
body with ``parse``; either way the values are validated on construction."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from shared.access import globs
from shared.foundation import inputs
from shared.foundation.errors import InputError

SCOPES = (
    "connections:read",
    "connections:write",
    "connections:revoke",
    "tokens:read",
    "pats:read",
    "pats:manage",
    "pats:read-secret",
    "keys:admin",
    "audit:read",
)
MAX_DAYS = 365
MAX_NAME = 100
MAX_OWNER = 200
MAX_RESOURCES = 50
_PRINTABLE = "printable text of at most %d characters"


@dataclass(frozen=True)
class NewKey:
    FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"name", "owner", "scopes", "resources", "expires_in_days"}
    )
    name: str
    scopes: list[str]
    resources: list[str]
    expires_in_days: int = MAX_DAYS
    owner: str = ""

    def __post_init__(self) -> None:
        fields = {"name": self.name, "scopes": self.scopes, "resources": self.resources,
                  "expires_in_days": self.expires_in_days, "owner": self.owner or None}  # fmt: skip
        object.__setattr__(self, "name", _name(fields))
        owner = inputs.optional_text(fields, "owner", limit=MAX_OWNER, hint=_PRINTABLE % MAX_OWNER)
        object.__setattr__(self, "owner", owner or "")
        object.__setattr__(self, "scopes", _scopes(fields))
        object.__setattr__(self, "resources", _resources(fields))
        inputs.whole(fields, "expires_in_days", low=1, high=MAX_DAYS)

    @classmethod
    def parse(cls, body: inputs.Fields) -> NewKey:
        inputs.only(body, cls.FIELDS)
        return cls(
            name=body.get("name"),  # type: ignore[arg-type]  # checked in __post_init__
            scopes=body.get("scopes"),  # type: ignore[arg-type]
            resources=body.get("resources"),  # type: ignore[arg-type]
            expires_in_days=body.get("expires_in_days", MAX_DAYS),
            owner=body.get("owner") or "",
        )


@dataclass(frozen=True)
class KeyChange:
    """The name and the resource globs; scopes are fixed for a key's life, as NuGet's."""

    FIELDS: ClassVar[frozenset[str]] = frozenset({"name", "resources"})
    name: str | None = None
    resources: list[str] | None = field(default=None)

    @classmethod
    def parse(cls, body: inputs.Fields) -> KeyChange:
        if "scopes" in body:
            raise InputError(
                "the scopes of a key cannot be changed: create a new key with the scopes you "
                "need and delete this one"
            )
        unknown = set(body) - cls.FIELDS
        if unknown:
            raise InputError(f"only 'name' and 'resources' can be changed, not {sorted(unknown)}")
        if not body:
            raise InputError("nothing to change: give 'name' and/or 'resources'")
        return cls(
            name=_name(body) if "name" in body else None,
            resources=_resources(body) if "resources" in body else None,
        )


def _name(fields: inputs.Fields) -> str:
    return inputs.text(
        fields, "name", limit=MAX_NAME, hint=f"printable text of at most {MAX_NAME} characters"
    )


def _scopes(fields: inputs.Fields) -> list[str]:
    scopes = inputs.listed(fields, "scopes", hint=", ".join(SCOPES))
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise InputError(f"unknown scope(s) {unknown}: use {', '.join(SCOPES)}")
    return sorted(scopes, key=SCOPES.index)


def _resources(fields: inputs.Fields) -> list[str]:
    value = fields.get("resources")
    if not isinstance(value, list) or not value:
        raise InputError("'resources' must be a non-empty list of globs such as '*' or 'app/*'")
    if len(value) > MAX_RESOURCES:
        raise InputError(f"at most {MAX_RESOURCES} resource globs")
    return list(dict.fromkeys(globs.validate(g) for g in value))
