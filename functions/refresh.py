"""The refresh sweep (timer, KEYSTEWARD_REFRESH_SCHEDULE) and its worker (``refresh-requests``)."""

from __future__ import annotations

import json
import logging

import azure.functions as func

from functions._blueprint import blueprint
from shared.config.settings import get_settings
from shared.lifecycle.refresh_sweep import REFRESH_QUEUE
from shared.runtime import get_runtime

bp = blueprint()
log = logging.getLogger("keysteward.refresh")


@bp.timer_trigger(arg_name="timer", schedule=get_settings().refresh_schedule, run_on_startup=False)
@bp.queue_output(arg_name="due", queue_name=REFRESH_QUEUE, connection="AzureWebJobsStorage")
def refresh_sweep(timer: func.TimerRequest, due: func.Out[list[str]]) -> None:
    result = get_runtime().refresh_sweep().run()
    due.set(result.messages)
    log.info("refresh sweep: %d due read, %d enqueued, %d stale dropped",
             result.read, len(result.messages), result.dropped)  # fmt: skip


@bp.queue_trigger(arg_name="msg", queue_name=REFRESH_QUEUE, connection="AzureWebJobsStorage")
def refresh_connection(msg: func.QueueMessage) -> None:
    try:
        request = json.loads(msg.get_body())
        app, user_id = str(request["app"]), str(request["user_id"])
    except (ValueError, KeyError, TypeError):
        log.error("refresh-requests: malformed message %s dropped", msg.id)
        return
    outcome = get_runtime().tokens.refresh_if_due(app, user_id)
    log.info("refresh of %s/%s: %s", app, user_id, outcome)
