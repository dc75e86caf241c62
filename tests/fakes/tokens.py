"""What a fake provider issued and what became of it, so tests can ask ``is_active(token)``.

The registry holds no lock: the fakes only touch it while holding their own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class TokenState(StrEnum):
    ACTIVE = "active"
    EXPIRED = "expired"
    ROTATED = "rotated"  # a refresh token already exchanged (and past any grace period)
    REVOKED = "revoked"
    UNKNOWN = "unknown"  # never issued by this fake


@dataclass
class Token:
    value: str
    kind: str  # "access" | "refresh"
    client_id: str
    scope: str
    grant_id: str  # every token descending from one authorization shares it
    issued_at: float
    expires_at: float | None  # None: no expiry
    secret: str = ""  # the client secret presented when it was issued
    revoked: bool = False
    dies_at: float | None = None  # set on rotation: the end of the old refresh token's grace


class TokenRegistry:
    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now
        self._tokens: dict[str, Token] = {}

    def issue(
        self,
        kind: str,
        value: str,
        *,
        client_id: str,
        scope: str,
        grant_id: str,
        ttl: float | None,
        secret: str = "",
    ) -> Token:
        now = self._now()
        token = Token(
            value,
            kind,
            client_id,
            scope,
            grant_id,
            now,
            None if ttl is None else now + ttl,
            secret,
        )
        self._tokens[value] = token
        return token

    def get(self, value: str) -> Token | None:
        return self._tokens.get(value)

    def state(self, value: str) -> TokenState:
        token = self._tokens.get(value)
        if token is None:
            return TokenState.UNKNOWN
        now = self._now()
        if token.revoked:
            return TokenState.REVOKED
        if token.dies_at is not None and now >= token.dies_at:
            return TokenState.ROTATED
        if token.expires_at is not None and now >= token.expires_at:
            return TokenState.EXPIRED
        return TokenState.ACTIVE

    def rotate(self, token: Token, grace: float) -> None:
        """Mark a refresh token as exchanged; it keeps working for ``grace`` more seconds."""
        if token.dies_at is None:
            token.dies_at = self._now() + grace

    def revoke_where(self, predicate: Callable[[Token], bool]) -> int:
        hits = [t for t in self._tokens.values() if not t.revoked and predicate(t)]
        for token in hits:
            token.revoked = True
        return len(hits)

    def revoke_grant(self, grant_id: str) -> int:
        return self.revoke_where(lambda t: t.grant_id == grant_id)

    def expire_access_tokens(self) -> None:
        now = self._now()
        for token in self._tokens.values():
            if token.kind == "access" and (token.expires_at is None or token.expires_at > now):
                token.expires_at = now

    def snapshot(self, kind: str | None = None) -> list[Token]:
        return [
            dataclasses.replace(t) for t in self._tokens.values() if kind is None or t.kind == kind
        ]
