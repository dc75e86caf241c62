"""Where a finished connect flow may send the browser: only to ``KEYSTEWARD_ALLOWED_RETURN_URLS``
(exactly, or under one that ends with '/'), so Keysteward is never an open redirector."""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit

from shared.storage.tables.connections import Connection


def return_allowed(url: str, allowed_urls: tuple[str, ...]) -> bool:
    """Exact match with an allowed URL, or under an allowed URL that ends with '/'."""
    for allowed in allowed_urls:
        if url == allowed:
            return True
        if allowed.endswith("/") and url.startswith(allowed) and "/../" not in url:
            return urlsplit(url).netloc == urlsplit(allowed).netloc
    return False


def return_url(
    return_to: str | None, connection: Connection, allowed_urls: tuple[str, ...]
) -> str | None:
    """The ``return_to`` of a connected session with the outcome appended, or None."""
    if not return_to or not return_allowed(return_to, allowed_urls):
        return None
    query = urlencode({"status": "connected", "app": connection.app, "user_id": connection.user_id})
    return f"{return_to}{'&' if '?' in return_to else '?'}{query}"
