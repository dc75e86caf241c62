"""Where a finished connect flow may send the browser: only to ``KEYSTEWARD_ALLOWED_RETURN_URLS``
(exactly, or under one that ends with '/'), so Keysteward is never an open redirector.

URLs are parsed and normalised as browsers do (the WHATWG URL standard, through ada-url), then
compared as parts: scheme, host and port equal, and the normalised path at or under the allowed
one. Comparing strings is what let ``/cb/%2e%2e/evil``, ``/cb/..\\evil`` and ``/cb/.<TAB>./evil``
out: a browser resolves each to ``/evil``. What a browser would rewrite is refused when the link
is made (``shared.foundation.urls``), and only the normalised form is stored or sent.
"""

from __future__ import annotations

from urllib.parse import urlencode

from ada_url import URL

from shared.foundation.errors import InputError
from shared.foundation.urls import browser_url
from shared.storage.tables.connections import Connection


def return_allowed(url: str, allowed_urls: tuple[str, ...]) -> bool:
    """Same scheme, host and port as an allowed URL, and its exact path and query, or a path
    under an allowed URL that ends with '/' (both compared in their WHATWG form)."""
    try:
        given = URL(browser_url(url))
    except InputError:
        return False
    for allowed in allowed_urls:
        try:
            target = URL(browser_url(allowed, "an allowed return URL"))
        except InputError:
            continue  # settings refuse these at start-up; never a reason to redirect
        if (given.protocol, given.hostname, given.port) != (
            target.protocol,
            target.hostname,
            target.port,
        ):
            continue
        if target.pathname.endswith("/"):
            if given.pathname.startswith(target.pathname):
                return True
        elif (given.pathname, given.search) == (target.pathname, target.search):
            return True
    return False


def return_url(
    return_to: str | None, connection: Connection, allowed_urls: tuple[str, ...]
) -> str | None:
    """The normalised ``return_to`` of a connected session with the outcome added, or None.
    Built from the parsed URL, never the stored text: a value stored before these checks cannot
    put CR or LF into a header."""
    if not return_to or not return_allowed(return_to, allowed_urls):
        return None
    url = URL(browser_url(return_to))
    outcome = urlencode({"status": "connected", "app": connection.app,
                         "user_id": connection.user_id})  # fmt: skip
    url.search = f"{url.search}&{outcome}" if url.search else f"?{outcome}"
    return str(url.href)
