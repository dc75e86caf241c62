"""AES-256-GCM under a key ring, with the row and field a ciphertext belongs to as associated data.

A sealed value reads ``v1.<kid>.<base64url(nonce || ciphertext || tag)>``. The kid says which key
of the ring opens it; the first key of the ring seals. The associated data binds a ciphertext to
``(table, partition key, row key, field)``, so one copied into another row or field fails to open.
Messages name kids, never keys.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

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
