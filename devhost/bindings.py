"""Arguments for a user function and what its queue output bindings produced.

Output values follow the Python worker's queue converter: a ``str``, ``bytes``, a
``QueueMessage`` (its body), or a list of those, each becoming one message in the host's
``messageEncoding``. Outputs are sent only after the function returned without raising.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import azure.functions as func
from azure.functions.queue import QueueMessage

from devhost.loader import FunctionSpec
from shared.storage.clients import MESSAGE_ENCODING, decode_message, encode_message

T = TypeVar("T")


class Out(func.Out[T], Generic[T]):
    """What the worker passes for a ``func.Out[...]`` parameter: a box the function fills."""

    def __init__(self) -> None:
        self._value: T | None = None

    def set(self, val: T) -> None:
        self._value = val

    def get(self) -> T:
        return self._value  # type: ignore[return-value]  # unset reads as None, as in the worker


@dataclass(frozen=True)
class Context:
    """The ``context`` argument: what a function can ask about its own invocation."""

    invocation_id: str
    function_name: str
    function_directory: str
    thread_local_storage: threading.local = field(default_factory=threading.local)
    trace_context: None = None
    retry_context: None = None


def decode_body(content: str, encoding: str) -> bytes:
    """A received message's body; raises ``ValueError`` when it is not in ``encoding``."""
    if encoding == MESSAGE_ENCODING:
        return decode_message(content)
    if encoding == "none":
        return content.encode("utf-8")
    return base64.b64decode(content.encode("ascii"), validate=True)


def encode_body(value: str | bytes, encoding: str) -> str:
    if encoding == "none":
        return value.decode("utf-8") if isinstance(value, bytes) else value
    if isinstance(value, str):
        if encoding == MESSAGE_ENCODING:
            return encode_message(value)
        value = value.encode("utf-8")
    # Raw bytes need not be text; base64 carries them as they are.
    return base64.b64encode(value).decode("ascii")


def _items(value: object, function: str, arg: str) -> Iterable[str | bytes]:
    if value is None:
        return []
    if isinstance(value, str | bytes):
        return [value]
    if isinstance(value, func.QueueMessage):
        return [value.get_body()]
    if isinstance(value, list | tuple):
        return [item for element in value for item in _items(element, function, arg)]
    raise TypeError(
        f"function {function}: output '{arg}' got a {type(value).__name__}; "
        "expected str, bytes, QueueMessage or a list of them"
    )


@dataclass
class Invocation:
    """One call's arguments, and after it returned, the messages its outputs hold."""

    spec: FunctionSpec
    trigger_value: object
    context: Context
    outs: dict[str, Out[Any]] = field(default_factory=dict)

    def arguments(self) -> dict[str, object]:
        args: dict[str, object] = {self.spec.trigger_arg: self.trigger_value}
        for output in self.spec.outputs:
            if output.arg != "$return":
                self.outs[output.arg] = Out()
                args[output.arg] = self.outs[output.arg]
        if self.spec.takes_context:
            args["context"] = self.context
        return args

    def messages(self, returned: object, encoding: str) -> list[tuple[str | None, str, str]]:
        """(connection, queue, encoded content) for each message the outputs hold."""
        sends = []
        for output in self.spec.outputs:
            value = returned if output.arg == "$return" else self.outs[output.arg].get()
            for item in _items(value, self.spec.name, output.arg):
                sends.append((output.connection, output.queue, encode_body(item, encoding)))
        return sends


def function_message(**fields: object) -> QueueMessage:
    """The worker's QueueMessage; its constructor is untyped (and ``func.QueueMessage``'s
    rejects ``dequeue_count``)."""
    return QueueMessage(**fields)  # type: ignore[no-untyped-call]


def queue_argument(spec: FunctionSpec, message: QueueMessage) -> object:
    """The trigger argument for ``message``: the message, or its body if annotated str/bytes."""
    if spec.message_as == "str":
        return message.get_body().decode("utf-8")
    if spec.message_as == "bytes":
        return message.get_body()
    return message
