"""URLs a browser will be sent to, parsed and normalised as browsers do (the WHATWG URL
standard, through ada-url), so that what Keysteward compares is what the browser will follow.

What a browser would silently rewrite is refused instead of rewritten: dot segments (plain or
percent-encoded), encoded slashes and backslashes, backslashes, tabs, CR, LF and other control
characters, and user names or passwords before the host.
"""

from __future__ import annotations

import ipaddress
import re

from ada_url import URL

from shared.foundation.errors import InputError

MAX_RETURN_URL = 2048
# Percent-encoded '.', '/' and '\': a browser may decode them into path segments.
_ENCODED_PATH_CHARS = re.compile(r"%(2e|2f|5c)", re.IGNORECASE)
_UNSAFE = re.compile(r"[\x00-\x20\x7f\\]")  # controls, space, DEL, backslash


def browser_url(raw: str, what: str = "'return_to'") -> str:
    """The WHATWG form of an absolute http(s) URL a browser may be sent to, or ``InputError``."""
    if not isinstance(raw, str) or not raw or len(raw) > MAX_RETURN_URL:
        raise InputError(f"{what} must be an absolute http(s) URL of at most {MAX_RETURN_URL} "
                         "characters")  # fmt: skip
    if _UNSAFE.search(raw):
        raise InputError(f"{what} must not contain spaces, control characters (tab, CR, LF) or "
                         "backslashes: percent-encode what the URL needs")  # fmt: skip
    path = raw.split("#", 1)[0].split("?", 1)[0]
    if {".", ".."} & set(path.split("/")[3:]):
        raise InputError(f"{what} must not hold '.' or '..' path segments: give the path as it "
                         "is meant")  # fmt: skip
    if _ENCODED_PATH_CHARS.search(path):
        raise InputError(f"{what} must not hold encoded dots, slashes or backslashes (%2e, %2f, "
                         "%5c) in its path: browsers may read them as path segments")  # fmt: skip
    try:
        url = URL(raw)
    except ValueError:
        raise InputError(f"{what} must be an absolute http(s) URL") from None
    if url.protocol not in ("http:", "https:") or not url.hostname:
        raise InputError(f"{what} must be an absolute http(s) URL")
    if url.username or url.password:
        raise InputError(f"{what} must not carry a user name or password")
    return str(url.href)


def loopback_host(host: str) -> bool:
    """Whether ``host`` (a URL's hostname) names this machine: localhost or a loopback address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
