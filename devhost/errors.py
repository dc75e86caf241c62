"""The one error devhost raises for a problem it can name before serving anything."""

from __future__ import annotations


class StartupError(Exception):
    """The app, host.json or a setting is not something devhost can serve; the message says why."""
