"""Small OAuth helpers shared by the fakes (and handy for tests acting as a client)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

# RFC 7636 §4.1: 43-128 characters from the unreserved set.
VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")
# RFC 7636 §4.2: BASE64URL(SHA256(verifier)) without padding is always 43 characters.
S256_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def s256(verifier: str) -> str:
    return b64url(hashlib.sha256(verifier.encode("ascii")).digest())


def pkce_pair() -> tuple[str, str]:
    """A fresh ``(code_verifier, code_challenge)`` for the S256 method."""
    verifier = secrets.token_urlsafe(48)
    return verifier, s256(verifier)


def with_query(url: str, params: dict[str, str]) -> str:
    """``url`` with ``params`` appended to whatever query it already has."""
    parts = urlsplit(url)
    extra = urlencode(params)
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def jwt(claims: dict[str, Any], header: dict[str, Any] | None = None) -> str:
    """A JWT-shaped string: real structure, a random signature nobody verifies."""
    head = header or {"typ": "JWT", "alg": "RS256"}
    return ".".join(
        (
            b64url(json.dumps(head).encode()),
            b64url(json.dumps(claims).encode()),
            b64url(secrets.token_bytes(32)),
        )
    )
