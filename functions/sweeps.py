"""The sweep of expired connect links and OAuth states (KEYSTEWARD_REFRESH_SCHEDULE: it reads only
the minutes that ended since its last run, so it is short and runs often), and the nightly sweep
(KEYSTEWARD_EXPIRY_SWEEP_SCHEDULE): managed PATs against what Azure DevOps holds (revoked,
expired or changed outside Keysteward), then expiry warnings, then another try at upstream
revocations that kept failing (connections and managed PATs), then the clean-up of PAT creations
that never finished, then the one-time backfill of user ids stored before ``UserIds`` (a single
read once done); each runs even when an earlier one failed."""

from __future__ import annotations

import logging

import azure.functions as func

from functions._blueprint import blueprint
from shared.config.settings import get_settings
from shared.lifecycle.nightly import run_nightly
from shared.runtime import get_runtime

bp = blueprint()
log = logging.getLogger("keysteward.sweeps")


@bp.timer_trigger(
    arg_name="timer", schedule=get_settings().expiry_sweep_schedule, run_on_startup=False
)
def expiry_sweep(timer: func.TimerRequest) -> None:
    runtime = get_runtime()
    report = run_nightly(
        [
            # First: a PAT revoked or shortened at Azure DevOps is neither warned nor rotated.
            ("managed PATs against Azure DevOps", runtime.pat_upstream.sweep),
            ("expiry warnings", lambda: runtime.expiry_sweep().run()),
            ("revocation retries", runtime.revoker.credentials.retry_failures),
            (
                "unfinished PAT creations",
                lambda: runtime.managed_pats.clean_up_creations(runtime.clock.now()),
            ),
            ("user id backfill", lambda: runtime.user_ids.backfill().public()),
        ]
    )
    log.info("nightly sweep: %s", report.results)


@bp.timer_trigger(arg_name="timer", schedule=get_settings().refresh_schedule, run_on_startup=False)
def expired_sessions_sweep(timer: func.TimerRequest) -> None:
    swept = get_runtime().expired_sessions().run()
    log.info("expired sessions sweep: %s", swept)
