"""One way to read what a caller sent: a field of a JSON body, a query string or a queue message,
checked for its type and range, with an ``InputError`` (400) that names the field and says what
would be accepted. Every request object's ``parse`` is built from these, so the same mistake gets
the same answer everywhere and a service only ever sees typed, validated values.

A JSON ``true`` is not the number 1 here (Python's ``bool`` is an ``int``), text is stripped and
must be printable, and a missing optional field takes its default.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from typing import Any

from shared.foundation.errors import InputError

Fields = Mapping[str, Any]


def require_object(body: object, what: str) -> Fields:
    if not isinstance(body, Mapping):
        raise InputError(f"{what} is a JSON object")
    return body


def only(body: Fields, allowed: set[str] | frozenset[str]) -> None:
    """Refuse fields outside ``allowed`` rather than silently ignore them."""
    unknown = set(body) - allowed
    if unknown:
        raise InputError(f"unknown field(s) {sorted(unknown)}; allowed: {sorted(allowed)}")


def text(body: Fields, name: str, *, limit: int, hint: str = "", printable: bool = True) -> str:
    """A required, non-empty string of at most ``limit`` characters, stripped; ``printable``
    unless free prose (a reason) may hold line breaks."""
    value = optional_text(body, name, limit=limit, hint=hint, printable=printable)
    if value is None:
        raise InputError(f"'{name}' is required: {hint or f'text of at most {limit} characters'}")
    return value


def optional_text(
    body: Fields, name: str, *, limit: int, hint: str = "", printable: bool = True
) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise InputError(f"'{name}' must be {hint or f'text of at most {limit} characters'}")
    if printable and not value.isprintable():
        raise InputError(f"'{name}' must be printable text (no control characters)")
    return value.strip()


def fold(text: str) -> str:
    """The one comparison form of a user id: case-folded, then NFC (folding can denormalise), so
    ``Alice@Contoso.com`` and ``alice@contoso.com`` are one user in every lookup and glob."""
    return unicodedata.normalize("NFC", text.casefold())


def whole(body: Fields, name: str, *, low: int, high: int, default: int | None = None) -> int:
    """A whole number from ``low`` to ``high``; ``default`` when absent (required without one)."""
    value = body.get(name)
    if value is None and default is not None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InputError(f"'{name}' must be a whole number from {low} to {high}")
    return value


def flag(body: Fields, name: str, *, default: bool) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise InputError(f"'{name}' is true or false")
    return value


def listed(body: Fields, name: str, *, hint: str, most: int | None = None) -> list[str]:
    """A required non-empty list of strings (at most ``most``), in order, duplicates dropped."""
    value = body.get(name)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise InputError(f"'{name}' must be a non-empty list of {hint}")
    if most is not None and len(value) > most:
        raise InputError(f"'{name}' holds at most {most} entries")
    return list(dict.fromkeys(value))


def one_of(value: str | None, name: str, choices: tuple[str, ...]) -> str | None:
    if value is not None and value not in choices:
        raise InputError(f"'{name}' must be one of {', '.join(choices)}")
    return value


# -- query strings: every value arrives as text -----------------------------------------------


def query_whole(params: Fields, name: str, *, low: int, high: int) -> int | None:
    """A whole number written in ASCII digits; None when absent or empty."""
    value = params.get(name)
    if value is None or value == "":
        return None
    if not (isinstance(value, str) and value.isascii() and value.isdigit()):
        raise InputError(f"'{name}' must be a whole number from {low} to {high}")
    digits = value.lstrip("0") or "0"
    # int() refuses more than 4300 digits: a number that long is out of range anyway.
    if len(digits) > len(str(high)) or not low <= int(digits) <= high:
        raise InputError(f"'{name}' must be from {low} to {high}")
    return int(digits)


def query_flag(params: Fields, name: str) -> bool:
    value = params.get(name)
    if value is None or str(value).lower() in ("", "false", "0"):
        return False
    if str(value).lower() in ("true", "1"):
        return True
    raise InputError(f"'{name}' must be true or false")
