"""openapi.yaml describes exactly the HTTP API that function_app.py registers.

Paths in the spec are written **without** the route prefix: the servers end in ``/api`` (host.json's
``routePrefix``), so the function route ``connections/{app}/{user_id}`` is the spec path
``/connections/{app}/{user_id}``. Route templates use the ASP.NET Core syntax of the Functions host;
``{id}`` is the same in OpenAPI, and inline constraints, defaults, ``?`` and catch-all stars
(``{id:int}``, ``{id=1}``, ``{id?}``, ``{*rest}``) are dropped before comparing.

What the code says is read from the code: the registered routes and function names from the app,
the scope of each operation from its ``@authorized(...)`` decorator, the accepted body fields from
its ``read_json(req, allowed=...)`` call. The last test drives every operation on a running
Keysteward (devhost with real peers) and checks each answer against the spec.
"""

from __future__ import annotations

import ast
import copy
import importlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import requests
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from shared.access.key_requests import SCOPES
from shared.foundation.version import VERSION
from tests.peers.processes import ROOT
from tests.peers.world import RETURN_URL, World

SPEC_FILE = ROOT / "openapi.yaml"
FUNCTIONS = ROOT / "functions"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
ERROR_REF = "#/components/schemas/Error"
SECRET_PROPERTIES = ("secret", "key", "access_token")
PUBLIC_OPERATIONS = {"health", "open_connect_link", "oauth_callback"}
BROWSER_OPERATIONS = {"open_connect_link", "oauth_callback"}
# JSON responses of 4xx/5xx that are deliberately not the error body.
NOT_ERROR_BODIES = {("health", "503")}  # the health document, status "degraded"
BASE = "urn:keysteward:openapi"
_TEMPLATE_PARAMETER = re.compile(r"\{\*{0,2}([A-Za-z_][A-Za-z0-9_]*)[^}]*\}")
_SPEC_PARAMETER = re.compile(r"\{([^}]+)\}")

Json = dict[str, Any]


@dataclass(frozen=True)
class Route:
    method: str  # upper case
    path: str  # "/" + the normalised route template, as in the spec
    name: str  # the Python function's name


def spec_path(route: str) -> str:
    """The spec path of a function route: ``keys/{id:int}`` -> ``/keys/{id}``."""
    return "/" + _TEMPLATE_PARAMETER.sub(r"{\1}", route.strip("/"))


def test_route_templates_are_normalised_as_the_host_reads_them() -> None:
    assert spec_path("health") == "/health"
    assert spec_path("connections/{app}/{user_id}/token") == "/connections/{app}/{user_id}/token"
    template = "a/{id:int}/{b:length(3,5)}/{c?}/{d=x}/{*rest}"
    assert spec_path(template) == "/a/{id}/{b}/{c}/{d}/{rest}"


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spec() -> Json:
    document = yaml.safe_load(SPEC_FILE.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def routes(app_env: dict[str, str]) -> list[Route]:
    """Every HTTP trigger the app registers (importing it reads and checks the settings)."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in app_env.items():
            if name != "PYTHONPATH":
                patch.setenv(name, value)
        from function_app import app

        # get_functions() remembers the names it returned and refuses them on a second call in
        # the same process (tests/test_layout.py calls it too): give it a clean slate, then put
        # back what it had.
        seen = app.functions_bindings
        app.functions_bindings = None
        try:
            functions = app.get_functions()
        finally:
            app.functions_bindings = seen
    found = []
    for function in functions:
        trigger = function.get_trigger()
        assert trigger is not None, function.get_function_name()
        binding = trigger.get_dict_repr()
        if binding.get("type") != "httpTrigger":
            continue
        methods = binding.get("methods")
        name = function.get_user_function().__name__
        # Without methods a function answers every method: it could not be described exactly.
        assert methods, f"{name} does not declare its HTTP methods"
        route = str(binding.get("route") or function.get_function_name())
        for method in methods:
            verb = str(getattr(method, "value", method)).upper()
            found.append(Route(verb, spec_path(route), name))
    assert found
    return found


@pytest.fixture(scope="module")
def operations(spec: Json) -> dict[tuple[str, str], Json]:
    """(METHOD, path) -> the operation object."""
    return {
        (method.upper(), path): operation
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    }


@pytest.fixture(scope="module")
def by_name(spec: Json) -> dict[str, tuple[str, str, Json]]:
    """operationId -> (METHOD, path, operation)."""
    return {
        operation["operationId"]: (method.upper(), path, operation)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    }


# -- reading the spec -------------------------------------------------------------------------


def pointer(document: Any, ref: str) -> Any:
    """The node a local ``#/...`` reference names."""
    assert ref.startswith("#/"), f"only local references are used: {ref}"
    node = document
    for part in ref[2:].split("/"):
        key = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict), f"{ref} does not resolve"
        assert key in node, f"{ref} does not resolve"
        node = node[key]
    return node


def resolve(document: Json, node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        node = pointer(document, node["$ref"])
    return node


def parameters(spec: Json, path: str, method: str) -> list[Json]:
    """The operation's effective parameters: the path item's, overridden by the operation's."""
    item = spec["paths"][path]
    merged: dict[tuple[str, str], Json] = {}
    for raw in [*item.get("parameters", []), *item[method.lower()].get("parameters", [])]:
        parameter = resolve(spec, raw)
        merged[(parameter["name"], parameter["in"])] = parameter
    return list(merged.values())


def is_secured(spec: Json, operation: Json) -> bool:
    # An operation's own security replaces the document's; [] makes it public.
    requirements: list[Json] = (
        operation["security"] if "security" in operation else spec["security"]
    )
    return any(requirement for requirement in requirements)


def walk(node: Any, where: str = "#") -> Iterator[tuple[str, Any]]:
    yield where, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, f"{where}/{index}")


def schema_objects(spec: Json) -> Iterator[tuple[str, Json]]:
    """Every top-level Schema Object: components, parameters, headers and media types."""
    for name, schema in spec["components"]["schemas"].items():
        yield f"#/components/schemas/{name}", schema
    for where, node in walk({k: v for k, v in spec.items() if k != "components"}):
        if isinstance(node, dict) and isinstance(node.get("schema"), dict):
            yield f"{where}/schema", node["schema"]
    for section in ("parameters", "headers", "responses", "requestBodies"):
        for where, node in walk(spec["components"].get(section, {}), f"#/components/{section}"):
            if isinstance(node, dict) and isinstance(node.get("schema"), dict):
                yield f"{where}/schema", node["schema"]


def absolute_refs(node: Any) -> Any:
    """A copy where ``#/...`` references name the spec's registry URI (for jsonschema)."""
    if isinstance(node, dict):
        return {
            key: f"{BASE}{value}"
            if key == "$ref" and isinstance(value, str) and value.startswith("#")
            else absolute_refs(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [absolute_refs(value) for value in node]
    return node


def _date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    return datetime.fromisoformat(value.replace("Z", "+00:00")).tzinfo is not None


def _uri(value: object) -> bool:
    if not isinstance(value, str):
        return True
    parts = urlsplit(value)
    return bool(parts.scheme and parts.netloc)


# jsonschema checks no format without optional packages: these two, the spec's, are checked here.
FORMATS = jsonschema.FormatChecker(formats=())
FORMATS.checks("date-time", raises=ValueError)(_date_time)
FORMATS.checks("uri")(_uri)


class Schemas:
    """Validates instances against the spec's schemas, references and formats included."""

    def __init__(self, spec: Json) -> None:
        self.spec = spec
        self.absolute = absolute_refs(copy.deepcopy(spec))
        resource: Resource[Any] = DRAFT202012.create_resource(self.absolute)
        self.registry: Registry[Any] = Registry().with_resource(BASE, resource)

    def errors(self, instance: Any, schema: Json) -> list[str]:
        validator = jsonschema.Draft202012Validator(
            absolute_refs(schema), registry=self.registry, format_checker=FORMATS
        )
        return [
            f"{'/'.join(map(str, e.absolute_path)) or '(body)'}: {e.message}"
            for e in validator.iter_errors(instance)
        ]

    def undocumented(self, instance: Any, schema: Json, where: str = "body") -> list[str]:
        """Keys the code returns that the schema does not describe (the schemas stay open)."""
        schema = resolve(self.spec, schema)
        for combinator in ("oneOf", "anyOf"):
            if combinator in schema:
                branch = next(
                    (b for b in schema[combinator] if not self.errors(instance, b)),
                    schema[combinator][0],
                )
                return self.undocumented(instance, branch, where)
        if isinstance(instance, list) and "items" in schema:
            return [
                problem
                for index, item in enumerate(instance)
                for problem in self.undocumented(item, schema["items"], f"{where}[{index}]")
            ]
        if not isinstance(instance, dict):
            return []
        properties = self._properties(schema)
        extra = schema.get("additionalProperties")
        problems = []
        for key, value in instance.items():
            if key in properties:
                problems += self.undocumented(value, properties[key], f"{where}.{key}")
            elif isinstance(extra, dict):
                problems += self.undocumented(value, extra, f"{where}.{key}")
            elif extra is not True:
                problems.append(f"{where}.{key}")
        return problems

    def _properties(self, schema: Json) -> Json:
        schema = resolve(self.spec, schema)
        properties = dict(schema.get("properties", {}))
        for branch in schema.get("allOf", []):
            properties.update(self._properties(branch))
        return properties


# -- the spec itself --------------------------------------------------------------------------


def test_the_spec_is_openapi_3_1_served_under_the_route_prefix(spec: Json) -> None:
    assert re.fullmatch(r"3\.1\.\d+", str(spec["openapi"]))
    assert spec["info"]["title"] == "Keysteward"
    assert spec["info"]["version"] == VERSION
    prefix = json.loads((ROOT / "host.json").read_text())["extensions"]["http"]["routePrefix"]
    urls = [server["url"] for server in spec["servers"]]
    assert urls == [f"http://127.0.0.1:7071/{prefix}", f"/{prefix}"]
    for path in spec["paths"]:
        assert path.startswith("/"), path
        assert not path.startswith(f"/{prefix}/"), f"{path}: the prefix is in the servers"
    for key in spec:
        assert key in {"openapi", "info", "servers", "security", "tags", "paths", "components"}


def test_every_reference_resolves(spec: Json) -> None:
    refs = [node["$ref"] for _, node in walk(spec) if isinstance(node, dict) and "$ref" in node]
    assert len(refs) > 100
    for ref in refs:
        pointer(spec, ref)


def test_every_schema_is_a_valid_json_schema_2020_12(spec: Json) -> None:
    found = list(schema_objects(spec))
    assert len(found) > len(spec["components"]["schemas"])
    for where, schema in found:
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            pytest.fail(f"{where}: {exc.message}")


def test_every_example_validates_against_its_schema(spec: Json) -> None:
    schemas = Schemas(spec)
    checked = 0
    for where, node in walk(spec):
        if isinstance(node, dict) and "example" in node and isinstance(node.get("schema"), dict):
            assert not schemas.errors(node["example"], node["schema"]), where
            checked += 1
    assert checked >= 10


def test_operation_structure(spec: Json, operations: dict[tuple[str, str], Json]) -> None:
    ids = [operation["operationId"] for operation in operations.values()]
    assert len(ids) == len(set(ids)), "operationIds are unique"
    tags = {tag["name"] for tag in spec["tags"]}
    for (method, path), operation in operations.items():
        where = f"{method} {path}"
        assert operation.get("summary"), where
        assert operation.get("description"), where
        assert operation.get("tags"), where
        assert set(operation["tags"]) <= tags, where
        for status in operation["responses"]:
            assert re.fullmatch(r"[1-5]\d\d", str(status)), f"{where}: {status!r}"


# -- the spec against the code ----------------------------------------------------------------


def test_every_registered_route_is_in_the_spec_and_the_reverse(
    routes: list[Route], operations: dict[tuple[str, str], Json]
) -> None:
    registered = {(route.method, route.path) for route in routes}
    assert len(registered) == len(routes), "a method and route registered twice"
    described = set(operations)
    assert not registered - described, f"routes missing from openapi.yaml: {registered - described}"
    assert not described - registered, f"operations no function serves: {described - registered}"


def test_every_operation_id_is_the_python_function_name(
    routes: list[Route], operations: dict[tuple[str, str], Json]
) -> None:
    for route in routes:
        operation = operations[(route.method, route.path)]
        assert operation["operationId"] == route.name, f"{route.method} {route.path}"


def test_every_path_parameter_is_declared_and_required(
    spec: Json, operations: dict[tuple[str, str], Json]
) -> None:
    for method, path in operations:
        in_path = set(_SPEC_PARAMETER.findall(path))
        declared = [p for p in parameters(spec, path, method) if p["in"] == "path"]
        assert {p["name"] for p in declared} == in_path, f"{method} {path}"
        for parameter in declared:
            assert parameter["required"] is True, f"{method} {path}: {parameter['name']}"
            assert "schema" in parameter, f"{method} {path}: {parameter['name']}"


def scopes_in_code() -> dict[str, str | None]:
    """Each HTTP function's name -> the scope of its ``@authorized(...)``, None when public."""
    found: dict[str, str | None] = {}
    for source in sorted(FUNCTIONS.glob("*.py")):
        module = importlib.import_module(f"functions.{source.stem}")
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.FunctionDef):
                continue
            decorators = [d for d in node.decorator_list if isinstance(d, ast.Call)]
            if not any(_called(d) == "route" for d in decorators):
                continue
            scope = None
            for decorator in decorators:
                if _called(decorator) == "authorized":
                    scope = _value(module, decorator.args[0])
            found[node.name] = scope
    return found


def body_fields_in_code() -> dict[str, set[str] | None]:
    """Each function that reads a JSON body -> its ``allowed`` fields (None: not restricted)."""
    found: dict[str, set[str] | None] = {}
    for source in sorted(FUNCTIONS.glob("*.py")):
        module = importlib.import_module(f"functions.{source.stem}")
        for function in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if not isinstance(function, ast.FunctionDef):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.Call) and _called(node) == "read_json":
                    allowed = [k.value for k in node.keywords if k.arg == "allowed"]
                    fields = set(_value(module, allowed[0])) if allowed else None
                    found.setdefault(function.name, fields)
                parsed = _parsed_body(module, node)
                if parsed is not None:
                    found[function.name] = parsed
    return found


def _parsed_body(module: Any, node: ast.AST) -> set[str] | None:
    """``Request.parse(read_json(req))``: the body is the request object's ``FIELDS``."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
        return None
    inner = node.args[0] if node.args else None
    if node.func.attr != "parse" or not isinstance(inner, ast.Call):
        return None
    if _called(inner) != "read_json" or not isinstance(node.func.value, ast.Name):
        return None
    return set(getattr(module, node.func.value.id).FIELDS)


def _called(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def _value(module: Any, node: ast.expr) -> Any:
    """A decorator's or keyword's argument: a literal, or a module-level name."""
    if isinstance(node, ast.Name):
        return getattr(module, node.id)
    return ast.literal_eval(node)


def test_the_code_is_read_as_expected(routes: list[Route]) -> None:
    scopes = scopes_in_code()
    assert set(scopes) == {route.name for route in routes}
    assert {name for name, scope in scopes.items() if scope is None} == PUBLIC_OPERATIONS
    bodies = body_fields_in_code()
    assert bodies["create_key"] == {"name", "owner", "scopes", "resources", "expires_in_days"}
    assert bodies["update_key"] == {"name", "resources"}
    assert bodies["create_pat"] == {"organization", "display_name", "scope", "lifetime_days",
                                    "all_orgs", "rotate_before_days", "auto_rotate"}  # fmt: skip


def test_security_and_scopes_follow_the_authorized_decorators(
    spec: Json, by_name: dict[str, tuple[str, str, Json]]
) -> None:
    schemes = spec["components"]["securitySchemes"]
    for requirement in spec["security"]:
        for scheme in requirement:
            assert schemes[scheme]["type"] == "http"
            assert schemes[scheme]["scheme"].lower() == "bearer"
    for name, scope in scopes_in_code().items():
        _, _, operation = by_name[name]
        if scope is None:
            assert operation.get("security") == [], f"{name} is public"
            assert "x-keysteward-scope" not in operation, name
            continue
        assert is_secured(spec, operation), f"{name} needs an API key"
        assert scope in SCOPES
        assert operation.get("x-keysteward-scope") == scope, name
        assert f"`{scope}`" in operation["description"], f"{name}: the scope in its description"


def test_every_secured_operation_answers_401_and_403(
    spec: Json, operations: dict[tuple[str, str], Json]
) -> None:
    secured = [key for key, operation in operations.items() if is_secured(spec, operation)]
    assert len(secured) == len(operations) - len(PUBLIC_OPERATIONS)
    for key in secured:
        responses = operations[key]["responses"]
        assert "401" in responses, key
        assert "403" in responses, key


def test_operations_with_a_body_or_validated_parameters_answer_400(
    spec: Json, operations: dict[tuple[str, str], Json]
) -> None:
    for (method, path), operation in operations.items():
        # Every query parameter is parsed or checked by the code (or, for the OAuth callback,
        # by the state check): each can be refused.
        query = [p for p in parameters(spec, path, method) if p["in"] == "query"]
        if "requestBody" in operation or query:
            assert "400" in operation["responses"], f"{method} {path}"


def test_request_bodies_are_what_the_code_reads(
    spec: Json, by_name: dict[str, tuple[str, str, Json]]
) -> None:
    bodies = body_fields_in_code()
    for name, (method, path, operation) in by_name.items():
        where = f"{name} ({method} {path})"
        if name not in bodies:
            assert "requestBody" not in operation, f"{where} reads no body"
            continue
        body = operation["requestBody"]
        assert body["required"] is True, where
        assert set(body["content"]) == {"application/json"}, where
        schema = resolve(spec, body["content"]["application/json"]["schema"])
        assert schema["type"] == "object", where
        # read_json refuses unknown fields (and update_key's service refuses them too).
        assert schema["additionalProperties"] is False, where
        allowed = bodies[name]
        if allowed is not None:
            assert set(schema["properties"]) == allowed, where


def test_every_json_error_is_the_error_body(
    spec: Json, by_name: dict[str, tuple[str, str, Json]]
) -> None:
    error = spec["components"]["schemas"]["Error"]
    assert error["required"] == ["error", "message"]
    assert {k: v["type"] for k, v in error["properties"].items()} == {
        "error": "string",
        "message": "string",
    }
    for name, (method, path, operation) in by_name.items():
        for status, raw in operation["responses"].items():
            if not str(status).startswith(("4", "5")):
                continue
            where = f"{name} ({method} {path}) {status}"
            content = resolve(spec, raw).get("content", {})
            if name in BROWSER_OPERATIONS:
                assert set(content) == {"text/html"}, f"{where}: browsers get pages"
                continue
            assert set(content) == {"application/json"}, where
            if (name, str(status)) in NOT_ERROR_BODIES:
                continue
            assert content["application/json"]["schema"] == {"$ref": ERROR_REF}, where


def test_secrets_in_responses_are_marked(spec: Json) -> None:
    marked = []
    for where, node in walk(spec["components"]["schemas"], "#/components/schemas"):
        if not (isinstance(node, dict) and isinstance(node.get("properties"), dict)):
            continue
        for name in SECRET_PROPERTIES:
            if name in node["properties"]:
                secret = node["properties"][name]
                assert secret.get("format") == "password", f"{where}/{name}"
                assert secret.get("writeOnly") is False, f"{where}/{name}"
                assert secret.get("description"), f"{where}/{name}"
                marked.append(f"{where}/properties/{name}")
    assert len(marked) == 4
    schemas = spec["components"]["schemas"]
    for shown_once in ("ApiKeyWithSecret", "ManagedPatWithSecret"):
        descriptions = [
            prop["description"]
            for branch in schemas[shown_once]["allOf"]
            for prop in branch.get("properties", {}).values()
        ]
        assert any("shown once" in d for d in descriptions), shown_once


# -- the spec against the running app ---------------------------------------------------------


class Contract:
    """Calls Keysteward and checks every answer against the operation's documented responses."""

    def __init__(self, spec: Json, by_name: dict[str, tuple[str, str, Json]], world: World):
        self.spec = spec
        self.by_name = by_name
        self.world = world
        self.schemas = Schemas(spec)
        self.seen: dict[str, set[str]] = {}

    def call(
        self,
        name: str,
        expected: int,
        key: str | None = "admin",
        params: dict[str, str] | None = None,
        path_params: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        method, path, _ = self.by_name[name]
        url = self.world.api(path.lstrip("/").format(**(path_params or {})))
        headers = {"Connection": "close"}
        if key is not None:
            headers["Authorization"] = f"Bearer {self.world.admin_key if key == 'admin' else key}"
        response = self.world.http.request(
            method, url, params=params, headers=headers, allow_redirects=False, timeout=60,
            **kwargs,
        )  # fmt: skip
        assert response.status_code == expected, f"{name}: {response.status_code} {response.text}"
        self.check(name, response)
        return response

    def check(self, name: str, response: requests.Response) -> None:
        _, _, operation = self.by_name[name]
        status = str(response.status_code)
        where = f"{name} {status}"
        assert status in operation["responses"], f"{where} is not documented"
        self.seen.setdefault(name, set()).add(status)
        documented = resolve(self.spec, operation["responses"][status])
        for header, raw in documented.get("headers", {}).items():
            if resolve(self.spec, raw).get("required"):
                assert header in response.headers, f"{where}: header {header}"
        content = documented.get("content", {})
        if not content:
            assert not response.content, f"{where} has no body"
            return
        media = response.headers.get("Content-Type", "").split(";")[0].strip()
        assert media in content, f"{where}: {media}"
        if media != "application/json":
            return
        body = response.json()
        schema = content[media]["schema"]
        assert not self.schemas.errors(body, schema), (where, self.schemas.errors(body, schema))
        assert not self.schemas.undocumented(body, schema), (where, body)


@pytest.fixture(scope="module")
def contract(spec: Json, by_name: dict[str, tuple[str, str, Json]], world: World) -> Contract:
    return Contract(spec, by_name, world)


def test_every_operation_answers_as_documented(contract: Contract, world: World) -> None:
    c = contract
    pd, user, other = "pagerduty-incidents", "spec@contoso.com", "spec-2@contoso.com"
    c.call("health", 200, key=None)

    # Keys, and the 401/403/400 every secured operation documents.
    c.call("list_keys", 401, key=None)
    c.call("list_keys", 403, key=world.key(["tokens:read"], ["*"]))
    c.call("create_key", 400, json={"name": "", "scopes": ["tokens:read"], "resources": ["*"]})
    created = c.call("create_key", 201, json={
        "name": "spec", "owner": "qa", "scopes": ["tokens:read"], "resources": [f"{pd}/*"],
        "expires_in_days": 30,
    }).json()  # fmt: skip
    key_id = {"id": created["id"]}
    c.call("list_keys", 200)
    c.call("get_key", 200, path_params=key_id)
    c.call("update_key", 200, path_params=key_id, json={"name": "renamed"})
    c.call("update_key", 400, path_params=key_id, json={"scopes": ["keys:admin"]})
    c.call("regenerate_key", 200, path_params=key_id)
    c.call("delete_key", 204, path_params=key_id)
    c.call("get_key", 404, path_params=key_id)

    # The connect flow, API then browser.
    c.call("create_connect_session", 400, json={"app": "no-such-app", "user_id": user})
    link = c.call(
        "create_connect_session", 201, json={"app": pd, "user_id": user, "return_to": RETURN_URL}
    ).json()["url"]
    c.call("open_connect_link", 404, key=None, path_params={"session": "not-a-link"})
    authorize = c.call("open_connect_link", 302, key=None,
                       path_params={"session": link.rsplit("/", 1)[1]})  # fmt: skip
    callback = world.consent(pd, authorize.headers["Location"], user)
    assert urlsplit(callback).path == urlsplit(world.api(f"oauth/{pd}/callback")).path
    finished = world.http.get(callback, allow_redirects=False, timeout=30)
    c.check("oauth_callback", finished)
    assert finished.status_code == 302
    assert finished.headers["Location"].startswith(RETURN_URL)
    c.call("oauth_callback", 400, key=None, path_params={"app": pd}, params={"code": "x"})
    assert world.connect(pd, other).status_code == 200

    # Connections and tokens.
    c.call("list_connections", 200, params={"app": pd})
    c.call("list_connections", 400, params={"status": "sleeping"})
    connection = {"app": pd, "user_id": user}
    c.call("get_connection", 200, path_params=connection)
    c.call("get_connection", 404, path_params={"app": pd, "user_id": "nobody@contoso.com"})
    c.call("get_token", 200, path_params=connection, params={"min_ttl": "60"})
    c.call("get_token", 400, path_params=connection, params={"min_ttl": "soon"})
    never_served = {"access_token_sha256": "0" * 64}
    c.call("token_rejected", 200, path_params=connection, json=never_served)
    c.call("token_rejected", 400, path_params=connection, json={"access_token_sha256": "x"})

    # Managed PATs (an entra connection, the Azure DevOps PAT API fake).
    entra, pat_user = "entra-demo", "spec-pat"
    assert world.connect(entra, pat_user).status_code == 200
    owner = {"app": entra, "user_id": pat_user}
    c.call("create_pat", 400, path_params=owner, json={"display_name": "", "scope": "vso.code"})
    new_pat = {"display_name": "spec", "scope": "vso.code", "lifetime_days": 30}
    pat = c.call("create_pat", 201, path_params=owner, json=new_pat).json()
    pat_id = {"id": pat["id"]}
    c.call("list_pats", 200, path_params=owner)
    c.call("get_pat", 200, path_params=pat_id)
    c.call("extend_pat", 400, path_params=pat_id, json={"extend_days": 0})
    c.call("extend_pat", 200, path_params=pat_id, json={"extend_days": 10})
    c.call("get_pat_secret", 200, path_params=pat_id)
    c.call("rotate_pat", 202, path_params=pat_id)
    c.call("revoke_pat", 200, path_params=pat_id)
    c.call("get_pat_secret", 410, path_params=pat_id)
    c.call("get_pat", 404, path_params={"id": "pat-00000000000000000000"})

    # Revocation, queued and direct.
    c.call("request_revocation", 400, json={"reason": "nothing to revoke"})
    accepted = c.call("request_revocation", 202,
                      json={"app": pd, "user_id": other, "reason": "spec"}).json()  # fmt: skip
    c.call("get_revocation", 200, path_params={"id": accepted["id"]})
    c.call("get_revocation", 404, path_params={"id": "no-such-request"})
    c.call("list_revocation_failures", 200)
    c.call("revoke_connection", 200, path_params=connection)
    c.call("get_token", 410, path_params=connection)

    c.call("read_audit", 200, params={"limit": "50"})
    c.call("read_audit", 400, params={"limit": "0"})

    assert set(c.seen) == set(c.by_name), f"not exercised: {set(c.by_name) - set(c.seen)}"
