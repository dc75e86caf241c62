"""The parts of host.json that change how devhost behaves, with the real host's defaults."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devhost.errors import StartupError

# .NET TimeSpan text as host.json writes it: [d.]hh:mm:ss[.fffffff]
_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{1,2}):(\d{1,2}(?:\.\d+)?)$")
ENCODINGS = ("base64", "none")


@dataclass(frozen=True)
class QueueOptions:
    batch_size: int = 16
    new_batch_threshold: int = 8
    max_polling_interval: float = 60.0
    visibility_timeout: float = 0.0
    max_dequeue_count: int = 5
    message_encoding: str = "base64"

    @property
    def visibility_timeout_seconds(self) -> int:
        # The queue service takes whole seconds; rounding up never retries sooner than asked.
        return math.ceil(self.visibility_timeout)


@dataclass(frozen=True)
class HostConfig:
    route_prefix: str = "api"
    queues: QueueOptions = QueueOptions()
    # host.json "functions": when present, only these functions are loaded (as the host does).
    functions: tuple[str, ...] | None = None


def parse_timespan(value: object, where: str) -> float:
    """Seconds in a host.json TimeSpan such as ``00:00:02`` or ``00:00:00.200``."""
    match = _TIMESPAN.match(value) if isinstance(value, str) else None
    if match is None:
        raise StartupError(f"host.json {where}: '{value}' is not a TimeSpan like 00:00:30")
    days, hours, minutes, seconds = match.groups()
    return int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def _int(section: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = section.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise StartupError(f"host.json extensions.queues.{key}: an integer from {low} to {high}")
    return value


def _queue_options(section: object) -> QueueOptions:
    if section is None:
        return QueueOptions()
    if not isinstance(section, dict):
        raise StartupError("host.json extensions.queues: expected an object")
    # The storage service hands out at most 32 messages per receive.
    batch_size = _int(section, "batchSize", 16, 1, 32)
    threshold = _int(section, "newBatchThreshold", batch_size // 2, 0, 10_000)
    where = "extensions.queues"
    polling = section.get("maxPollingInterval")
    visibility = section.get("visibilityTimeout")
    encoding = str(section.get("messageEncoding", "base64")).lower()
    if encoding not in ENCODINGS:
        raise StartupError(f"host.json {where}.messageEncoding: one of {', '.join(ENCODINGS)}")
    return QueueOptions(
        batch_size=batch_size,
        new_batch_threshold=threshold,
        # The host never polls more often than every 100 ms, whatever host.json says.
        max_polling_interval=max(
            0.1,
            60.0 if polling is None else parse_timespan(polling, f"{where}.maxPollingInterval"),
        ),
        visibility_timeout=(
            0.0 if visibility is None else parse_timespan(visibility, f"{where}.visibilityTimeout")
        ),
        max_dequeue_count=_int(section, "maxDequeueCount", 5, 1, 10_000),
        message_encoding=encoding,
    )


def read_host_json(root: Path) -> HostConfig:
    path = root / "host.json"
    if not path.is_file():
        raise StartupError(f"no host.json in {root}: is --root the function app's folder?")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StartupError(f"host.json: not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise StartupError("host.json: expected an object")
    extensions = data.get("extensions") or {}
    if not isinstance(extensions, dict):
        raise StartupError("host.json extensions: expected an object")
    http = extensions.get("http") or {}
    prefix = http.get("routePrefix", "api") if isinstance(http, dict) else "api"
    if not isinstance(prefix, str):
        raise StartupError("host.json extensions.http.routePrefix: expected a string")
    functions = data.get("functions")
    if functions is not None and (
        not isinstance(functions, list) or not all(isinstance(f, str) for f in functions)
    ):
        raise StartupError("host.json functions: expected a list of function names")
    return HostConfig(
        route_prefix=prefix.strip("/"),
        queues=_queue_options(extensions.get("queues")),
        functions=tuple(functions) if functions is not None else None,
    )
