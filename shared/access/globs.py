"""Resource globs over ``{app}/{user_id}``, as API keys grant them.

A glob is ``*`` (everything) or ``<app glob>/<user glob>``, where ``*`` stands for any run of
characters (``pagerduty-*/*``, ``*/alice@contoso.com``). The app part never spans a ``/``: app
ids are slugs, so ``*/alice`` cannot reach a user called ``x/alice`` of another app. The user part
matches case-insensitively (``inputs.fold`` on both sides, as NuGet's globs do), because user ids
are one identity whatever their case. Globs match connections created after the key, too.

``within`` says whether one glob grants nothing another set does not: what a key may hand on.
"""

from __future__ import annotations

import re
import unicodedata

from shared.foundation.errors import InputError
from shared.foundation.inputs import fold

MAX_GLOB_LENGTH = 300
_APP_GLOB = re.compile(r"^[a-z0-9*][a-z0-9*._-]{0,63}$")
_USER_GLOB = re.compile(r"^[^\s\x00-\x1f\x7f]{1,256}$")


def validate(glob: str) -> str:
    if not isinstance(glob, str) or not glob:
        raise InputError("a resource glob must be a non-empty string")
    if len(glob) > MAX_GLOB_LENGTH:
        raise InputError(f"resource glob longer than {MAX_GLOB_LENGTH} characters")
    if glob == "*":
        return glob
    app, sep, user = glob.partition("/")
    if not sep or not _APP_GLOB.match(app) or not _USER_GLOB.match(user):
        raise InputError(
            f"malformed resource glob {glob!r}: use '*' or '<app>/<user_id>' where '*' matches "
            "anything, e.g. 'pagerduty-*/*' or '*/alice@contoso.com'"
        )
    if not user.isprintable() or not unicodedata.is_normalized("NFC", user):
        raise InputError(
            "the user part of a resource glob must be printable NFC text (no invisible "
            "formatting characters): normalise it to NFC, as user ids are"
        )
    return glob


def _pattern(part: str) -> re.Pattern[str]:
    return re.compile("".join(".*" if c == "*" else re.escape(c) for c in part), re.DOTALL)


def _user_matches(user_glob: str, user_id: str) -> bool:
    return bool(_pattern(fold(user_glob)).fullmatch(fold(user_id)))


def matches(glob: str, app: str, user_id: str) -> bool:
    if glob == "*":
        return True
    app_glob, _, user_glob = glob.partition("/")
    return bool(_pattern(app_glob).fullmatch(app) and _user_matches(user_glob, user_id))


def covers(globs: list[str] | tuple[str, ...], app: str, user_id: str) -> bool:
    return any(matches(glob, app, user_id) for glob in globs)


def covers_app(globs: list[str] | tuple[str, ...], app: str) -> bool:
    """Whether the globs grant every user of ``app`` (what revoking a whole app needs)."""
    return _covers_every(globs, app=app)


def covers_user(globs: list[str] | tuple[str, ...], user_id: str) -> bool:
    """Whether the globs grant ``user_id`` in every app (what revoking a whole user needs)."""
    return _covers_every(globs, user_id=user_id)


def _covers_every(
    globs: list[str] | tuple[str, ...], *, app: str | None = None, user_id: str | None = None
) -> bool:
    for glob in globs:
        if glob == "*":
            return True
        app_glob, _, user_glob = glob.partition("/")
        if app is not None and user_glob == "*" and _pattern(app_glob).fullmatch(app):
            return True
        if user_id is not None and app_glob == "*" and _user_matches(user_glob, user_id):
            return True
    return False


def within(glob: str, outer: list[str] | tuple[str, ...]) -> bool:
    """Whether every resource ``glob`` matches is matched by one of ``outer`` (never a wrong yes;
    a set of globs that covers ``glob`` only together, and no one of them alone, says no)."""
    if any(_everything(other) for other in outer):
        return True
    if _everything(glob):
        return False
    app, _, user = glob.partition("/")
    for other in outer:
        other_app, _, other_user = other.partition("/")
        if _contains(other_app, app) and _contains(fold(other_user), fold(user)):
            return True
    return False


def _contains(outer: str, inner: str) -> bool:
    """Whether every string the pattern ``inner`` matches, ``outer`` matches (``*`` wildcards).
    ``outer`` must match ``inner`` read as text in which each ``*`` is a character that only a
    ``*`` of ``outer`` can stand for."""
    # reach[j]: outer[:i] matches inner[:j]; one row per character of outer.
    reach = [True] + [False] * len(inner)
    for char in outer:
        if char == "*":
            for j in range(1, len(inner) + 1):
                reach[j] = reach[j] or reach[j - 1]
        else:
            reach = [False] + [
                reach[j - 1] and inner[j - 1] == char for j in range(1, len(inner) + 1)
            ]
    return reach[len(inner)]


def _everything(glob: str) -> bool:
    return glob in ("*", "*/*")  # an app id never holds '/': '*/*' is '*'
