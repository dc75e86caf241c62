"""Scoped API keys, on NuGet's model: scopes on resource globs, for a limited time.

A key reads ``ks_<id>_<secret><check>``: a prefix secret scanners can spot, a 12-character id that
names the row, 43 base62 characters of secret (256 bits) and a 6-character CRC32 checksum that
lets a scanner tell a real key from noise offline. Only a SHA-256 of the secret is stored (the
secret is random, so no slow hash is needed); it is compared in constant time. The full key is
returned once, at creation or regeneration.

Verified keys are cached per process for ``CACHE_SECONDS``: a deletion or regeneration takes
effect at once in the process that made it and within that bound everywhere else.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.access import globs
from shared.access.key_requests import KeyChange, NewKey
from shared.foundation.clock import Clock
from shared.foundation.errors import (
    Forbidden,
    NotFound,
    StoreError,
    Unauthorized,
)
from shared.storage.retry import on_conflict
from shared.storage.store import Row, Store
from shared.storage.tables.api_keys import KEYS_PARTITION as _PARTITION
from shared.storage.tables.api_keys import ApiKey
from shared.storage.tables.audit import AuditEntry
from shared.trail.audit import AuditLog

PREFIX = "ks_"
CACHE_SECONDS = 10
_LAST_USED_EVERY = timedelta(minutes=5)
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
_FORMAT = re.compile(r"^ks_([a-z2-7]{12})_([0-9A-Za-z]{43})([0-9A-Za-z]{6})$")
_UNAUTHORIZED = "a valid API key is required: Authorization: Bearer ks_..."


@dataclass(frozen=True)
class Principal:
    """Who is calling: a verified key's id, scopes and resource globs."""

    key_id: str
    name: str
    scopes: frozenset[str]
    resources: tuple[str, ...]

    @property
    def actor(self) -> str:
        return f"key:{self.key_id}"

    def require(self, scope: str) -> None:
        if scope not in self.scopes:
            raise Forbidden(f"this API key does not have the scope '{scope}'")

    def require_resource(self, scope: str, app: str, user_id: str) -> None:
        self.require(scope)
        if not globs.covers(self.resources, app, user_id):
            raise Forbidden(f"this API key's resources do not cover '{app}/{user_id}'")

    def covers(self, app: str, user_id: str) -> bool:
        return globs.covers(self.resources, app, user_id)

    def holds(self, scopes: list[str] | frozenset[str], resources: list[str]) -> bool:
        """Whether a key with these scopes and globs grants nothing this one does not: the only
        keys this one may create, see, change, regenerate or delete."""
        return self.scopes >= frozenset(scopes) and all(
            globs.within(glob, self.resources) for glob in resources
        )

    def sees(self, entry: AuditEntry) -> bool:
        """Audit rows about resources inside this key's globs; rows about no one resource (key
        management, whole revocations) only for a ``*`` key."""
        if globs.within("*", self.resources):
            return True
        resource = entry.resource
        return resource is not None and self.covers(*resource)

    def require_holds(self, scopes: list[str], resources: list[str]) -> None:
        if not self.scopes >= frozenset(scopes):
            extra = sorted(frozenset(scopes) - self.scopes)
            raise Forbidden(f"this API key cannot grant scopes it does not hold: {extra}")
        wider = [glob for glob in resources if not globs.within(glob, self.resources)]
        if wider:
            raise Forbidden(
                f"this API key cannot grant resources outside its own globs: {wider} "
                f"(it holds {list(self.resources)})"
            )


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def _checksum(body: str) -> str:
    value = zlib.crc32(body.encode("ascii"))
    digits = []
    for _ in range(6):
        value, digit = divmod(value, 62)
        digits.append(_BASE62[digit])
    return "".join(reversed(digits))


def _new_secret() -> str:
    return "".join(secrets.choice(_BASE62) for _ in range(43))


def _format(key_id: str, secret: str) -> str:
    body = f"{PREFIX}{key_id}_{secret}"
    return body + _checksum(body)


def parse(raw: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed key with a valid checksum, else None."""
    match = _FORMAT.match(raw)
    if not match:
        return None
    key_id, secret, check = match.groups()
    if not hmac.compare_digest(_checksum(f"{PREFIX}{key_id}_{secret}"), check):
        return None
    return key_id, secret


class ApiKeys:
    def __init__(
        self, store: Store, audit: AuditLog, clock: Clock, cache_seconds: float = CACHE_SECONDS
    ) -> None:
        self._store = store
        self._audit = audit
        self._clock = clock
        self._cache_for = timedelta(seconds=cache_seconds)
        self._cache: OrderedDict[str, tuple[ApiKey, datetime]] = OrderedDict()
        self._lock = threading.Lock()

    # -- management -------------------------------------------------------------------------

    def create(
        self, request: NewKey, *, actor: str, by: Principal | None = None
    ) -> tuple[ApiKey, str]:
        """``by``: the key asking, which can grant only what it holds (None: the CLI, which has
        the storage account and so everything)."""
        if by is not None:
            by.require_holds(request.scopes, request.resources)
        now = self._clock.now()
        key_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(12))
        secret = _new_secret()
        key = ApiKey(
            id=key_id,
            name=request.name,
            owner=request.owner,
            scopes=request.scopes,
            resources=request.resources,
            created_at=now,
            expires_at=now + timedelta(days=request.expires_in_days),
            secret_hash=_hash(secret),
            created_by=actor,
        )
        self._store.create(key)
        self._audit.record(
            actor, "apikey.created", f"key:{key_id}",
            detail={"name": key.name, "scopes": key.scopes, "resources": key.resources,
                    "expires_at": key.expires_at.isoformat()},
        )  # fmt: skip
        return key, _format(key_id, secret)

    def list(self, by: Principal | None = None) -> list[ApiKey]:
        keys = self._store.entities_in(ApiKey, _PARTITION)
        seen = [k for k in keys if by is None or by.holds(k.scopes, k.resources)]
        return sorted(seen, key=lambda k: k.created_at)

    def get(self, key_id: str, by: Principal | None = None) -> ApiKey:
        key = self._store.read(ApiKey, _PARTITION, key_id) if _valid_id(key_id) else None
        # A key beyond the caller's answers as an unknown one: its existence is not theirs to know.
        if key is None or (by is not None and not by.holds(key.scopes, key.resources)):
            raise NotFound(f"no API key with id '{key_id}'")
        return key

    def regenerate(
        self, key_id: str, *, actor: str, by: Principal | None = None
    ) -> tuple[ApiKey, str]:
        """A new secret; scopes, resources and expiry stay. The old secret stops working."""
        secret = _new_secret()

        def change(key: ApiKey) -> None:
            key.secret_hash = _hash(secret)
            key.regenerated_at = self._clock.now()

        key = self._change(key_id, change, by)
        self._audit.record(actor, "apikey.regenerated", f"key:{key_id}")
        return key, _format(key_id, secret)

    def update(
        self, key_id: str, request: KeyChange, *, actor: str, by: Principal | None = None
    ) -> ApiKey:
        """Change the name and resource globs; scopes are fixed for a key's life, as NuGet's."""
        name, resources = request.name, request.resources
        if by is not None and resources:
            by.require_holds([], resources)

        def change(key: ApiKey) -> None:
            key.name = name or key.name
            key.resources = resources or key.resources

        key = self._change(key_id, change, by)
        self._audit.record(
            actor, "apikey.updated", f"key:{key_id}",
            detail={"name": key.name, "resources": key.resources},
        )  # fmt: skip
        return key

    def _change(
        self, key_id: str, change: Callable[[ApiKey], None], by: Principal | None
    ) -> ApiKey:
        """Read, change, write conditionally; again if a concurrent use touched the row."""

        def attempt() -> ApiKey:
            key = self.get(key_id, by)
            change(key)
            return self._store.save(key)  # a conflict: last_used_at was written meanwhile

        key = on_conflict(attempt, what=f"API key '{key_id}'")
        self._forget(key_id)
        return key

    def delete(self, key_id: str, *, actor: str, by: Principal | None = None) -> None:
        key = self.get(key_id, by)
        self._store.delete(ApiKey.TABLE, _PARTITION, key_id)  # unconditional: a use may touch it
        self._forget(key_id)
        self._audit.record(actor, "apikey.deleted", f"key:{key_id}", detail={"name": key.name})

    # -- verification -----------------------------------------------------------------------

    def verify(self, authorization: str | None) -> Principal:
        """The principal behind an ``Authorization: Bearer`` header, or ``Unauthorized``."""
        scheme, _, raw = (authorization or "").strip().partition(" ")
        parsed = parse(raw.strip()) if scheme.lower() == "bearer" else None
        if parsed is None:
            raise Unauthorized(_UNAUTHORIZED)
        key_id, secret = parsed
        now = self._clock.now()
        key = self._lookup(key_id, now)
        expected = key.secret_hash if key else _hash("")
        if not hmac.compare_digest(expected, _hash(secret)) or key is None:
            raise Unauthorized(_UNAUTHORIZED)
        if key.expires_at <= now:
            raise Unauthorized(_UNAUTHORIZED)
        self._touch(key, now)
        return Principal(key.id, key.name, frozenset(key.scopes), tuple(key.resources))

    def _lookup(self, key_id: str, now: datetime) -> ApiKey | None:
        with self._lock:
            cached = self._cache.get(key_id)
            if cached and now - cached[1] < self._cache_for:
                self._cache.move_to_end(key_id)
                return cached[0]
        key = self._store.read(ApiKey, _PARTITION, key_id)
        if key is not None:
            with self._lock:
                self._cache[key_id] = (key, now)
                while len(self._cache) > 10_000:
                    self._cache.popitem(last=False)
        return key

    def _forget(self, key_id: str) -> None:
        with self._lock:
            self._cache.pop(key_id, None)

    def _touch(self, key: ApiKey, now: datetime) -> None:
        # Written at most every few minutes: a write per request would double the cost of a call.
        if key.last_used_at and now - key.last_used_at < _LAST_USED_EVERY:
            return
        key.last_used_at = now
        try:
            self._store.update(
                ApiKey.TABLE, Row(_PARTITION, key.id, {"last_used_at": now}), etag="*", merge=True
            )
        except StoreError:
            return  # bookkeeping only: never fail a call for it


def _valid_id(key_id: str) -> bool:
    return bool(re.fullmatch(r"[a-z2-7]{12}", key_id))
