"""Import the FunctionApp and describe each function through azure.functions' own index.

``load_functions`` returns one ``FunctionSpec`` per function devhost can serve, with ``%SETTING%``
references already resolved from the environment, so a missing setting stops start-up with a
message naming it, as the host's indexing does.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import re
import sys
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from azure.functions.decorators.core import BindingDirection
from croniter import croniter

from devhost.errors import StartupError
from devhost.hostjson import HostConfig

log = logging.getLogger("devhost")

HTTP, TIMER, QUEUE = "httpTrigger", "timerTrigger", "queueTrigger"
_SETTING = re.compile(r"%([^%]+)%")
# Queue names the storage service accepts.
_QUEUE_NAME = re.compile(r"^(?=.{3,63}$)[a-z0-9]+(-[a-z0-9]+)*$")
CONTEXT_ARG = "context"


@dataclass(frozen=True)
class OutputQueue:
    arg: str  # the parameter's name, or "$return" for the return value
    queue: str
    connection: str | None


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    trigger: str  # HTTP, TIMER or QUEUE
    trigger_arg: str
    function: Callable[..., Any]
    outputs: tuple[OutputQueue, ...] = ()
    takes_context: bool = False
    route: str | None = None
    methods: tuple[str, ...] | None = None  # None: any method
    schedule: str | None = None
    run_on_startup: bool = False
    queue: str | None = None
    connection: str | None = None
    message_as: Literal["message", "str", "bytes"] = "message"

    @property
    def kind(self) -> str:
        return self.trigger.removesuffix("Trigger")


def resolve_settings(value: str, env: Mapping[str, str], where: str) -> str:
    """``value`` with each ``%NAME%`` replaced by that app setting, as the host's resolver does."""

    def setting(match: re.Match[str]) -> str:
        name = match.group(1)
        if not env.get(name):
            raise StartupError(f"{where}: '{value}' refers to app setting {name}, which is not set")
        return env[name]

    return _SETTING.sub(setting, value)


def apply_local_settings(root: Path, environ: MutableMapping[str, str]) -> list[str]:
    """Copy ``Values`` from local.settings.json into the environment, as Core Tools does.

    A variable already in the environment wins, so a shell or test can override the file.
    """
    path = root / "local.settings.json"
    if not path.is_file():
        return []
    try:
        values = json.loads(path.read_text(encoding="utf-8")).get("Values") or {}
    except (OSError, ValueError, AttributeError) as exc:
        raise StartupError(f"local.settings.json: not readable ({exc})") from None
    applied = []
    for name, value in values.items():
        if name not in environ and value is not None:
            environ[name] = str(value)
            applied.append(name)
    return applied


def import_app(target: str, root: Path) -> Any:
    module_name, _, attribute = target.partition(":")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise StartupError(f"no module '{module_name}' in {root}") from None
    app = getattr(module, attribute or "app", None)
    if app is None or not callable(getattr(app, "get_functions", None)):
        raise StartupError(f"'{target}' is not an azure.functions FunctionApp")
    return app


def _text(value: object) -> str:
    # The index keeps enums (HttpMethod, AuthLevel); their value is the function.json text.
    return str(getattr(value, "value", value))


def _message_as(function: Callable[..., Any], arg: str) -> Literal["message", "str", "bytes"]:
    try:
        annotation = inspect.signature(function, eval_str=True).parameters[arg].annotation
    except (NameError, TypeError, KeyError):
        annotation = inspect.signature(function).parameters[arg].annotation
    if annotation in (str, "str"):
        return "str"
    if annotation in (bytes, "bytes"):
        return "bytes"
    return "message"


def _spec(function: Any, env: Mapping[str, str]) -> FunctionSpec | None:
    name = function.get_function_name()
    trigger = function.get_trigger()
    details = trigger.get_dict_repr() if trigger is not None else {}
    kind = details.get("type")
    if kind not in (HTTP, TIMER, QUEUE):
        log.warning("function %s: trigger type %s is not served by devhost; skipped", name, kind)
        return None
    user_function = function.get_user_function()
    outputs = []
    for binding in function.get_bindings():
        if binding is trigger:
            continue
        out = binding.direction == BindingDirection.OUT.value
        if out and binding.type == "http" and kind == HTTP:
            continue
        if out and binding.type == "queue":
            queue_details = binding.get_dict_repr()
            queue = resolve_settings(queue_details["queueName"], env, f"function {name}")
            connection = queue_details.get("connection")
            outputs.append(OutputQueue(binding.name, _queue_name(queue, name), connection))
            continue
        raise StartupError(
            f"function {name}: binding '{binding.name}' ({binding.type}) is not supported by "
            "devhost (it serves http, timer and queue triggers, and queue outputs)"
        )
    bound = {trigger.name, CONTEXT_ARG, *(o.arg for o in outputs)}
    # The visible signature, as the worker checks it (a decorator may hide the handler's).
    for param in inspect.signature(user_function).parameters.values():
        variadic = param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD)
        if param.name not in bound and param.default is param.empty and not variadic:
            raise StartupError(f"function {name}: parameter '{param.name}' has no binding")
    common: dict[str, Any] = {
        "name": name,
        "trigger": kind,
        "trigger_arg": trigger.name,
        "function": user_function,
        "outputs": tuple(outputs),
        "takes_context": CONTEXT_ARG in inspect.signature(user_function).parameters,
    }
    if kind == HTTP:
        methods = details.get("methods")
        return FunctionSpec(
            **common,
            route=_text(details.get("route") or name),
            methods=tuple(_text(m).upper() for m in methods) if methods else None,
        )
    if kind == TIMER:
        schedule = resolve_settings(_text(details["schedule"]), env, f"function {name} schedule")
        if len(schedule.split()) != 6 or not croniter.is_valid(schedule, second_at_beginning=True):
            raise StartupError(
                f"function {name}: schedule '{schedule}' is not a 6-field NCRONTAB expression "
                "(second minute hour day month day-of-week)"
            )
        return FunctionSpec(
            **common, schedule=schedule, run_on_startup=bool(details.get("runOnStartup"))
        )
    queue = resolve_settings(_text(details["queueName"]), env, f"function {name} queueName")
    return FunctionSpec(
        **common,
        queue=_queue_name(queue, name),
        connection=details.get("connection"),
        message_as=_message_as(user_function, trigger.name),
    )


def _queue_name(queue: str, function: str) -> str:
    if not _QUEUE_NAME.match(queue):
        raise StartupError(
            f"function {function}: '{queue}' is not a queue name (3-63 lowercase letters, "
            "digits and single dashes)"
        )
    return queue


def load_functions(app: Any, host: HostConfig, env: Mapping[str, str]) -> list[FunctionSpec]:
    specs = []
    for function in app.get_functions():
        if host.functions is not None and function.get_function_name() not in host.functions:
            continue
        spec = _spec(function, env)
        if spec is not None:
            specs.append(spec)
    return specs
