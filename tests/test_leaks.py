"""A secret-leak audit: drive every flow that handles a secret with logging at DEBUG everywhere,
then look for every secret value in everything Keysteward leaves behind.

The flows: connect (oidc, entra through MSAL, PagerDuty, legacy Azure DevOps OAuth, and one whose
code exchange fails), token requests with forced refreshes (rotating refresh tokens) and injected
provider failures, a managed PAT created, rotated to completion and read back, a revocation by
user, an API key created, used, regenerated and deleted, bad requests, both sweeps, and signed
webhook deliveries.

The secrets: every access token, refresh token (each rotation), MSAL cache token, PAT, API key
(whole and its secret part), client secret, key-ring key and the webhook secret that existed.

The channels: the devhost's whole log, every HTTP response the test received (headers and body),
every audit row, every lifecycle event (drained and left on queues), every message on every queue,
every webhook delivery, and a raw dump of every row of every table (ciphertext is fine).

By design five answers carry a secret: the token endpoint (``access_token``), PAT create and
``GET /api/pats/{id}/secret`` (``secret``), and API key create and regenerate (``key``). Exactly
that one field of those bodies is left out; the rest of each is checked like any other answer.

A secret counts as found in plain text, URL-encoded (a token in a query string), JSON- or
HTML-escaped, or base64-encoded at any byte offset (a Basic header, a message body). A failure
names the kind of secret, the channel and a short excerpt, with every secret in it masked.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import secrets
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, quote_plus, urlsplit

import pytest
import requests
from azure.data.tables import TableServiceClient
from azure.storage.queue import QueueServiceClient

from shared.access.api_keys import parse
from shared.foundation.clock import SystemClock
from shared.foundation.secret import Secret
from shared.storage.clients import decode_message
from shared.storage.tables.connections import Connection
from shared.storage.tables.pats import ManagedPat
from shared.trail.audit import AuditLog
from tests.peers.processes import wait_until
from tests.peers.receiver import WebhookReceiver
from tests.peers.world import SECRETS, World, running_world

MIN_LENGTH = 12  # shorter values would match by accident
EXCERPT = 60  # characters shown either side of a finding
WEBHOOK_SECRET = secrets.token_urlsafe(32)

OIDC, ENTRA, PD, ADO = "oidc-demo", "entra-demo", "pagerduty-incidents", "ado-legacy"
U_OIDC = "leak-oidc@contoso.com"
U_ENTRA = "leak-entra@contoso.com"
U_PD = "leak-pd@contoso.com"
U_ADO = "leak-ado@contoso.com"
U_DEAD = "leak-dead@contoso.com"  # oidc: invalid_grant on refresh
U_FLAKY = "leak-flaky@contoso.com"  # oidc: 503 on refresh
U_ENTRA_DEAD = "leak-entra-dead@contoso.com"  # entra: invalid_grant through MSAL
U_PD_DEAD = "leak-pd-dead@contoso.com"  # PagerDuty: invalid_grant
U_CONNECT_FAIL = "leak-connect-fail@contoso.com"  # the code exchange fails
U_REVOKE = "leak-revoke@contoso.com"  # revoked by user: oidc, PagerDuty, entra and a PAT

FAMILIES = ("devhost log", "http", "audit", "events", "queues", "webhooks", "tables")

# (method, path, status, field): the one field of an answer that carries a secret by design.
DESIGNED = (
    ("GET", re.compile(r"^/api/connections/[^/]+/[^/]+/token$"), 200, "access_token"),
    ("POST", re.compile(r"^/api/connections/[^/]+/[^/]+/token/rejected$"), 200, "access_token"),
    ("POST", re.compile(r"^/api/connections/[^/]+/[^/]+/pats$"), 201, "secret"),
    ("GET", re.compile(r"^/api/pats/[^/]+/secret$"), 200, "secret"),
    ("POST", re.compile(r"^/api/keys$"), 201, "key"),
    ("POST", re.compile(r"^/api/keys/[^/]+/regenerate$"), 200, "key"),
)


# --- what to look for ------------------------------------------------------------------------


class Secrets:
    """Every secret value seen, by kind (the first kind a value was seen as)."""

    def __init__(self) -> None:
        self.kinds: dict[str, str] = {}

    def add(self, kind: str, value: str | Secret | None) -> None:
        if isinstance(value, Secret):
            value = value.reveal()
        if value and len(value) >= MIN_LENGTH:
            self.kinds.setdefault(value, kind)

    def api_key(self, raw: str) -> None:
        self.add("API key", raw)
        parsed = parse(raw)
        assert parsed is not None, "not an API key"
        self.add("API key secret part", parsed[1])

    def msal_cache(self, cache: str) -> None:
        parsed = json.loads(cache)
        for section, kind in (("RefreshToken", "refresh token (MSAL cache)"),
                              ("AccessToken", "access token (MSAL cache)")):  # fmt: skip
            for entry in parsed.get(section, {}).values():
                self.add(kind, entry.get("secret"))

    def connection(self, world: World, app: str, user: str) -> None:
        """Reveal what the row holds now (refresh tokens rotate: call after every change)."""
        found = world.store.read(Connection, app, user)
        if found is None:
            return
        self.add("access token", found.access_token)
        self.add("refresh token", found.refresh_token)
        if found.msal_cache is not None:
            self.msal_cache(found.msal_cache.reveal())

    def pat(self, world: World, pat_id: str) -> ManagedPat:
        found = world.store.read(ManagedPat, pat_id, "pat")
        assert found is not None
        self.add("PAT", found.secret)
        self.add("PAT", found.pending_secret)
        return found

    def of_kind(self, prefix: str) -> list[str]:
        return [v for v, k in self.kinds.items() if k.startswith(prefix)]

    def every_form(self) -> list[tuple[str, str]]:
        """(form, kind) of every secret, longest first."""
        every = [(form, kind) for value, kind in self.kinds.items()
                 for form in forms(value).values()]  # fmt: skip
        return sorted(every, key=lambda pair: len(pair[0]), reverse=True)

    def mask(self, text: str) -> str:
        """``text`` with every form of every secret replaced by its kind."""
        for form, kind in self.every_form():
            text = text.replace(form, f"<{kind}>")
        return text


def _base64_middle(data: bytes, offset: int, urlsafe: bool) -> str:
    """The characters of ``data``'s base64 that do not depend on what surrounds it, when it
    starts ``offset`` bytes into a base64-encoded blob."""
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    encoded = encode(b"\0" * offset + data).decode("ascii")
    return encoded[-(-offset * 8 // 6) : (offset + len(data)) * 8 // 6]


def forms(value: str) -> dict[str, str]:
    """The ways ``value`` can be written down, by name."""
    found = {"plain": value}
    encoded = {
        "URL-encoded": quote(value, safe=""),
        "URL-encoded (lowercase hex)": re.sub(
            r"%[0-9A-F]{2}", lambda m: m.group().lower(), quote(value, safe="")
        ),
        "form-encoded": quote_plus(value),
        "JSON-escaped": json.dumps(value)[1:-1],
        "HTML-escaped": html.escape(value),
    }
    for offset in range(3):
        for urlsafe in (False, True):
            name = f"base64{'url' if urlsafe else ''} (offset {offset})"
            encoded[name] = _base64_middle(value.encode(), offset, urlsafe)
    for name, text in encoded.items():
        if len(text) >= MIN_LENGTH and text not in found.values():
            found[name] = text
    return found


# --- where to look ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Channel:
    family: str
    name: str
    text: str = field(repr=False)


@dataclass
class Finding:
    kind: str
    form: str
    channel: Channel
    excerpt: str  # masked


@dataclass
class Evidence:
    """Never shown whole: a failure must not print what it found."""

    secrets: Secrets = field(repr=False)
    channels: list[Channel] = field(repr=False)
    # (where, value): what was left out of the designed answers.
    designed: list[tuple[str, str]] = field(default_factory=list, repr=False)


class Recorder:
    """Every response the test's session received, kept for the end."""

    def __init__(self) -> None:
        self.responses: list[requests.Response] = []

    def __call__(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self.responses.append(response)

    def channels(self) -> tuple[list[Channel], list[tuple[str, str]]]:
        channels: list[Channel] = []
        designed: list[tuple[str, str]] = []
        for number, response in enumerate(self.responses):
            method = response.request.method or "?"
            path = urlsplit(response.request.url or "").path
            name = f"HTTP response #{number} to {method} {path} ({response.status_code})"
            body = response.text
            for d_method, d_path, d_status, d_field in DESIGNED:
                if (method, response.status_code) == (d_method, d_status) and d_path.match(path):
                    parsed = response.json()
                    value = parsed.pop(d_field)
                    designed.append((f"{name}, field {d_field!r}", str(value)))
                    body = json.dumps(parsed)
                    name += f" without its {d_field!r} field"
            headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
            channels.append(Channel("http", name, f"{headers}\n\n{body}"))
        return channels, designed


def table_channels(world: World) -> list[Channel]:
    service = TableServiceClient.from_connection_string(world.env["AzureWebJobsStorage"])
    channels = []
    for table in service.list_tables():
        client = service.get_table_client(table.name)
        for entity in client.query_entities(""):
            row = f"{entity.get('PartitionKey')}/{entity.get('RowKey')}"
            channels.append(Channel("tables", f"table {table.name}, row {row}", str(dict(entity))))
    return channels


class QueueWatcher:
    """Every message seen on any queue: peeked after each step and while waiting, since most are
    consumed within moments (refresh, rotation, revocation requests, webhook deliveries)."""

    def __init__(self, world: World) -> None:
        self._service = QueueServiceClient.from_connection_string(world.env["AzureWebJobsStorage"])
        self.seen: dict[tuple[str, str, str], Channel] = {}

    def peek(self) -> None:
        for queue in self._service.list_queues():
            client = self._service.get_queue_client(queue.name)
            for message in client.peek_messages(max_messages=32):
                content = str(message.content)
                try:
                    decoded = decode_message(content).decode("utf-8", "replace")
                except ValueError:
                    decoded = ""
                name = f"queue {queue.name}, message {message.id}"
                channel = Channel("queues", name, f"{content}\n{decoded}")
                self.seen.setdefault((queue.name, str(message.id), content), channel)


def find(evidence: Evidence, family: str) -> list[Finding]:
    channels = [c for c in evidence.channels if c.family == family]
    joined = "\0".join(c.text for c in channels)
    findings = []
    for value, kind in evidence.secrets.kinds.items():
        for form, text in forms(value).items():
            if text not in joined:
                continue
            for channel in channels:
                at = channel.text.find(text)
                if at >= 0:
                    excerpt = excerpt_of(evidence.secrets, channel.text, at, len(text))
                    findings.append(Finding(kind, form, channel, excerpt))
    return findings


def excerpt_of(known: Secrets, text: str, at: int, length: int) -> str:
    """A window around a finding, every secret in it (in any form) replaced by its kind; a secret
    across the window's edge widens the window rather than show a piece of it."""
    every = known.every_form()
    reach = max((len(form) for form, _ in every), default=0)
    low, high = max(at - EXCERPT, 0), min(at + length + EXCERPT, len(text))
    region_low = max(low - reach, 0)
    region = text[region_low : high + reach]
    spans: list[tuple[int, int, str]] = []
    for form, kind in every:
        start = region.find(form)
        while start >= 0:
            spans.append((region_low + start, region_low + start + len(form), kind))
            start = region.find(form, start + 1)
    merged: list[tuple[int, int, str]] = []
    for start, end, kind in sorted(spans):
        if merged and start < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]), merged[-1][2])
        else:
            merged.append((start, end, kind))
    parts, position = [], low
    for start, end, kind in merged:
        if end <= low or start >= high:
            continue
        parts += [text[position:start] if start > position else "", f"<{kind}>"]
        position = max(end, position)
        high = max(high, end)
    parts.append(text[position:high])
    return "".join(parts).replace("\n", "\\n")


# --- the world and the flows -----------------------------------------------------------------


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver(WEBHOOK_SECRET.encode()).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def world(
    app_env: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
    receiver: WebhookReceiver,
) -> Iterator[World]:
    """The whole world with DEBUG everywhere: Keysteward's loggers and the host's (and so the
    storage SDK's), and a webhook receiving every event."""
    with running_world(
        {**app_env, "KEYSTEWARD_LOG_LEVEL": "DEBUG"},
        tmp_path_factory.mktemp("leaks"),
        devhost_args=("--log-level", "DEBUG"),
        extra_env={
            "KEYSTEWARD_WEBHOOK_URL": receiver.url,
            "KEYSTEWARD_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "KEYSTEWARD_WEBHOOK_RETRY_SECONDS": "1",
            # Every forced refresh and rejection below refreshes: each rotates a secret.
            "KEYSTEWARD_REFRESH_COOLDOWN_SECONDS": "0.001",
        },
    ) as running:
        yield running


_SECRET_FIELDS = re.compile(r'("(?:access_token|refresh_token|secret|key|token)"\s*:\s*)"[^"]*"')


def expect(response: requests.Response, *statuses: int) -> requests.Response:
    """``response`` if its status is one of ``statuses``; else a failure that shows the body with
    secret-carrying fields blanked (the fixture masks every known secret on top)."""
    if response.status_code not in statuses:
        path = urlsplit(response.request.url or "").path
        body = _SECRET_FIELDS.sub(r'\1"<redacted>"', response.text)[:600]
        raise AssertionError(
            f"{response.request.method} {path} answered {response.status_code}, "
            f"expected {' or '.join(map(str, statuses))}: {body}"
        )
    return response


def _connect(world: World, found: Secrets, app: str, user: str) -> None:
    expect(world.connect(app, user), 200)
    found.connection(world, app, user)


def _token(world: World, found: Secrets, app: str, user: str, status: int, **params: Any) -> None:
    response = expect(world.token(app, user, **params), status)
    if status == 200:
        found.add("access token", response.json()["access_token"])
    found.connection(world, app, user)


def _connections(world: World, found: Secrets) -> None:
    for app, user in ((OIDC, U_OIDC), (ENTRA, U_ENTRA), (PD, U_PD), (ADO, U_ADO)):
        _connect(world, found, app, user)
        _token(world, found, app, user, 200)
        for _ in range(2):  # each forced refresh rotates the refresh token
            _token(world, found, app, user, 200, force_refresh="true")
        # A caller says the provider refused the current token: refreshed once more.
        current = expect(world.token(app, user), 200).json()["access_token"]
        digest = hashlib.sha256(current.encode()).hexdigest()
        rejected = world.call("POST", f"connections/{app}/{user}/token/rejected",
                              json={"access_token_sha256": digest})  # fmt: skip
        found.add("access token", expect(rejected, 200).json()["access_token"])
        expect(world.call("GET", f"connections/{app}/{user}"), 200)
    # A code exchange the provider refuses: the callback's error path, client secret in flight.
    world.oidc.fail_next("token", 400, error="invalid_grant")
    expect(world.connect(OIDC, U_CONNECT_FAIL), 502)


def _failures(world: World, found: Secrets) -> None:
    for app, user in ((OIDC, U_DEAD), (OIDC, U_FLAKY), (ENTRA, U_ENTRA_DEAD), (PD, U_PD_DEAD)):
        _connect(world, found, app, user)
    world.oidc.fail_next("token", 400, error="invalid_grant")
    _token(world, found, OIDC, U_DEAD, 424, force_refresh="true")
    world.entra_op.fail_next("token", 400, error="invalid_grant")
    _token(world, found, ENTRA, U_ENTRA_DEAD, 424, force_refresh="true")
    world.pagerduty.fail_next("/oauth/token", 400, body={"error": "invalid_grant",
                              "error_description": "The refresh token is invalid"})  # fmt: skip
    _token(world, found, PD, U_PD_DEAD, 424, force_refresh="true")
    world.oidc.fail_next("token", 503, retry_after=60)
    _token(world, found, OIDC, U_FLAKY, 503, force_refresh="true", min_ttl="60")
    _token(world, found, OIDC, U_FLAKY, 200, min_ttl="60")  # the stored one
    _token(world, found, OIDC, U_FLAKY, 503, min_ttl="7200")


def _api_keys(world: World, found: Secrets) -> None:
    found.api_key(world.admin_key)
    body = {"name": "leak-audit", "scopes": ["tokens:read", "connections:read"],
            "resources": ["*"], "expires_in_days": 1}  # fmt: skip
    created = expect(world.call("POST", "keys", json=body), 201).json()
    key_id, first = created["id"], created["key"]
    found.api_key(first)
    expect(world.call("GET", f"connections/{OIDC}/{U_OIDC}/token", first), 200)
    second = expect(world.call("POST", f"keys/{key_id}/regenerate"), 200).json()["key"]
    found.api_key(second)
    expect(world.call("GET", "connections", first), 401)  # the old secret
    expect(world.call("GET", "connections", second), 200)
    expect(world.call("GET", f"keys/{key_id}"), 200)
    expect(world.call("GET", "keys"), 200)
    expect(world.call("DELETE", f"keys/{key_id}"), 204)
    expect(world.call("GET", "connections", second), 401)  # a deleted key


def _pats(world: World, found: Secrets, queues: QueueWatcher) -> None:
    body = {"display_name": "leak-audit", "scope": "vso.packaging", "lifetime_days": 30}
    created = expect(world.call("POST", f"connections/{ENTRA}/{U_ENTRA}/pats", json=body), 201)
    pat_id = created.json()["id"]
    found.add("PAT", created.json()["secret"])
    expect(world.call("POST", f"pats/{pat_id}/rotate"), 202)

    def rotated() -> bool:
        queues.peek()
        pat = found.pat(world, pat_id)  # collects the pending secret on the way
        return pat.rotations >= 1 and pat.rotation_id is None

    wait_until(rotated, timeout=40, what="the PAT rotation to finish")
    reader = world.key(["pats:read-secret"], [f"{ENTRA}/{U_ENTRA}"])
    found.api_key(reader)
    found.add(
        "PAT", expect(world.call("GET", f"pats/{pat_id}/secret", reader), 200).json()["secret"]
    )
    for path in (f"pats/{pat_id}", f"connections/{ENTRA}/{U_ENTRA}/pats"):
        expect(world.call("GET", path), 200)
    # A PAT API refusal: the error path of the PAT driver.
    world.ado_pats.inject_error("accessDenied")
    refused = world.call("POST", f"connections/{ENTRA}/{U_ENTRA}/pats", json=body)
    expect(refused, *range(400, 600))


def _revocation(world: World, found: Secrets, queues: QueueWatcher) -> None:
    for app in (OIDC, PD, ENTRA):
        _connect(world, found, app, U_REVOKE)
        _token(world, found, app, U_REVOKE, 200)
    body = {"display_name": "to-revoke", "scope": "vso.code", "lifetime_days": 7}
    created = expect(world.call("POST", f"connections/{ENTRA}/{U_REVOKE}/pats", json=body), 201)
    found.add("PAT", created.json()["secret"])
    found.connection(world, ENTRA, U_REVOKE)
    request = {"user_id": U_REVOKE, "reason": "left"}
    status_url = expect(world.call("POST", "revocations", json=request), 202).json()["status_url"]

    def finished() -> bool:
        queues.peek()
        status = world.http.get(status_url, timeout=30,
                                headers={"Authorization": f"Bearer {world.admin_key}"})  # fmt: skip
        return bool(status.json()["status"].startswith("completed"))

    wait_until(finished, timeout=40, what="the revocation to finish")
    found.connection(world, ADO, U_ADO)
    expect(world.call("DELETE", f"connections/{ADO}/{U_ADO}"), 200)  # one, synchronously


def _bad_requests(world: World, found: Secrets) -> None:
    tampered = world.admin_key[:-1] + ("A" if world.admin_key[-1] != "A" else "B")
    access = found.of_kind("access token")[0]
    for key in ("ks_not_a_key", tampered, access):  # the last: a provider token by mistake
        expect(world.call("GET", "connections", key), 401)
    expect(world.http.get(world.api("connections"), timeout=30), 401)
    json_headers = {"Content-Type": "application/json"}
    for path in ("keys", "revocations", "connect-sessions", f"connections/{ENTRA}/{U_ENTRA}/pats"):
        expect(world.call("POST", path, data="{not json", headers=json_headers), 400)
    unknown = [
        ("GET", "pats/nosuchpat0000"),
        ("GET", "pats/nosuchpat0000/secret"),
        ("POST", "pats/nosuchpat0000/rotate"),
        ("GET", "keys/abcdefghijkl"),
        ("POST", "keys/abcdefghijkl/regenerate"),
        ("GET", "revocations/no-such-request"),
        ("DELETE", f"connections/{OIDC}/nobody@contoso.com"),
        ("GET", f"connections/{OIDC}/nobody@contoso.com/token"),
        ("GET", "connections/no-such-app/nobody@contoso.com"),
    ]
    for method, path in unknown:
        expect(world.call(method, path), 404)
    expect(world.token(OIDC, U_OIDC, min_ttl="abc"), 400)
    expect(world.token(OIDC, U_REVOKE), 410)
    expect(world.call("POST", "revocations", json={}), 400)
    forged = world.http.get(world.api(f"oauth/{OIDC}/callback"),
                            params={"code": "x", "state": "forged"}, timeout=30)  # fmt: skip
    expect(forged, 400)


def _sweeps_and_reads(world: World) -> None:
    for function in ("expiry_sweep", "refresh_sweep"):
        url = f"{world.devhost.url}/admin/functions/{function}"
        expect(world.http.post(url, json={}, timeout=60), 202)
    for path in ("connections", "revocation-failures", "audit?limit=1000"):
        expect(world.call("GET", path), 200)


def _webhooks(world: World, receiver: WebhookReceiver) -> None:
    """Wait until every event this world raised has been delivered (or refused)."""
    world.events("")  # drain the lifecycle queue into world.seen_events
    source = world.env["KEYSTEWARD_PUBLIC_URL"]
    raised = {e["id"] for e in world.seen_events if e.get("source") == source}

    def delivered() -> bool:
        seen = {json.loads(d.body).get("id") for d in receiver.accepted + receiver.rejected}
        return raised <= seen

    wait_until(delivered, timeout=20, what="the webhook deliveries")


def _collect(
    world: World,
    receiver: WebhookReceiver,
    found: Secrets,
    *,
    since: datetime,
    recorder: Recorder,
    queues: QueueWatcher,
) -> Evidence:
    # Every token the fakes ever issued, every PAT Azure DevOps holds.
    for fake in (world.pagerduty, world.ado):
        for token in fake.issued():
            found.add(f"{token.kind} token", token.value)
    for pat in world.ado_pats.pats():
        found.add("PAT", pat["token"])

    log = world.devhost.log
    channels = [Channel("devhost log", f"devhost log {log}", log.read_text(errors="replace"))]
    http_channels, designed = recorder.channels()
    channels += http_channels
    for entry in AuditLog(world.store, SystemClock()).read(since, limit=100_000):
        channels.append(Channel("audit", f"audit row {entry.action} {entry.subject}",
                                f"{entry!r}\n{json.dumps(entry.detail, default=str)}"))  # fmt: skip
    world.events("")
    for event in world.seen_events:
        channels.append(Channel("events", f"event {event.get('type')} {event.get('subject')}",
                                json.dumps(event)))  # fmt: skip
    queues.peek()
    channels += queues.seen.values()
    for number, delivery in enumerate(receiver.accepted + receiver.rejected + receiver.failed):
        headers = "\n".join(f"{k}: {v}" for k, v in delivery.headers.items())
        text = f"{headers}\n\n{delivery.body.decode('utf-8', 'replace')}"
        channels.append(Channel("webhooks", f"webhook delivery #{number}", text))
    channels += table_channels(world)
    return Evidence(found, channels, designed)


@pytest.fixture(scope="module")
def evidence(world: World, receiver: WebhookReceiver) -> Evidence:
    since = datetime.now(UTC) - timedelta(minutes=1)
    recorder = Recorder()
    world.http.hooks["response"].append(recorder)
    found = Secrets()
    for name, value in SECRETS.items():
        found.add(f"client secret {name}", value)
    for item in world.env["KEYSTEWARD_ENCRYPTION_KEYS"].split(","):
        kid, _, key = item.partition(":")
        found.add(f"key-ring key {kid}", key.strip())
        found.add(f"key-ring key {kid} (hex)", base64.b64decode(key).hex())
    found.add("webhook secret", WEBHOOK_SECRET)
    queues = QueueWatcher(world)
    steps: list[tuple[str, Callable[[], None]]] = [
        ("connect and refresh", lambda: _connections(world, found)),
        ("provider failures", lambda: _failures(world, found)),
        ("API keys", lambda: _api_keys(world, found)),
        ("managed PATs", lambda: _pats(world, found, queues)),
        ("revocation", lambda: _revocation(world, found, queues)),
        ("bad requests", lambda: _bad_requests(world, found)),
        ("sweeps and reads", lambda: _sweeps_and_reads(world)),
        ("webhooks", lambda: _webhooks(world, receiver)),
    ]
    receiver.fail_next(2)  # the first deliveries fail: the retry path logs and re-queues
    step = "starting"
    try:
        for name, run in steps:
            step = name
            run()
            queues.peek()
        step = "collecting"
        return _collect(world, receiver, found, since=since, recorder=recorder, queues=queues)
    except Exception as exc:  # no traceback: its frames would show secrets
        pytest.fail(f"{step}: {found.mask(f'{type(exc).__name__}: {exc}')}", pytrace=False)
    finally:
        world.http.hooks["response"].remove(recorder)


# --- the checks ------------------------------------------------------------------------------


def test_the_audit_has_something_to_find_and_somewhere_to_look(evidence: Evidence) -> None:
    """Not vacuous: every kind of secret was collected and every channel has content."""
    counts = {
        prefix: len(evidence.secrets.of_kind(prefix))
        for prefix in ("access token", "refresh token", "refresh token (MSAL cache)", "PAT",
                       "API key", "API key secret part", "client secret", "key-ring key",
                       "webhook secret")
    }  # fmt: skip
    assert all(counts.values()), counts
    assert counts["PAT"] >= 3, counts  # created, its rotation, and the revoked user's
    families = Counter(c.family for c in evidence.channels)
    print(f"secrets: {dict(Counter(evidence.secrets.kinds.values()))}; channels: {dict(families)}")
    assert set(families) == set(FAMILIES), families
    log = next(c for c in evidence.channels if c.family == "devhost log").text
    # Keysteward itself logs nothing at DEBUG (yet); the host, urllib3 and MSAL do, and the
    # storage SDK's request logging (INFO) is only on when the host runs at DEBUG.
    heard = {
        "the host at DEBUG": " DEBUG devhost" in log,
        "urllib3 at DEBUG": " DEBUG urllib3" in log,
        # MSAL logs spent codes and PKCE verifiers at DEBUG, so Keysteward keeps it at INFO.
        "MSAL kept above DEBUG": " DEBUG msal" not in log and "code_verifier" not in log,
        "the storage SDK": " azure.core.pipeline" in log,
        "Keysteward": bool(re.search(r" (shared|functions|keysteward)\.\w+: ", log)),
    }
    assert all(heard.values()), f"nothing logged by: {[k for k, v in heard.items() if not v]}"
    assert len(evidence.designed) >= 5


def test_the_detector_finds_the_secrets_the_designed_answers_carry(evidence: Evidence) -> None:
    """The check can see a secret: each value left out of a designed answer is one collected,
    and would be found there in any form."""
    known = evidence.secrets.kinds
    unknown = [where for where, value in evidence.designed if value not in known]
    assert not unknown, f"values the audit did not collect: {unknown}"
    channels = [Channel("http", where, f'{{"x": "{value}"}}') for where, value in evidence.designed]
    refresh = evidence.secrets.of_kind("refresh token")[0]
    basic = f"client:{SECRETS['PD_CLIENT_SECRET']}".encode()
    channels += [
        Channel("http", "a query string", "/cb?t=" + quote(refresh, safe="")),
        Channel("http", "a Basic header", "Basic " + base64.b64encode(basic).decode()),
    ]
    probe = Evidence(evidence.secrets, channels)
    seen = {f.channel.name for f in find(probe, "http")}
    missed = [c.name for c in channels if c.name not in seen]
    assert not missed, f"not detected: {missed}"


@pytest.mark.parametrize("family", FAMILIES)
def test_no_secret_appears_in(evidence: Evidence, family: str) -> None:
    findings = find(evidence, family)
    if not findings:
        return
    summary: dict[tuple[str, str], list[Finding]] = {}
    for finding in findings:
        summary.setdefault((finding.kind, finding.channel.name), []).append(finding)
    lines = [f"secrets in {family} (kind in channel: value/form hits [forms]: first excerpt):"]
    for (kind, name), found in sorted(summary.items()):
        forms_seen = ", ".join(sorted({f.form for f in found}))
        excerpt = found[0].excerpt
        lines.append(f"- {kind} in {name}: {len(found)} hit(s) [{forms_seen}]: ...{excerpt}...")
    pytest.fail("\n".join(lines), pytrace=False)


def test_connect_link_tokens_never_reach_the_log(world: World) -> None:
    """A link's token is a path segment: the host logs each request by its route template
    (issue 16, point 5). Opened once, opened again (spent) and guessed: never in the log."""
    link = world.connect_link(OIDC, "leak-link@contoso.com")
    token = link.rsplit("/", 1)[1]
    world.authorize_url(link)
    spent = world.http.get(link, allow_redirects=False, timeout=30)
    guessed = world.http.get(f"{link[: -len(token)]}{secrets.token_urlsafe(32)}", timeout=30)
    assert (spent.status_code, guessed.status_code) == (404, 404)
    log = world.devhost.log.read_text(errors="replace")
    assert token not in log
    assert quote(token) not in log
    # What is logged instead: the route, in the access line and in the function's outcome.
    assert "GET /api/connect/{session} -> 302" in log
    assert "GET /api/connect/{session} -> 404" in log
