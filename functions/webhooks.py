"""Webhook delivery: one ``webhook-deliveries`` message is one signed POST attempt.

Thin: parse, hand to ``WebhookSender.deliver``, which schedules retries on the queue itself. A
message that is not JSON is logged and dropped: retrying it could never succeed.
"""

from __future__ import annotations

import json
import logging

import azure.functions as func

from functions._blueprint import blueprint
from shared.runtime import get_runtime

log = logging.getLogger(__name__)

bp = blueprint()


@bp.queue_trigger(arg_name="msg", queue_name="webhook-deliveries", connection="AzureWebJobsStorage")
def deliver_webhook(msg: func.QueueMessage) -> None:
    try:
        message = json.loads(msg.get_body())
    except (ValueError, UnicodeDecodeError):
        log.error("webhook-deliveries message %s is not JSON; dropped", msg.id)
        return
    if not isinstance(message, dict):
        log.error("webhook-deliveries message %s is not a JSON object; dropped", msg.id)
        return
    sender = get_runtime().webhooks
    if sender is None:
        log.warning(
            "webhook-deliveries message %s dropped: no webhook is configured "
            "(KEYSTEWARD_WEBHOOK_URL)",
            msg.id,
        )
        return
    sender.deliver(message)
