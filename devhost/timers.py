"""Timer triggers on their NCRONTAB schedules (seconds first), in UTC as the host runs them.

Each timer has its own thread, so one timer's invocations never overlap (as in the host) and a
slow timer does not delay another. When an invocation overruns its next occurrence, the missed
occurrences collapse into one late invocation with ``past_due`` set, then the schedule resumes.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

from azure.functions.timer import TimerRequest
from croniter import croniter

from devhost.invoker import Invoker
from devhost.loader import FunctionSpec

log = logging.getLogger("devhost")


def _iso(moment: datetime | None) -> str:
    return moment.isoformat() if moment else "0001-01-01T00:00:00+00:00"


def timer_request(
    past_due: bool = False, last: datetime | None = None, next_: datetime | None = None
) -> TimerRequest:
    status = {"Last": _iso(last), "Next": _iso(next_), "LastUpdated": _iso(datetime.now(UTC))}
    return TimerRequest(past_due=past_due, schedule_status=status, schedule={"AdjustForDST": True})


def next_occurrence(schedule: str, after: datetime) -> datetime:
    moment: datetime = croniter(schedule, after, second_at_beginning=True).get_next(datetime)
    return moment


class TimerRunner:
    def __init__(self, spec: FunctionSpec, invoker: Invoker, stop: threading.Event) -> None:
        assert spec.schedule is not None
        self._spec = spec
        self._schedule = spec.schedule
        self._invoker = invoker
        self._stop = stop
        self._thread = threading.Thread(target=self._run, name=f"timer-{spec.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        last: datetime | None = None
        due = next_occurrence(self._schedule, datetime.now(UTC))
        if self._spec.run_on_startup:
            self._invoker.invoke(self._spec, timer_request(False, None, due), " on start-up")
        while not self._stop.is_set():
            delay = (due - datetime.now(UTC)).total_seconds()
            if self._stop.wait(max(delay, 0.0)):
                return
            following = next_occurrence(self._schedule, max(due, datetime.now(UTC)))
            request = timer_request(delay < 0, last, following)
            self._invoker.invoke(self._spec, request, " past due" if delay < 0 else "")
            last, due = due, following
