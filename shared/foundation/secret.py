"""``Secret``: a string that never shows itself in reprs, logs or tracebacks.

Every layer passes secrets as ``Secret``; only the code that puts one on the wire calls
``reveal()``. The store seals them (``shared.storage.crypto``), the audit trail and events
redact them (``shared.foundation.redaction``).
"""

from __future__ import annotations

import hashlib
import hmac


class Secret:
    """A secret string that does not show itself in reprs, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self.reveal().encode(), other.reveal().encode())

    def __hash__(self) -> int:
        # Consistent with equality (equal secrets hash equal) without hashing the text itself.
        return hash(hashlib.sha256(self.reveal().encode()).digest())
