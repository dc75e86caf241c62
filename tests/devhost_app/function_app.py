"""The function app tests/test_devhost.py serves with devhost: one function per host semantic.

Functions append what happened as JSON lines to the file named by ``DEVHOST_TEST_EVENTS``, with
the process id, so a test sees attempts, bodies and which devhost ran them. Queue names start
with ``%DEVHOST_TEST_PREFIX%`` so devhosts sharing one Azurite can keep to their own queues.
"""

from __future__ import annotations

import asyncio
import json
import os
import time

import azure.functions as func

STORAGE = "AzureWebJobsStorage"
app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


def record(function: str, **fields: object) -> None:
    line = json.dumps({"fn": function, "pid": os.getpid(), **fields}) + "\n"
    # One write to an O_APPEND file: lines from concurrent threads and processes stay whole.
    fd = os.open(os.environ["DEVHOST_TEST_EVENTS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)


def _json(payload: object, status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(payload), status_code=status, mimetype="application/json")


@app.route(route="items/{id:int}/{name?}", methods=["GET", "POST"])
def item(req: func.HttpRequest) -> func.HttpResponse:
    return _json(
        {
            "method": req.method,
            "url": req.url,
            "route": dict(req.route_params),
            "params": dict(req.params),
            "body": req.get_body().decode("utf-8"),
            "probe": req.headers.get("x-probe"),
        }
    )


@app.route(route="hello/{name:alpha}", methods=["GET"])
def hello(req: func.HttpRequest) -> func.HttpResponse:
    response = func.HttpResponse(f"hello {req.route_params['name']}")
    response.headers.add_header("X-Multi", "one")
    response.headers.add_header("X-Multi", "two")
    return response


@app.route(route="files/{*path}", methods=["GET"])
def files(req: func.HttpRequest) -> func.HttpResponse:
    return _json(dict(req.route_params))


@app.route(route="async", methods=["GET"])
async def async_hello(req: func.HttpRequest) -> func.HttpResponse:
    await asyncio.sleep(0)
    return func.HttpResponse("async ok")


@app.route(route="boom")
def boom(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("secret detail that must not reach the client")


@app.route(route="enqueue", methods=["POST"])
@app.queue_output(
    arg_name="out", queue_name="%DEVHOST_TEST_PREFIX%-out", connection="AzureWebJobsStorage"
)
def enqueue(req: func.HttpRequest, out: func.Out[list[str]]) -> func.HttpResponse:
    out.set(req.get_json())
    if req.params.get("fail"):
        raise RuntimeError("outputs of a failed invocation must not be sent")
    return func.HttpResponse(status_code=202)


@app.queue_trigger(arg_name="msg", queue_name="%DEVHOST_TEST_PREFIX%-echo", connection=STORAGE)
def queue_echo(msg: func.QueueMessage) -> None:
    record("queue_echo", id=msg.id, body=msg.get_body().decode("utf-8"), tries=msg.dequeue_count)


@app.queue_trigger(arg_name="msg", queue_name="%DEVHOST_TEST_PREFIX%-fail", connection=STORAGE)
def queue_fail(msg: func.QueueMessage) -> None:
    record("queue_fail", id=msg.id, body=msg.get_body().decode("utf-8"), tries=msg.dequeue_count)
    raise RuntimeError("this function always fails")


@app.queue_trigger(arg_name="body", queue_name="%DEVHOST_TEST_PREFIX%-shared", connection=STORAGE)
def queue_shared(body: str) -> None:
    record("queue_shared", body=body)
    time.sleep(0.05)  # long enough that one process cannot drain the queue alone


@app.queue_trigger(arg_name="msg", queue_name="%DEVHOST_TEST_PREFIX%-slow", connection=STORAGE)
def queue_slow(msg: func.QueueMessage) -> None:
    record("queue_slow_started", id=msg.id)
    for beat in range(240):
        record("queue_slow_beat", id=msg.id, beat=beat)
        time.sleep(0.25)


@app.timer_trigger(schedule="%DEVHOST_TEST_SCHEDULE%", arg_name="timer")
def tick(timer: func.TimerRequest) -> None:
    record("tick", past_due=timer.past_due)


@app.timer_trigger(schedule="0 0 0 1 1 *", arg_name="timer", run_on_startup=True)
def on_start(timer: func.TimerRequest) -> None:
    record("on_start")
