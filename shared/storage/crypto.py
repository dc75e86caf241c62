"""AES-256-GCM under a key ring, with the row and field a ciphertext belongs to as associated data.

A sealed value reads ``v1.<kid>.<base64url(nonce || ciphertext || tag)>``. The kid says which key
of the ring opens it; the first key of the ring seals. The associated data binds a ciphertext to
``(table, partition key, row key, field)``, so one copied into another row or field fails to open.
Messages name kids, never keys.

``MessageSeals`` authenticates messages that travel outside the tables (queue messages): an
HMAC-SHA256 tag ``s1.<kid>.<base64url(tag)>`` under a key derived from a ring key with HKDF, so
no key is ever used both as an AES key and as an HMAC key, and a tag made for one purpose never
verifies for another. The kid lets a rotated ring still verify what an older key sealed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from shared.foundation.errors import DecryptionError
from shared.foundation.secret import Secret

_VERSION = "v1"
_NONCE_BYTES = 12


def binding(table: str, partition_key: str, row_key: str, field: str) -> bytes:
    """The associated data that ties a ciphertext to its place in the store."""
    return "\x1f".join((_VERSION, table, partition_key, row_key, field)).encode("utf-8")


class KeyRing:
    def __init__(self, keys: Sequence[tuple[str, bytes]]) -> None:
        if not keys:
            raise ValueError("a key ring needs at least one key")
        self._ciphers = {kid: AESGCM(key) for kid, key in keys}
        self._keys = dict(keys)
        self.primary = keys[0][0]
        self.kids = tuple(kid for kid, _ in keys)

    def __repr__(self) -> str:
        return f"KeyRing(kids={self.kids!r})"

    def seal(self, plaintext: bytes, aad: bytes) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = nonce + self._ciphers[self.primary].encrypt(nonce, plaintext, aad)
        return f"{_VERSION}.{self.primary}.{base64.urlsafe_b64encode(sealed).decode('ascii')}"

    def open(self, token: str, aad: bytes) -> bytes:
        kid = kid_of(token)
        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise DecryptionError(
                f"ciphertext was sealed with key '{kid}', which is not in the key ring "
                f"(kids: {', '.join(self.kids)})"
            )
        try:
            raw = base64.urlsafe_b64decode(token.split(".", 2)[2].encode("ascii"))
            return cipher.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], aad)
        except (InvalidTag, ValueError):
            raise DecryptionError(
                f"ciphertext under key '{kid}' did not authenticate: the key with that kid is "
                "not the one that sealed it, or the value was altered or moved to another row"
            ) from None

    def needs_reseal(self, token: str) -> bool:
        return kid_of(token) != self.primary

    def derive(self, purpose: str) -> dict[str, bytes]:
        """A 256-bit key per kid for ``purpose``, by HKDF-SHA256 (RFC 5869) from the ring's keys."""
        info = f"keysteward/{purpose}".encode()
        return {
            kid: HKDF(algorithm=SHA256(), length=32, salt=None, info=info).derive(key)
            for kid, key in self._keys.items()
        }


def kid_of(token: str) -> str:
    parts = token.split(".", 2)
    if len(parts) != 3 or parts[0] != _VERSION:
        raise DecryptionError("not a Keysteward ciphertext")
    return parts[1]


class SealedSecret(Secret):
    """A secret read from the store: opened only when revealed, written back sealed as it was."""

    __slots__ = ("_aad", "_opened", "_ring", "token")

    def __init__(self, token: str, aad: bytes, ring: KeyRing) -> None:
        super().__init__("")
        self.token = token
        self._aad = aad
        self._ring = ring
        self._opened = False

    def reveal(self) -> str:
        if not self._opened:
            self._value = self._ring.open(self.token, self._aad).decode("utf-8")
            self._opened = True
        return self._value

    def reusable_for(self, aad: bytes) -> bool:
        """Whether the stored ciphertext can be written back unchanged at ``aad``."""
        return aad == self._aad and not self._ring.needs_reseal(self.token)


_SEAL_VERSION = "s1"


class MessageSeals:
    """HMAC-SHA256 seals for one kind of message, keyed by the ring (the first key seals)."""

    def __init__(self, ring: KeyRing, purpose: str) -> None:
        self._keys = ring.derive(purpose)
        self._primary = ring.primary

    def __repr__(self) -> str:
        return f"MessageSeals(kids={tuple(self._keys)!r})"

    def seal(self, content: bytes) -> str:
        tag = hmac.new(self._keys[self._primary], content, hashlib.sha256).digest()
        return f"{_SEAL_VERSION}.{self._primary}.{base64.urlsafe_b64encode(tag).decode('ascii')}"

    def problem(self, seal: object, content: bytes) -> str | None:
        """None when ``seal`` is a valid seal over ``content``, else why not (no key material)."""
        if seal is None:
            return "unsealed"
        parts = seal.split(".") if isinstance(seal, str) else []
        if len(parts) != 3 or parts[0] != _SEAL_VERSION:
            return "malformed seal"
        key = self._keys.get(parts[1])
        if key is None:
            return "sealed under a key not in the ring"
        expected = hmac.new(key, content, hashlib.sha256).digest()
        try:
            given = base64.urlsafe_b64decode(parts[2].encode("ascii"))
        except (ValueError, UnicodeEncodeError):
            return "malformed seal"
        if not hmac.compare_digest(given, expected):
            return "seal does not match the message"
        return None
