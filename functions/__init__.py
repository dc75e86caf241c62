"""The app's functions, one blueprint per concern; each is thin over ``shared``."""

from __future__ import annotations

import azure.functions as func

from functions import (
    audit,
    connect,
    connections,
    health,
    keys,
    pats,
    refresh,
    revocations,
    sweeps,
    tokens,
    webhooks,
)
from shared.config.apps import load as load_apps
from shared.config.settings import get_settings

# Read and validate every setting and the apps file now, so a misconfigured app fails at
# start-up naming the setting or app, instead of on its first request.
load_apps(get_settings())

BLUEPRINTS: tuple[func.Blueprint, ...] = (
    health.bp,
    keys.bp,
    connect.bp,
    connections.bp,
    tokens.bp,
    refresh.bp,
    revocations.bp,
    pats.bp,
    audit.bp,
    sweeps.bp,
    webhooks.bp,
)
