"""Schemathesis fuzzes every operation of openapi.yaml against a running Keysteward.

Generated requests go over real HTTP to the devhost of this module's own world (the ``world``
fixture is module-scoped, so nothing here disturbs another module's data), with the world's
``keys:admin`` key (every scope on ``*``) in ``Authorization``. Each operation is a test of its
own: once with data that fits the spec (``positive``) and, where it has a parameter or a body to
break, once with data that does not (``negative``). Operations on one key, connection or PAT are
fuzzed a second time (``existing``) with their path pinned to rows made for the purpose, so the
generated queries and bodies reach more than the 404 of an id nobody has.

Budget: a fixed Hypothesis seed (``SEED``; the same examples on every run, no example database),
at most ``MAX_EXAMPLES`` examples per test and no deadline: the module takes well under a minute.

Checks (``CHECKS``): no 5xx (``not_a_server_error``), and every answer is one the operation
documents: its status code, Content-Type, headers and body schema. Left out, by design:

- ``negative_data_rejection``: the app ignores query parameters it does not know, and an id
  that breaks its pattern is simply not found, so some "negative" requests rightly get a 2xx.
- ``positive_data_acceptance``: a request that fits the schema can still name an app that is not
  configured or a row that does not exist (400/404/409/410/424 are right answers then).
- ``use_after_free``, ``ensure_resource_availability``, ``ignored_auth`` and the other stateful
  or coverage-phase checks: they need Schemathesis' own runner, not a generated request.

Never sent: ``DELETE /keys/{id}`` or ``POST /keys/{id}/regenerate`` with the admin key's own
id (the rest of the module calls with it); the destructive operations are not pinned. The last
test reads the devhost's log: nothing the fuzzed requests queued failed either.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pytest
import requests
import schemathesis
import yaml
from hypothesis import HealthCheck, Phase, given, reject, seed, settings
from schemathesis import Case, GenerationMode
from schemathesis.checks import CheckFunction, not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from shared.access.key_requests import NewKey
from tests.peers.processes import ROOT
from tests.peers.world import World

SPEC_FILE = ROOT / "openapi.yaml"
SEED = 20261122
MAX_EXAMPLES = 12
METHODS = ("get", "put", "post", "delete", "patch")
CHECKS: list[CheckFunction] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
PD, USER = "pagerduty-incidents", "fuzz@contoso.com"
ENTRA, PAT_USER = "entra-demo", "fuzz-pat"
# operationId -> what its path is pinned to in the "existing" tests (see the ``pinned`` fixture).
PINNED = {
    "get_key": "key",
    "update_key": "key",
    "regenerate_key": "key",
    "get_connection": "connection",
    "get_token": "connection",
    "list_pats": "pat_owner",
    "create_pat": "pat_owner",
    "get_pat": "pat",
    "extend_pat": "pat",
    "get_pat_secret": "pat",
    "rotate_pat": "pat",
}


@dataclass(frozen=True)
class Target:
    method: str
    path: str
    mode: GenerationMode
    pin: str | None  # an operationId of PINNED: the path names existing rows


def _targets() -> list[Any]:
    """A pytest param per operation, generation mode and (where pinned) path kind."""
    document = yaml.safe_load(SPEC_FILE.read_text(encoding="utf-8"))
    found = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            name = operation["operationId"]
            has_body = "requestBody" in operation
            query = any(p.get("in") == "query" for p in operation.get("parameters", []))
            breakable = has_body or query or bool(item.get("parameters"))
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                negative = mode is GenerationMode.NEGATIVE
                if not negative or breakable:
                    target = Target(method, path, mode, None)
                    found.append(pytest.param(target, id=f"{name}-{mode.value}"))
                # Pinned, only the query and the body are left to break.
                if name in PINNED and (not negative or has_body or query):
                    target = Target(method, path, mode, name)
                    found.append(pytest.param(target, id=f"{name}-{mode.value}-existing"))
    return found


@pytest.fixture(scope="module")
def schema() -> schemathesis.BaseSchema:
    # An explicit default Config: no schemathesis.toml found on disk changes what runs.
    return schemathesis.openapi.from_path(SPEC_FILE, config=schemathesis.Config())


@pytest.fixture(scope="module")
def pinned(world: World) -> dict[str, dict[str, str]]:
    """Path parameters naming rows that exist: a spare key, a PagerDuty connection, an Entra
    connection with a managed PAT. By operationId."""
    spare, _ = world.keys.create(NewKey(name="fuzz-spare", scopes=["tokens:read"],
                                        resources=["*"]), actor="test")  # fmt: skip
    assert world.connect(PD, USER).status_code == 200
    assert world.connect(ENTRA, PAT_USER).status_code == 200
    new_pat = {"display_name": "fuzz", "scope": "vso.code", "lifetime_days": 30}
    created = world.call("POST", f"connections/{ENTRA}/{PAT_USER}/pats", json=new_pat)
    assert created.status_code == 201, created.text
    rows = {
        "key": {"id": spare.id},
        "connection": {"app": PD, "user_id": USER},
        "pat_owner": {"app": ENTRA, "user_id": PAT_USER},
        "pat": {"id": str(created.json()["id"])},
    }
    return {name: rows[kind] for name, kind in PINNED.items()}


@pytest.mark.slow
@pytest.mark.parametrize("target", _targets())
def test_fuzz(
    world: World,
    schema: schemathesis.BaseSchema,
    pinned: dict[str, dict[str, str]],
    target: Target,
) -> None:
    operation = schema[target.path][target.method]
    base_url = world.api("").rstrip("/")
    admin_id = world.admin_key.split("_")[1]
    # Connection: close: a kept-alive devhost connection costs ~40 ms a request (Nagle).
    headers = {"Authorization": f"Bearer {world.admin_key}", "Connection": "close"}
    path_parameters = pinned[target.pin] if target.pin else None
    session = requests.Session()

    @settings(
        max_examples=MAX_EXAMPLES,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @seed(SEED)
    @given(case=operation.as_strategy(generation_mode=target.mode, path_parameters=path_parameters))
    def fuzz(case: Case[Any]) -> None:
        if (case.path_parameters or {}).get("id") == admin_id:
            reject()  # the key this module calls with stays usable
        case.call_and_validate(
            base_url=base_url, session=session, headers=headers, checks=CHECKS, timeout=30
        )

    try:
        fuzz()
    finally:
        session.close()


@pytest.mark.slow
def test_no_function_failed_while_fuzzing(world: World) -> None:
    """Runs last: what the fuzzed requests queued (revocations, PAT rotations) ran without an
    exception, and no HTTP call was answered 5xx, as the devhost's log records."""
    assert world.call("GET", "health").status_code == 200
    log = world.devhost.log.read_text(encoding="utf-8", errors="replace")
    assert re.findall(r"\(http \w+ \S+ -> 5\d\d\)", log) == []
    assert re.findall(r".* failed \((?:http|queue) .*", log) == []
