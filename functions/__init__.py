"""The app's functions, one blueprint per concern; each is thin over ``shared``."""

from __future__ import annotations

import azure.functions as func

from functions import audit, health, keys, sweeps, webhooks
from shared.settings import get_settings

# Read and validate every setting now, so a misconfigured app fails at start-up naming the
# setting, instead of on its first request.
get_settings()

BLUEPRINTS: tuple[func.Blueprint, ...] = (health.bp, keys.bp, audit.bp, sweeps.bp, webhooks.bp)
