"""The nightly sweep (KEYSTEWARD_EXPIRY_SWEEP_SCHEDULE): expiry warnings, then another try at
upstream revocations that kept failing."""

from __future__ import annotations

import logging

import azure.functions as func

from functions._blueprint import blueprint
from shared.config.settings import get_settings
from shared.runtime import get_runtime

bp = blueprint()
log = logging.getLogger("keysteward.sweeps")


@bp.timer_trigger(
    arg_name="timer", schedule=get_settings().expiry_sweep_schedule, run_on_startup=False
)
def expiry_sweep(timer: func.TimerRequest) -> None:
    runtime = get_runtime()
    report = runtime.expiry_sweep().run()
    log.info("expiry sweep: %d checked, %d warned", report.checked, len(report.warned))
    # The nightly second chance for upstream revocations that kept failing.
    retried = runtime.revoker.retry_failures()
    repaired = runtime.managed_pats.repair(runtime.clock.now())
    log.info("revocation retries: %s; managed PATs: %s", retried, repaired)
