"""Route templates as the Functions host reads them (ASP.NET Core routing syntax).

Supported: literal segments (matched case-insensitively), ``{name}``, optional ``{name?}``,
defaults ``{name=value}``, catch-all ``{*name}`` (or ``{**name}``), complex segments such as
``{file}.{ext}``, and the inline constraints ``int long alpha bool guid decimal double float
datetime min() max() range() length() minlength() maxlength() required``. ``regex()``
constraints are refused at start-up rather than half-supported.

Among templates matching a path, the most specific wins, as in ASP.NET: literals before
constrained parameters, before plain parameters, before optional ones, before catch-alls.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar
from urllib.parse import unquote

from devhost.errors import StartupError

T = TypeVar("T")
Check = Callable[[str], bool]

_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CONSTRAINT = re.compile(r"^([a-z]+)(?:\((.*)\))?$")


def _integer(value: str, bounds: tuple[int, int]) -> int | None:
    if not re.fullmatch(r"-?\d+", value):
        return None
    number = int(value)
    return number if bounds[0] <= number <= bounds[1] else None


def _number(value: str) -> bool:
    try:
        return math.isfinite(float(value))
    except ValueError:
        return False


def _guid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _datetime(value: str) -> bool:
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _constraint(text: str, template: str) -> Check:
    match = _CONSTRAINT.match(text.strip().lower())
    if match is None:
        raise StartupError(f"route '{template}': constraint '{text}' is not supported")
    name, raw_args = match.groups()
    try:
        args = [int(a) for a in raw_args.split(",")] if raw_args else []
    except ValueError:
        raise StartupError(f"route '{template}': constraint '{text}' needs integers") from None
    simple: dict[str, Check] = {
        "int": lambda v: _integer(v, _INT32) is not None,
        "long": lambda v: _integer(v, _INT64) is not None,
        "alpha": lambda v: re.fullmatch(r"[A-Za-z]+", v) is not None,
        "bool": lambda v: v.lower() in ("true", "false"),
        "guid": _guid,
        "decimal": _number,
        "double": _number,
        "float": _number,
        "datetime": _datetime,
        "required": lambda v: v != "",
    }
    if name in simple and not args:
        return simple[name]
    ranged: dict[str, Callable[[list[int]], Check]] = {
        "min": lambda a: lambda v: (n := _integer(v, _INT64)) is not None and n >= a[0],
        "max": lambda a: lambda v: (n := _integer(v, _INT64)) is not None and n <= a[0],
        "range": lambda a: lambda v: (n := _integer(v, _INT64)) is not None and a[0] <= n <= a[1],
        "minlength": lambda a: lambda v: len(v) >= a[0],
        "maxlength": lambda a: lambda v: len(v) <= a[0],
        "length": lambda a: lambda v: len(v) == a[0] if len(a) == 1 else a[0] <= len(v) <= a[1],
    }
    arity = {"range": (2,), "length": (1, 2)}.get(name, (1,))
    if name in ranged and len(args) in arity:
        return ranged[name](args)
    raise StartupError(f"route '{template}': constraint '{text}' is not supported")


@dataclass(frozen=True)
class Parameter:
    name: str
    optional: bool = False
    catch_all: bool = False
    default: str | None = None
    checks: tuple[Check, ...] = ()


def _parameter(token: str, template: str) -> Parameter:
    catch_all = token.startswith("*")
    token = token.lstrip("*")
    optional = token.endswith("?")
    token = token.removesuffix("?")
    default = None
    if "=" in token:
        token, default = token.split("=", 1)
    name, *constraints = token.split(":")
    if "regex(" in token.lower():
        raise StartupError(f"route '{template}': regex() constraints are not supported")
    if not _NAME.match(name):
        raise StartupError(f"route '{template}': '{name}' is not a parameter name")
    checks = tuple(_constraint(c, template) for c in constraints)
    return Parameter(name, optional or catch_all, catch_all, default, checks)


def _tokens(segment: str, template: str) -> list[str | Parameter]:
    """A segment as literal text and parameters; ``{{``/``}}`` stand for literal braces."""
    parts: list[str | Parameter] = []
    literal = ""
    i = 0
    while i < len(segment):
        two = segment[i : i + 2]
        if two in ("{{", "}}"):
            literal += two[0]
            i += 2
        elif segment[i] == "{":
            end = segment.find("}", i)
            if end < 0:
                raise StartupError(f"route '{template}': unclosed '{{'")
            if literal:
                parts.append(literal)
                literal = ""
            parts.append(_parameter(segment[i + 1 : end], template))
            i = end + 1
        elif segment[i] == "}":
            raise StartupError(f"route '{template}': unmatched '}}'")
        else:
            literal += segment[i]
            i += 1
    if literal:
        parts.append(literal)
    return parts


@dataclass
class RouteTemplate:
    """A parsed template; ``match`` gives the route parameters of a path, or None."""

    text: str
    parameters: list[Parameter] = field(default_factory=list)
    precedence: tuple[int, ...] = ()
    _regex: re.Pattern[str] = field(default=re.compile(""), repr=False)

    @classmethod
    def parse(cls, text: str) -> RouteTemplate:
        route = cls(text)
        segments = [s for s in text.strip().removeprefix("~").strip("/").split("/") if s != ""]
        pattern = ""
        rank: list[int] = []
        optional_seen = False
        for position, segment in enumerate(segments):
            tokens = _tokens(segment, text)
            if len(tokens) == 1 and isinstance(tokens[0], Parameter):
                param = tokens[0]
                group = f"p{len(route.parameters)}"
                route.parameters.append(param)
                if param.catch_all and position != len(segments) - 1:
                    raise StartupError(f"route '{text}': a catch-all must be the last segment")
                if param.optional or param.default is not None:
                    optional_seen = True
                    body = ".*" if param.catch_all else "[^/]+"
                    pattern += f"(?:/(?P<{group}>{body}))?"
                    rank.append(5 if param.catch_all else 4)
                    continue
                if optional_seen:
                    raise StartupError(f"route '{text}': only the last segments can be optional")
                pattern += f"/(?P<{group}>[^/]+)"
                rank.append(2 if param.checks else 3)
                continue
            if optional_seen:
                raise StartupError(f"route '{text}': only the last segments can be optional")
            pattern += "/"
            for token in tokens:
                if isinstance(token, str):
                    pattern += re.escape(token)
                    continue
                if token.optional or token.default is not None:
                    raise StartupError(
                        f"route '{text}': '{token.name}' cannot be optional inside a segment"
                    )
                pattern += f"(?P<p{len(route.parameters)}>[^/]+?)"
                route.parameters.append(token)
            rank.append(0 if all(isinstance(t, str) for t in tokens) else 1)
        names = [p.name.lower() for p in route.parameters]
        if len(set(names)) != len(names):
            raise StartupError(f"route '{text}': a parameter name appears twice")
        route._regex = re.compile(f"^{pattern}$", re.IGNORECASE | re.DOTALL)
        route.precedence = tuple(rank)
        return route

    def match(self, path: str) -> dict[str, str] | None:
        """Parameters of ``path`` (percent-encoded, without the route prefix), or None."""
        canonical = "/" + path.strip("/") if path.strip("/") else ""
        found = self._regex.match(canonical)
        if found is None:
            return None
        values: dict[str, str] = {}
        for index, param in enumerate(self.parameters):
            raw = found.group(f"p{index}")
            if raw is None or (param.catch_all and raw == ""):
                if param.default is not None:
                    values[param.name] = param.default
                continue
            value = unquote(raw)
            if not all(check(value) for check in param.checks):
                return None
            values[param.name] = value
        return values


@dataclass(frozen=True)
class Match(Generic[T]):
    target: T
    route_params: dict[str, str]


@dataclass(frozen=True)
class MethodNotAllowed:
    allow: tuple[str, ...]


class Router(Generic[T]):
    """Templates with their allowed methods (None: any method) and what each route leads to."""

    def __init__(self) -> None:
        self._routes: list[tuple[RouteTemplate, frozenset[str] | None, T]] = []

    def add(self, template: str, methods: Iterable[str] | None, target: T) -> None:
        allowed = frozenset(m.upper() for m in methods) if methods else None
        self._routes.append((RouteTemplate.parse(template), allowed, target))
        self._routes.sort(key=lambda route: route[0].precedence)

    def resolve(self, path: str, method: str) -> Match[T] | MethodNotAllowed | None:
        allow: set[str] = set()
        for template, methods, target in self._routes:
            params = template.match(path)
            if params is None:
                continue
            if methods is None or method.upper() in methods:
                return Match(target, params)
            allow |= methods
        return MethodNotAllowed(tuple(sorted(allow))) if allow else None
