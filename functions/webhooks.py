"""Webhook delivery: one ``webhook-deliveries`` message is one signed POST attempt.

Thin: hand the message to ``WebhookSender.receive``, which checks its seal (a message Keysteward
did not seal is audited and dropped), signs, POSTs and schedules retries on the queue itself.
"""

from __future__ import annotations

import logging

import azure.functions as func

from functions._blueprint import blueprint
from shared.runtime import get_runtime

log = logging.getLogger(__name__)

bp = blueprint()


@bp.queue_trigger(arg_name="msg", queue_name="webhook-deliveries", connection="AzureWebJobsStorage")
def deliver_webhook(msg: func.QueueMessage) -> None:
    sender = get_runtime().webhooks
    if sender is None:
        log.warning(
            "webhook-deliveries message %s dropped: no webhook is configured "
            "(KEYSTEWARD_WEBHOOK_URL)",
            msg.id,
        )
        return
    sender.receive(msg.get_body(), msg.id or "")
