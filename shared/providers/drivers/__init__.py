"""Provider drivers, one per wire protocol family of the catalogue (see ``base`` for the
contract): ``oauth2`` (OIDC by discovery, PagerDuty), ``azure-devops-oauth`` and ``msal``."""

from __future__ import annotations

import requests

from shared.config.apps import App
from shared.foundation.clock import Clock
from shared.providers.drivers.azure_devops import AzureDevOpsOAuth
from shared.providers.drivers.base import AuthRequest, Driver
from shared.providers.drivers.entra import Entra
from shared.providers.drivers.oauth2 import OAuth2

__all__ = ["AuthRequest", "Driver", "Drivers"]


class Drivers:
    """One driver per driver kind, sharing the process's HTTP session and clock."""

    def __init__(self, session: requests.Session, clock: Clock) -> None:
        self._drivers: dict[str, Driver] = {
            "oauth2": OAuth2(session, clock),
            "azure-devops-oauth": AzureDevOpsOAuth(session, clock),
            "msal": Entra(session, clock),
        }

    def for_app(self, app: App) -> Driver:
        return self._drivers[app.provider.driver]
