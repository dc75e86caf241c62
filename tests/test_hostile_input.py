"""Hostile input over real HTTP to the devhost: oversized, malformed and mistyped bodies, huge
headers, path traversal, OData-injection strings and control characters in ids and query
parameters.

Every answer must be a 4xx (never a 5xx) with the JSON error body ``{"error", "message"}`` (HTML
pages for the two browser steps), and never another resource: two users are connected first,
and a key that covers only one of them must never see the other's connection, however its ids
and filters are spelled.

Requests whose target must reach the devhost exactly as written (``../``, ``%2e%2e%2f``, control
characters) go through ``http.client``, which does not normalise paths as requests/urllib3 do.
The last test reads the devhost's log: no request of this module was answered 5xx.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
import requests

from tests.peers.world import World

PD = "pagerduty-incidents"
ALICE = "alice-hostile@contoso.com"
BOB = "bob-hostile@contoso.com"
MAX_BODY_BYTES = 64 * 1024  # the documented limit of a JSON body (openapi.yaml: 413)
DEVHOST_LIMIT = 1024 * 1024  # devhost's --max-body-bytes default
JSON_TYPE = "application/json"

# The operations that read a JSON body, as (method, path) with ids that need no stored row: each
# reads its body before looking anything up. (PATCH /pats/{id} looks the PAT up first.)
BODY_OPERATIONS = [
    ("POST", "keys"),
    ("PATCH", "keys/aaaaaaaaaaaa"),
    ("POST", "connect-sessions"),
    ("POST", f"connections/entra-demo/{ALICE}/pats"),
    ("POST", "revocations"),
]

# Ids that try to climb out of their path segment, raw or percent-encoded (once or twice).
TRAVERSALS = [
    "..",
    "%2e%2e",
    "..%2f",
    "%2e%2e%2f",
    "..%2f..%2fkeys",
    "%2e%2e%2f%2e%2e%2fhealth",
    "..%5c..%5c",
    "%252e%252e%252f",
    "....%2f%2f",
    f"..%2f{BOB}",
    f"{ALICE}%2f..%2f{BOB}",
    f"{ALICE}%2F..%2F{BOB}",
    "%2f",
    "%2F%2F",
    ".%2f",
]

# OData filter injection: quotes closing the string literal, boolean operators, system options.
INJECTIONS = [
    "' or 1 eq 1 or '",
    "x' or PartitionKey ne '",
    "' or RowKey ne '",
    f"{ALICE}' or user_id eq '{BOB}",
    f"{ALICE}' or PartitionKey ne '",
    "') or (1 eq 1",
    "' or ''='",
    "$filter=PartitionKey ne ''",
    "*",
    "%",
    "'",
    "''",
    '"',
    "\\'",
]

# Control characters, invisible and non-ASCII text, and invalid UTF-8 (sent percent-encoded).
ODD_TEXT = [
    "\x00",
    "a\x00b",
    "\n",
    "a\r\nX-Injected: 1",
    "\t",
    "\x1b[31m",
    "\x7f",
    "\u202e",
    "\u2028",
    "\ufeff",
    "\u200b",
    "é",
    "😀",
    "東京",
]
INVALID_UTF8 = ["%ff", "%c3%28", "%ed%a0%80", "%f4%90%80%80", "%c0%af"]


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def send(
    world: World,
    method: str,
    target: str,
    *,
    key: str | None = None,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> Answer:
    """One request on a fresh connection, the target sent byte for byte as given."""
    connection = http.client.HTTPConnection("127.0.0.1", world.devhost.port, timeout=30)
    try:
        connection.putrequest(method, target, skip_accept_encoding=True)
        if key is not None:
            connection.putheader("Authorization", f"Bearer {key}")
        for name, value in (headers or {}).items():
            connection.putheader(name, value)
        if body is not None:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        return Answer(response.status, response.getheader("Content-Type") or "", response.read())
    finally:
        connection.close()


def api(path: str) -> str:
    return f"/api/{path}"


def seg(text: str) -> str:
    """``text`` percent-encoded as one path segment (``/`` included)."""
    return quote(text, safe="")


def assert_error(answer: Answer, *statuses: int) -> dict[str, str]:
    """A 4xx JSON error body and nothing else (so never a resource); ``statuses`` when given."""
    assert 400 <= answer.status < 500, (answer.status, answer.body[:300])
    if statuses:
        assert answer.status in statuses, (answer.status, answer.body[:300])
    assert answer.content_type.split(";")[0] == JSON_TYPE, answer.content_type
    body = answer.json()
    assert isinstance(body, dict), body
    assert set(body) == {"error", "message"}, body
    assert isinstance(body["error"], str), body
    assert isinstance(body["message"], str), body
    return body


def assert_page(answer: Answer) -> None:
    """A browser step's 4xx: an HTML page, never JSON."""
    assert 400 <= answer.status < 500, (answer.status, answer.body[:300])
    assert answer.content_type.startswith("text/html"), answer.content_type


def assert_healthy(world: World) -> None:
    answer = send(world, "GET", api("health"))
    assert answer.status == 200, answer.body[:300]
    assert answer.json()["status"] == "ok"


def connections_seen(answer: Answer) -> set[str]:
    """``<app>/<user_id>`` of every connection a 200 list answer holds."""
    assert answer.status == 200, answer.body[:300]
    body = answer.json()
    assert set(body) == {"connections"}, body
    return {f"{c['app']}/{c['user_id']}" for c in body["connections"]}


@pytest.fixture(scope="module")
def alice_key(world: World) -> str:
    """Alice and Bob connected to PagerDuty; a key whose globs cover only Alice's connection."""
    for user in (ALICE, BOB):
        response = world.connect(PD, user)
        assert response.status_code == 200, response.text
    return world.key(
        ["connections:read", "connections:revoke", "tokens:read", "pats:read", "audit:read"],
        [f"{PD}/{ALICE}"],
    )


# -- bodies -----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("method", "path"), BODY_OPERATIONS)
def test_a_json_body_over_64_kib_is_413(world: World, method: str, path: str) -> None:
    body = json.dumps({"name": "big", "padding": "a" * 70_000}).encode()
    assert 70_000 < len(body) < DEVHOST_LIMIT
    answer = send(world, method, api(path), key=world.admin_key,
                  headers={"Content-Type": JSON_TYPE}, body=body)  # fmt: skip
    assert assert_error(answer, 413)["error"] == "payload_too_large"


@pytest.mark.slow
def test_the_64_kib_limit_is_exact(world: World) -> None:
    def padded(size: int) -> bytes:
        head = b'{"name": "edge", "padding": "'
        return head + b"a" * (size - len(head) - 2) + b'"}'

    def create(size: int) -> Answer:
        body = padded(size)
        assert len(body) == size
        return send(world, "POST", api("keys"), key=world.admin_key,
                    headers={"Content-Type": JSON_TYPE}, body=body)  # fmt: skip

    # At the limit the body is read (and refused for its unknown field); one byte more is 413.
    assert assert_error(create(MAX_BODY_BYTES), 400)["error"] == "invalid_request"
    assert assert_error(create(MAX_BODY_BYTES + 1), 413)["error"] == "payload_too_large"


@pytest.mark.slow
def test_a_body_over_the_devhost_limit_is_413(world: World) -> None:
    # Announced but not sent: the devhost refuses it from its Content-Length, before reading.
    with socket.create_connection(("127.0.0.1", world.devhost.port), timeout=30) as sock:
        sock.sendall(
            f"POST /api/keys HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {world.admin_key}\r\nContent-Type: {JSON_TYPE}\r\n"
            f"Content-Length: {2 * DEVHOST_LIMIT}\r\n\r\n".encode()
        )
        raw = http.client.HTTPResponse(sock)
        raw.begin()
        answer = Answer(raw.status, raw.getheader("Content-Type") or "", raw.read())
    assert assert_error(answer, 413)["error"] == "payload_too_large"

    # Sent in full (with a length, then chunked): the devhost answers 413 without reading it all
    # and closes the connection, so the client may see the close before the answer.
    body = b'{"padding": "' + b"a" * (2 * DEVHOST_LIMIT) + b'"}'
    chunks = [body[i : i + 65536] for i in range(0, len(body), 65536)]
    headers = {"Authorization": f"Bearer {world.admin_key}", "Content-Type": JSON_TYPE}
    for data in (body, iter(chunks)):
        try:
            response = requests.post(world.api("keys"), data=data, headers=headers, timeout=30)
        except requests.ConnectionError:
            continue
        assert response.status_code == 413, response.text[:300]
        assert response.json()["error"] == "payload_too_large"
    assert_healthy(world)


MALFORMED_BODIES = [
    pytest.param(b'{"name": "x",', JSON_TYPE, id="truncated"),
    pytest.param(b"not json", JSON_TYPE, id="not-json"),
    pytest.param(b"{'name': 'x'}", JSON_TYPE, id="single-quotes"),
    pytest.param(b'{"name": "x"} trailing', JSON_TYPE, id="trailing-garbage"),
    pytest.param(b"", JSON_TYPE, id="empty"),
    pytest.param(b'{"name": "\xff\xfe"}', JSON_TYPE, id="invalid-utf8"),
    pytest.param('{"name": "x"}'.encode("utf-16"), JSON_TYPE, id="utf16"),
    pytest.param(b"\xef\xbb\xbf{}", JSON_TYPE, id="bom"),
    # Deeper than Python's recursion limit, under 64 KiB.
    pytest.param(b"[" * 60_000, JSON_TYPE, id="nested-arrays"),
    pytest.param(b'{"a":' * 12_000, JSON_TYPE, id="nested-objects"),
    pytest.param(b"[" * 30_000 + b"]" * 30_000, JSON_TYPE, id="deep-but-closed"),
    pytest.param(b'{"expires_in_days": ' + b"9" * 5000 + b"}", JSON_TYPE, id="5000-digit-number"),
    pytest.param(b'{"name": 1e999999}', JSON_TYPE, id="huge-exponent"),
    pytest.param(b'{"name": NaN}', JSON_TYPE, id="nan"),
    pytest.param(b"[]", JSON_TYPE, id="array"),
    pytest.param(b'[{"name": "x"}]', JSON_TYPE, id="array-of-object"),
    pytest.param(b'"a string"', JSON_TYPE, id="string"),
    pytest.param(b"42", JSON_TYPE, id="number"),
    pytest.param(b"null", JSON_TYPE, id="null"),
    pytest.param(b"true", JSON_TYPE, id="boolean"),
    pytest.param(b'{"name": "x"}', "text/plain", id="text-plain"),
    pytest.param(b"name=x&scopes=keys%3Aadmin", "application/x-www-form-urlencoded", id="form"),
    pytest.param(b'{"name": "x"}', None, id="no-content-type"),
    pytest.param(b'{"name": "x"}', "multipart/form-data; boundary=x", id="multipart"),
    pytest.param(b'{"name": "x"}', "application/jsonx", id="jsonx"),
    pytest.param(b'{"name": "x"}', "application/json-patch+json", id="json-patch"),
    pytest.param(b'{"name": "x"}', "", id="empty-content-type"),
    pytest.param(b'{"name": "x"}', "application/json\r\nX-Injected: 1", id="header-injection"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("body", "content_type"), MALFORMED_BODIES)
def test_malformed_bodies_and_wrong_content_types_are_400(
    world: World, body: bytes, content_type: str | None
) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    if "\r\n" in (content_type or ""):
        with pytest.raises(ValueError, match="header"):  # http.client refuses to send it
            send(world, "POST", api("keys"), key=world.admin_key, headers=headers, body=body)
        return
    answer = send(world, "POST", api("keys"), key=world.admin_key, headers=headers, body=body)
    assert assert_error(answer, 400)["error"] == "invalid_request"


@pytest.mark.slow
@pytest.mark.parametrize(("method", "path"), BODY_OPERATIONS)
@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"[]", JSON_TYPE),
        (b'"x"', JSON_TYPE),
        (b"{", JSON_TYPE),
        (b"[" * 60_000, JSON_TYPE),
        (b"{}", "text/plain"),
        (b"a=b", "application/x-www-form-urlencoded"),
        (b"{}", None),
    ],
    ids=["array", "string", "truncated", "deep", "text-plain", "form", "no-content-type"],
)
def test_every_body_operation_refuses_what_is_not_a_json_object(
    world: World, method: str, path: str, body: bytes, content_type: str | None
) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    answer = send(world, method, api(path), key=world.admin_key, headers=headers, body=body)
    assert assert_error(answer, 400)["error"] == "invalid_request"


# -- headers and request lines ----------------------------------------------------------------


def send_or_refuse(world: World, method: str, target: str, headers: dict[str, str]) -> int | None:
    """The status, or None when the devhost closed the connection without answering."""
    try:
        return send(world, method, target, key=world.admin_key, headers=headers).status
    except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
        return None


@pytest.mark.slow
@pytest.mark.parametrize(
    ("target", "headers"),
    [
        pytest.param(api("keys"), {"X-Big": "a" * 100_000}, id="100-kb-header"),
        pytest.param(api("keys"), {"Authorization": "Bearer " + "a" * 100_000}, id="100-kb-auth"),
        pytest.param(api("keys"), {f"X-Many-{i}": "v" for i in range(500)}, id="500-headers"),
        pytest.param(api("keys/" + "a" * 100_000), {}, id="100-kb-path"),
        pytest.param(api("connections?user_id=" + "a" * 100_000), {}, id="100-kb-query"),
    ],
)
def test_huge_headers_and_urls_are_refused_without_harm(
    world: World, target: str, headers: dict[str, str]
) -> None:
    status = send_or_refuse(world, "GET", target, headers)
    assert status is None or 400 <= status < 500, status
    assert_healthy(world)


@pytest.mark.slow
def test_many_large_headers_are_no_harm(world: World) -> None:
    # 240 KB of headers, none over a line's limit: the devhost reads them (the Functions host
    # would answer 431); what matters is no 5xx and a devhost still serving.
    headers = {f"X-Wide-{i}": "v" * 4000 for i in range(60)}
    status = send_or_refuse(world, "GET", api("keys"), headers)
    assert status is None or status < 500, status
    assert_healthy(world)


@pytest.mark.slow
@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer " + "a" * 60_000,
        "Bearer ks_" + "a" * 12 + "_" + "b" * 10_000,
        "Bearer ks_\xe9\xe9\xe9",
        "Bearer ks_' or 1 eq 1 or '",
        "Bearer " + "\x00" * 10,
        "Basic " + "a" * 1000,
        "Bearer",
        "",
    ],
    ids=["60-kb", "long-secret", "latin-1", "odata", "nul", "basic", "no-token", "empty"],
)
def test_hostile_authorization_headers_are_401(world: World, authorization: str) -> None:
    answer = send(world, "GET", api("keys"), headers={"Authorization": authorization})
    assert assert_error(answer, 401)["error"] == "unauthorized"


# -- ids: path traversal ----------------------------------------------------------------------


def id_targets(text: str) -> list[str]:
    """Every JSON id-taking GET target with ``text`` (already encoded) as each id in turn."""
    return [
        api(f"keys/{text}"),
        api(f"connections/{PD}/{text}"),
        api(f"connections/{text}/{ALICE}"),
        api(f"connections/{PD}/{text}/token"),
        api(f"pats/{text}"),
        api(f"pats/{text}/secret"),
        api(f"revocations/{text}"),
    ]


@pytest.mark.slow
@pytest.mark.parametrize("traversal", TRAVERSALS)
def test_path_traversal_in_ids_is_4xx_and_never_another_resource(
    world: World, alice_key: str, traversal: str
) -> None:
    for target in id_targets(traversal):
        assert_error(send(world, "GET", target, key=world.admin_key))
        assert_error(send(world, "GET", target, key=alice_key))
    for target in (api(f"connect/{traversal}"), api(f"oauth/{traversal}/callback?state=x")):
        assert_page(send(world, "GET", target))


@pytest.mark.slow
def test_unencoded_dot_segments_never_reach_another_connection(
    world: World, alice_key: str
) -> None:
    for target in (
        api(f"connections/{PD}/{ALICE}/../{BOB}"),
        api(f"connections/{PD}/{ALICE}/..%2f{BOB}"),
        api(f"connections/{PD}/./{BOB}"),
        api(f"keys/../connections/{PD}/{BOB}"),
        api(f"connections/{PD}/{ALICE}/token/../../{BOB}/token"),
        f"/api/../api/connections/{PD}/{BOB}",
        f"/api/%2e%2e/api/connections/{PD}/{BOB}",
    ):
        answer = send(world, "GET", target, key=alice_key)
        assert_error(answer)
        assert BOB.encode() not in answer.body or b"no function serves" in answer.body, target
    # Alice's own connection, addressed plainly, is what the key does see.
    assert send(world, "GET", api(f"connections/{PD}/{ALICE}"), key=alice_key).status == 200
    assert send(world, "GET", api(f"connections/{PD}/{BOB}"), key=alice_key).status == 403


# -- ids and filters: OData injection ---------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("injection", INJECTIONS)
def test_odata_injection_in_ids_is_4xx(world: World, alice_key: str, injection: str) -> None:
    for target in id_targets(seg(injection)):
        assert_error(send(world, "GET", target, key=world.admin_key))
        assert_error(send(world, "GET", target, key=alice_key))


@pytest.mark.slow
@pytest.mark.parametrize("injection", INJECTIONS)
def test_odata_injection_in_filters_lists_nothing_more(
    world: World, alice_key: str, injection: str
) -> None:
    value = quote(injection, safe="")
    for query in (f"user_id={value}", f"app={value}", f"app={PD}&user_id={value}"):
        for key in (world.admin_key, alice_key):
            answer = send(world, "GET", api(f"connections?{query}"), key=key)
            if answer.status == 400:
                assert_error(answer)
                continue
            # Only a user or app literally named so would match: none is.
            assert connections_seen(answer) == set(), (query, answer.body[:300])
    answer = send(world, "GET", api(f"audit?subject={value}"), key=world.admin_key)
    assert answer.status == 200, answer.body[:300]
    assert answer.json() == {"entries": []}


@pytest.mark.slow
def test_a_narrow_key_sees_only_its_own_connection_whatever_the_query(
    world: World, alice_key: str
) -> None:
    mine = {f"{PD}/{ALICE}"}
    for query in (
        "",
        "?$filter=PartitionKey%20ne%20''",
        "?$filter=true&$select=*&$top=1000",
        f"?user_id={quote(BOB)}",
        f"?app={PD}&user_id={quote(BOB)}",
        f"?user_id={quote(ALICE + chr(39) + ' or user_id eq ' + chr(39) + BOB)}",
        f"?app={quote(PD + chr(39) + ' or PartitionKey ne ' + chr(39))}",
        f"?user_id={quote(ALICE)}&user_id={quote(BOB)}",
        f"?app={PD}&app=*",
        f"?status={quote(chr(39).join(['active', ' or ', '1', ' eq ', '1']))}",
    ):
        answer = send(world, "GET", api(f"connections{query}"), key=alice_key)
        if answer.status == 400:
            assert_error(answer)
            continue
        assert connections_seen(answer) <= mine, (query, answer.body[:300])
    assert connections_seen(send(world, "GET", api("connections"), key=alice_key)) == mine


@pytest.mark.slow
@pytest.mark.parametrize(
    "target",
    [
        {"user_id": "' or 1 eq 1 or '"},
        {"user_id": "x' or PartitionKey ne '"},
        {"app": "x' or PartitionKey ne '"},
        {"app": PD, "user_id": "' or RowKey ne '"},
    ],
    ids=["user-or-true", "user-partition", "app-partition", "both-row"],
)
def test_odata_injection_in_a_revocation_revokes_nothing(
    world: World, alice_key: str, target: dict[str, str]
) -> None:
    response = world.call("POST", "revocations", json={**target, "reason": "injection test"})
    assert response.status_code == 202, response.text
    status_url = response.json()["status_url"]
    deadline = time.monotonic() + 30
    while True:
        record = world.http.get(
            status_url, headers={"Authorization": f"Bearer {world.admin_key}"}, timeout=30
        ).json()
        if record["status"].startswith("completed") or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert record["status"] == "completed", record
    assert record["total"] == 0, record
    assert record["outcomes"] == [], record
    for user in (ALICE, BOB):
        response = world.call("GET", f"connections/{PD}/{user}")
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "active"


# -- ids: control characters, non-ASCII text, invalid UTF-8 -----------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("encoded", [seg(t) for t in ODD_TEXT] + INVALID_UTF8)
def test_odd_characters_in_ids_are_4xx(world: World, alice_key: str, encoded: str) -> None:
    for target in id_targets(encoded):
        assert_error(send(world, "GET", target, key=world.admin_key))
        assert_error(send(world, "GET", target, key=alice_key))
    for target in (api(f"connect/{encoded}"), api(f"oauth/{encoded}/callback?state={encoded}")):
        assert_page(send(world, "GET", target))
    for query in (f"user_id={encoded}", f"app={encoded}", f"status={encoded}"):
        answer = send(world, "GET", api(f"connections?{query}"), key=world.admin_key)
        if answer.status != 200:
            assert_error(answer, 400)
        else:
            assert connections_seen(answer) == set()
    for query in (f"subject={encoded}", f"since={encoded}", f"limit={encoded}"):
        answer = send(world, "GET", api(f"audit?{query}"), key=world.admin_key)
        if answer.status != 200:
            assert_error(answer, 400)
        else:
            assert answer.json() == {"entries": []}


@pytest.mark.slow
@pytest.mark.parametrize("text", ODD_TEXT)
def test_odd_characters_in_body_ids_are_refused_unless_printable(world: World, text: str) -> None:
    body = json.dumps({"app": PD, "user_id": text}).encode()
    answer = send(world, "POST", api("connect-sessions"), key=world.admin_key,
                  headers={"Content-Type": JSON_TYPE}, body=body)  # fmt: skip
    if text.isprintable():
        assert answer.status == 201, answer.body[:300]
    else:
        assert assert_error(answer, 400)["error"] == "invalid_request"


@pytest.mark.slow
@pytest.mark.parametrize(
    "user_id",
    [
        "ghp_" + "aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2ln",
        "ks_abcdefghijkl_" + "A1b2C3d4" * 6,
    ],
    ids=["github-token", "jwt", "keysteward-key"],
)
def test_secret_looking_ids_are_400_not_500(world: World, user_id: str) -> None:
    # The audit trail refuses secret-looking subjects: such ids are refused up front.
    body = json.dumps({"app": PD, "user_id": user_id}).encode()
    answer = send(world, "POST", api("connect-sessions"), key=world.admin_key,
                  headers={"Content-Type": JSON_TYPE}, body=body)  # fmt: skip
    assert assert_error(answer, 400)["error"] == "invalid_request"
    request_id = re.sub(r"[^A-Za-z0-9_.:-]", "", user_id)[:64]
    body = json.dumps({"app": PD, "reason": "x", "request_id": request_id}).encode()
    answer = send(world, "POST", api("revocations"), key=world.admin_key,
                  headers={"Content-Type": JSON_TYPE}, body=body)  # fmt: skip
    assert assert_error(answer, 400)["error"] == "invalid_request"
    # The public callback: {app} is anyone's text.
    assert_page(send(world, "GET", api(f"oauth/{seg(user_id)}/callback?state=x&code=y")))
    assert_page(send(world, "GET", api(f"oauth/{'a' * 1100}/callback")))


# -- query parameters -------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "query",
    [
        pytest.param(f"connections/{PD}/{ALICE}/token?min_ttl=" + "9" * 5000, id="ttl-5000-digits"),
        pytest.param(
            f"connections/{PD}/{ALICE}/token?min_ttl=" + "0" * 5000 + "99999", id="ttl-5000-zeros"
        ),
        pytest.param(f"connections/{PD}/{ALICE}/token?min_ttl=-1", id="ttl-negative"),
        pytest.param(f"connections/{PD}/{ALICE}/token?min_ttl=%D9%A3", id="ttl-arabic-digit"),
        pytest.param(f"connections/{PD}/{ALICE}/token?force_refresh=%00", id="refresh-nul"),
        pytest.param("audit?limit=" + "9" * 5000, id="limit-5000-digits"),
        pytest.param("audit?since=0001-01-01T00:00:00%2B14:00", id="since-before-year-1"),
        pytest.param(
            "audit?since=0001-01-01T00:00:00%2B14:00&until=0001-01-02T00:00:00Z",
            id="day-before-year-1",
        ),
        pytest.param(
            "audit?since=1969-12-01T00:00:00Z&until=1969-12-02T00:00:00Z", id="day-before-the-epoch"
        ),
        pytest.param("audit?until=9999-12-31T23:59:59-14:00", id="until-after-year-9999"),
        pytest.param(
            "audit?since=9999-12-31T23:59:59.999999Z&until=0001-01-01T00:00:00Z",
            id="since-after-until",
        ),
        pytest.param("audit?subject=" + "a" * 20_000, id="subject-20-kb"),
        pytest.param("audit?subject=" + "%27" * 5000, id="subject-5000-quotes"),
        pytest.param("connections?status=" + "a" * 10_000, id="status-10-kb"),
        pytest.param("connections?user_id=" + "%27" * 2000, id="user-2000-quotes"),
    ],
)
def test_hostile_query_parameters_are_4xx_or_empty(world: World, query: str) -> None:
    answer = send(world, "GET", api(query), key=world.admin_key)
    if answer.status == 200:
        body = answer.json()
        assert body in ({"entries": []}, {"connections": []}), body
    else:
        assert_error(answer, 400)


@pytest.mark.slow
def test_leading_zeros_do_not_overflow_numbers(world: World, alice_key: str) -> None:
    zeros = "0" * 5000
    answer = send(world, "GET", api(f"audit?limit={zeros}1"), key=world.admin_key)
    assert answer.status == 200, answer.body[:300]
    assert len(answer.json()["entries"]) <= 1
    token = api(f"connections/{PD}/{ALICE}/token")
    assert send(world, "GET", f"{token}?min_ttl={zeros}60", key=alice_key).status == 200
    answer = send(world, "GET", f"{token}?min_ttl={zeros}86401", key=alice_key)
    assert assert_error(answer, 400)["error"] == "invalid_request"


# -- the devhost ------------------------------------------------------------------------------


@pytest.mark.slow
def test_nothing_in_this_module_was_answered_5xx(world: World) -> None:
    """Runs last: the devhost logs every function call, with its status or its exception (the
    queue functions the revocations above ran included)."""
    assert_healthy(world)
    log = world.devhost.log.read_text(encoding="utf-8", errors="replace")
    answered = re.findall(r"\(http (\w+) (\S+) -> (\d{3})\)", log)
    assert answered
    assert [a for a in answered if a[2].startswith("5")] == []
    assert re.findall(r".* failed \((?:http|queue) .*", log) == []
