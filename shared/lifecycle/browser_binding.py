"""The cookie that binds a sign-in to the browser that opened its connect link (RFC 9700 §4.7).

Opening a link sets ``ks_bind_<id>`` to a fresh random value whose digest the state row keeps; the
callback is honoured only when the browser presents that value. One cookie per sign-in, so two
links opened in one browser do not undo each other. ``SameSite=Lax`` lets it ride the provider's
top-level redirect back; the path limits it to the callbacks; it lives as long as the state.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

from shared.storage.tables.connect_links import digest

WRONG_BROWSER = "wrong_browser"
WRONG_BROWSER_MESSAGE = (
    "This sign-in was started in another browser. Finish it in the browser that opened the "
    "connect link; to sign in from this one, ask for a new link."
)


@dataclass(frozen=True)
class Binding:
    """A new binding: the digest the state row keeps and the ``Set-Cookie`` for the browser."""

    digest: str
    set_cookie: str


class BrowserBinding:
    def __init__(self, public_url: str, lifetime: timedelta) -> None:
        self._secure = public_url.startswith("https://")
        self._path = f"{urlsplit(public_url.rstrip('/')).path}/api/oauth/"
        self._max_age = int(lifetime.total_seconds())

    @staticmethod
    def name(state: str) -> str:
        return f"ks_bind_{digest(state)[:16]}"

    def new(self, state: str) -> Binding:
        value = secrets.token_urlsafe(32)
        return Binding(digest(value), self._cookie(self.name(state), value, self._max_age))

    def forget(self, state: str) -> str:
        """The ``Set-Cookie`` value that removes the binding once its state is spent."""
        return self._cookie(self.name(state), "", 0)

    def presented(self, state: str, kept: str | None, cookies: Mapping[str, str]) -> bool:
        """Whether ``cookies`` hold the value whose digest the state row ``kept``."""
        value = cookies.get(self.name(state), "")
        return kept is not None and hmac.compare_digest(digest(value), kept)

    def _cookie(self, name: str, value: str, max_age: int) -> str:
        secure = "; Secure" if self._secure else ""
        return (
            f"{name}={value}; Max-Age={max_age}; Path={self._path}; HttpOnly; SameSite=Lax{secure}"
        )
