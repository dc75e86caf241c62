"""The app's shape: host.json and every function's JSON are what the Functions host accepts."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.peers.processes import ROOT

SCHEMAS = ROOT.parent / "shared" / "schemas"


def schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / name).read_text())  # type: ignore[no-any-return]


def host_json() -> dict[str, Any]:
    return json.loads((ROOT / "host.json").read_text())  # type: ignore[no-any-return]


def test_host_json_validates_against_the_public_schema() -> None:
    jsonschema.validate(host_json(), schema("azure-functions-host.schema.json"))


def test_host_json_sets_what_keysteward_relies_on_explicitly() -> None:
    host = host_json()
    assert host["version"] == "2.0"
    assert host["extensionBundle"] == {
        "id": "Microsoft.Azure.Functions.ExtensionBundle",
        "version": "[4.*, 5.0.0)",
    }
    assert host["functionTimeout"]
    assert host["extensions"]["http"]["routePrefix"] == "api"
    queues = host["extensions"]["queues"]
    for setting in ("batchSize", "visibilityTimeout", "maxDequeueCount", "messageEncoding"):
        assert setting in queues


def test_producers_encode_messages_as_host_json_says() -> None:
    from shared.storage.clients import MESSAGE_ENCODING

    assert host_json()["extensions"]["queues"]["messageEncoding"] == MESSAGE_ENCODING


def test_every_function_json_validates_against_the_public_schema(app_env: dict[str, str]) -> None:
    import os

    os.environ.update({k: v for k, v in app_env.items() if k != "PYTHONPATH"})
    from function_app import app

    validator = function_validator()
    functions = app.get_functions()
    assert functions
    for function in functions:
        document = json.loads(function.get_function_json())
        validator.validate(_as_the_host_reads_it(document))


# Microsoft's own template for an HTTP function (the function.json that `func new` writes).
TEMPLATE = {
    "bindings": [
        {"authLevel": "function", "type": "httpTrigger", "direction": "in", "name": "req",
         "methods": ["get", "post"]},
        {"type": "http", "direction": "out", "name": "$return"},
    ]
}  # fmt: skip


def function_validator() -> jsonschema.Validator:
    """The function.json schema read with draft-06 rules.

    It declares draft-04 but uses draft-06's ``const``; draft-04 ignores that keyword, so several
    ``oneOf`` branches then match any output binding and even Microsoft's own template fails.
    """
    return jsonschema.Draft6Validator(schema("azure-functions-function.schema.json"))


def test_the_function_schema_needs_draft_06_rules() -> None:
    function_schema = schema("azure-functions-function.schema.json")
    assert not jsonschema.Draft4Validator(function_schema).is_valid(TEMPLATE)
    function_validator().validate(TEMPLATE)


def _as_the_host_reads_it(document: dict[str, Any]) -> dict[str, Any]:
    """azure-functions writes enum names upper-case ("IN", "ANONYMOUS", "GET"); the host parses
    them case-insensitively and the schema spells them lower-case. Only those are folded."""
    for binding in document["bindings"]:
        for name in ("direction", "authLevel"):
            if isinstance(binding.get(name), str):
                binding[name] = binding[name].lower()
        if isinstance(binding.get("methods"), list):
            binding["methods"] = [method.lower() for method in binding["methods"]]
    return document


@pytest.mark.parametrize("path", sorted((ROOT / "shared").rglob("*.py")), ids=lambda p: p.name)
def test_shared_never_imports_azure_functions(path: Path) -> None:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        assert not any(n == "azure.functions" or n.startswith("azure.functions.") for n in names)


def test_function_app_only_registers_blueprints() -> None:
    tree = ast.parse((ROOT / "function_app.py").read_text())
    calls = [
        node.func.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
    ]
    assert set(calls) <= {"FunctionApp", "register_functions"}


def test_local_settings_are_ignored_and_an_example_is_committed() -> None:
    assert "local.settings.json" in (ROOT / ".gitignore").read_text().split()
    example = json.loads((ROOT / "local.settings.example.json").read_text())
    assert example["IsEncrypted"] is False
    assert "AzureWebJobsStorage" in example["Values"]
