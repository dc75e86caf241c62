"""The HTTP session Keysteward talks to providers with: every request has a timeout.

MSAL and the drivers share it; a provider that hangs costs a request at most the timeout, and a
timeout counts as a transient failure.
"""

from __future__ import annotations

from typing import Any

import requests


class TimeoutSession(requests.Session):
    def __init__(self, timeout: float) -> None:
        super().__init__()
        # A short connect timeout: an unreachable host fails fast; reads get the full budget.
        self._timeout = (min(5.0, timeout), timeout)

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self._timeout
        return super().request(method, url, *args, **kwargs)


def provider_session(timeout: float) -> requests.Session:
    return TimeoutSession(timeout)
