"""Reversible encoding of ids into Table Storage keys.

Table keys may not hold ``/ \\ # ?`` or control characters, and non-ASCII text is best kept out of
them. Ids made of the safe characters below (slugs, e-mail addresses, GUIDs) are stored as they
are, so rows stay readable in Storage Explorer; every other byte of the UTF-8 encoding, and ``~``
itself, becomes ``~XX``. A key is at most 1 KiB, so an id that does not fit is refused.
"""

from __future__ import annotations

import re

from shared.foundation.errors import IdTooLong, InputError

MAX_KEY_LENGTH = 1024
_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._@+=-")
_ESCAPE = re.compile(r"~([0-9A-F]{2})")


def encode_key(value: str) -> str:
    if not isinstance(value, str):
        raise InputError("an id must be a string")
    encoded = "".join(
        chr(byte) if byte in _SAFE else f"~{byte:02X}" for byte in value.encode("utf-8")
    )
    if len(encoded) > MAX_KEY_LENGTH:
        raise IdTooLong(
            f"id is too long: {len(encoded)} characters once encoded, at most {MAX_KEY_LENGTH}"
        )
    return encoded


def decode_key(key: str) -> str:
    raw = bytearray()
    position = 0
    for match in _ESCAPE.finditer(key):
        raw += key[position : match.start()].encode("ascii")
        raw.append(int(match.group(1), 16))
        position = match.end()
    raw += key[position:].encode("ascii")
    return raw.decode("utf-8")
