"""Strict in-process fakes of OAuth providers, served over real HTTP on 127.0.0.1."""

from __future__ import annotations

from tests.fakes.ado_pats import AdoPatsFake
from tests.fakes.azure_devops_oauth import AzureDevOpsApp, AzureDevOpsOAuthFake
from tests.fakes.base import FakeServer, Recorded
from tests.fakes.oauth import pkce_pair, s256
from tests.fakes.pagerduty import PagerDutyApp, PagerDutyFake
from tests.fakes.tokens import Token, TokenState

__all__ = [
    "AdoPatsFake",
    "AzureDevOpsApp",
    "AzureDevOpsOAuthFake",
    "FakeServer",
    "PagerDutyApp",
    "PagerDutyFake",
    "Recorded",
    "Token",
    "TokenState",
    "pkce_pair",
    "s256",
]
