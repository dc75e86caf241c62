"""The driver contract. Each driver speaks one wire protocol family of the catalogue.

A driver turns an app and a redirect URI into an authorization URL (``begin``), a callback's
parameters into a ``Grant`` (``finish``), a grant into a fresher one (``refresh``), and revokes a
grant upstream where the provider can (``revoke``). What ``begin`` must remember until the
callback (a PKCE verifier, MSAL's flow) is returned as ``pending`` and kept sealed in the
single-use OAuth state row.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from shared.config.apps import App
from shared.providers.oauth import Grant


@dataclass(frozen=True)
class AuthRequest:
    url: str
    pending: dict[str, Any]


class Driver(Protocol):
    def begin(self, app: App, redirect_uri: str, state: str) -> AuthRequest: ...

    def finish(
        self,
        app: App,
        pending: Mapping[str, Any],
        params: Mapping[str, str],
        redirect_uri: str,
    ) -> Grant: ...

    def refresh(self, app: App, grant: Grant) -> Grant: ...

    def revoke(self, app: App, grant: Grant) -> str:
        """``revoked`` or ``not_supported``; raises ``ProviderError`` when the provider fails."""
        ...
