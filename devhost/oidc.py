"""A real OAuth 2.0 / OpenID Connect server for tests and `make run`: oidc-provider under Node.

``OidcServer`` writes a config file (and, for https, a self-signed certificate for 127.0.0.1 and
localhost) into ``state_dir``, starts ``node devhost/oidc_server.mjs`` in its own process group
that dies with this process, and waits for its ``READY`` line. Helpers drive the built-in
development login and consent forms over plain HTTP and use the server's test-only control API
(``/__control``: counters, injected failures, access token TTL), which must never be exposed
beyond 127.0.0.1.

The provider keeps everything in memory: a restart forgets every grant and token. The child
gets SIGKILL when the *thread* that started it exits (PR_SET_PDEATHSIG), so start it from a
thread that lives as long as the server should (the main thread in tests and devhost/stack.py).
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import json
import os
import secrets
import selectors
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import parse_qs, urljoin, urlsplit

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ROOT = Path(__file__).resolve().parents[1]
SERVER_SCRIPT = ROOT / "devhost" / "oidc_server.mjs"
STARTS = 2  # tries to start the node process (see OidcServer.start)
DEFAULT_SCOPES = ("openid", "offline_access", "profile", "email", "api.read", "api.write")
DEMO_CLIENT_ID = "keysteward-demo"
DEMO_SCOPES = ("openid", "offline_access", "profile", "email", "api.read")
DAY = 24 * 60 * 60
_PR_SET_PDEATHSIG = 1
_MAX_HOPS = 20

Endpoint = Literal["token", "revocation", "introspection"]
AuthMethod = Literal["client_secret_basic", "client_secret_post"]


class OidcFlowError(RuntimeError):
    """The login and consent walk did not end at the client's redirect URI."""


@dataclass(frozen=True)
class OidcClient:
    client_id: str
    client_secret: str
    redirect_uris: Sequence[str]
    grant_types: Sequence[str] = ("authorization_code", "refresh_token")
    token_endpoint_auth_method: AuthMethod = "client_secret_basic"  # noqa: S105 - a method name


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ECDSA server certificates only sign the handshake.
_SERVER_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)


def write_self_signed_cert(cert_file: Path, key_file: Path, days: int = 30) -> None:
    """A certificate for IP 127.0.0.1 and DNS localhost that is its own trust anchor."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))  # tolerate small clock differences
        .not_valid_after(now + timedelta(days=days))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_SERVER_KEY_USAGE, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _die_with_parent() -> None:
    # Own process group (so stop() reaches node's children too) and SIGKILL when the Python
    # thread that started it dies, so a crashed test run leaves nothing behind.
    os.setsid()
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _json_object(response: requests.Response) -> dict[str, Any]:
    response.raise_for_status()
    body = response.json()
    if not isinstance(body, dict):
        raise TypeError(f"expected a JSON object from {response.url}, got {body!r}")
    return body


@dataclass
class _Form:
    action: str
    method: str
    fields: dict[str, str] = field(default_factory=dict)


class _FormParser(HTMLParser):
    """Collects forms with their action, method and named inputs (values unescaped)."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[_Form] = []
        self._open: _Form | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {key: value or "" for key, value in attrs}
        if tag == "form":
            self._open = _Form(values.get("action", ""), values.get("method", "get").lower())
            self.forms.append(self._open)
        elif tag == "input" and self._open is not None and values.get("name"):
            self._open.fields[values["name"]] = values.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._open = None


def _post_form(html: str) -> _Form | None:
    parser = _FormParser()
    parser.feed(html)
    return next((form for form in parser.forms if form.method == "post"), None)


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


@dataclass
class OidcServer:
    """oidc-provider on 127.0.0.1; ``start()`` returns self, ``stop()`` leaves no process."""

    state_dir: Path
    clients: Sequence[OidcClient] = ()
    scopes: Sequence[str] = DEFAULT_SCOPES
    port: int = field(default_factory=free_port)
    https: bool = False
    mount_path: str = "/"
    access_token_ttl: int = 3600
    refresh_token_ttl: int = 14 * DAY
    authorization_code_ttl: int = 60
    rotate_refresh_token: bool = True
    pkce_required: bool = True
    # Answer as Entra does: oid and tid, profile claims in the ID token, and a granted
    # `{resource}/.default` answered with that resource's permissions (entra_permissions).
    entra_claims: bool = False
    entra_permissions: Mapping[str, Sequence[str]] = field(default_factory=dict)
    log: Path | None = None  # node's stderr; default <state_dir>/oidc_server.log
    host: str = "127.0.0.1"
    startup_timeout: float = 60.0
    last_exit_code: int | None = field(default=None, init=False)  # set by stop()
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _http: requests.Session | None = field(default=None, init=False, repr=False)
    _discovery: dict[str, Any] | None = field(default=None, init=False, repr=False)

    # -- addresses ---------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"{'https' if self.https else 'http'}://{self.host}:{self.port}"

    @property
    def mount(self) -> str:
        """The mount path without a trailing slash: "" for the root."""
        path = self.mount_path.strip("/")
        return f"/{path}" if path else ""

    @property
    def issuer(self) -> str:
        return self.base_url + self.mount

    @property
    def control_url(self) -> str:
        return f"{self.base_url}/__control"

    @property
    def ca_file(self) -> Path | None:
        """The self-signed certificate to trust (https only)."""
        return self.state_dir / "oidc-cert.pem" if self.https else None

    @property
    def key_file(self) -> Path:
        return self.state_dir / "oidc-key.pem"

    @property
    def verify(self) -> str | bool:
        """What to pass as ``verify=`` to requests for this server."""
        return str(self.ca_file) if self.ca_file is not None else True

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def log_file(self) -> Path:
        return self.log or self.state_dir / "oidc_server.log"

    def client(self, client_id: str) -> OidcClient:
        return next(c for c in self.clients if c.client_id == client_id)

    # -- lifecycle ---------------------------------------------------------------------------

    @classmethod
    def demo(
        cls,
        state_dir: Path,
        port: int,
        redirect_uri: str | Sequence[str],
        *,
        log: Path | None = None,
    ) -> OidcServer:
        """The `make run` server: client keysteward-demo, its secret kept on disk.

        Plain http on 127.0.0.1, so a newcomer's browser walks the flow without a certificate
        warning (the ``oidc`` driver needs no TLS; only MSAL does).
        """
        state_dir.mkdir(parents=True, exist_ok=True)
        secret_file = state_dir / "demo-client-secret"
        if not secret_file.exists():
            secret_file.write_text(secrets.token_urlsafe(32) + "\n")
            secret_file.chmod(0o600)
        uris = [redirect_uri] if isinstance(redirect_uri, str) else list(redirect_uri)
        client = OidcClient(DEMO_CLIENT_ID, secret_file.read_text().strip(), uris)
        return cls(
            state_dir=state_dir,
            clients=[client],
            scopes=DEMO_SCOPES,
            port=port,
            log=log,
        )

    def config(self) -> dict[str, Any]:
        """The JSON config oidc_server.mjs reads."""
        config: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "mount_path": self.mount or "/",
            "issuer": self.issuer,
            "clients": [asdict(client) for client in self.clients],
            "scopes": list(self.scopes),
            "ttl": {
                "access_token": self.access_token_ttl,
                "refresh_token": self.refresh_token_ttl,
                "authorization_code": self.authorization_code_ttl,
            },
            "rotate_refresh_token": self.rotate_refresh_token,
            "pkce_required": self.pkce_required,
            "entra_claims": self.entra_claims,
            "entra_permissions": {r: list(p) for r, p in self.entra_permissions.items()},
        }
        if self.ca_file is not None:
            config["tls"] = {"cert_file": str(self.ca_file), "key_file": str(self.key_file)}
        return config

    def start(self) -> Self:
        if self._proc is not None:
            raise RuntimeError("already started")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self.ca_file is not None:
            write_self_signed_cert(self.ca_file, self.key_file)
        config_file = self.state_dir / "oidc-config.json"
        config_file.write_text(json.dumps(self.config(), indent=2))
        config_file.chmod(0o600)  # it holds client secrets
        for attempt in range(1, STARTS + 1):
            self._spawn(config_file)
            try:
                self._await_ready()
                break
            except TimeoutError:
                # Seen once on a loaded 2-core CI machine: node printed nothing for 30 s. A second
                # process is cheaper than a failed run; the log keeps what the first one said.
                self.stop()
                with self.log_file.open("a") as log:
                    log.write(f"oidc server: no READY line, start {attempt} of {STARTS}\n")
                if attempt == STARTS:
                    raise TimeoutError(
                        f"oidc server not ready in {self.startup_timeout:.0f} s, {STARTS} tries; "
                        f"see {self.log_file}; it ends: {self._log_tail()!r}"
                    ) from None
            except BaseException:
                self.stop()
                raise
        self._http = self.http_session()
        return self

    def _spawn(self, config_file: Path) -> None:
        with self.log_file.open("ab") as log:
            self._proc = subprocess.Popen(
                ["node", str(SERVER_SCRIPT), str(config_file)],
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,  # only the READY line is written there
                stderr=log,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - no locks are needed in the child
            )

    def _log_tail(self, lines: int = 5) -> str:
        try:
            return " | ".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _await_ready(self) -> None:
        assert self._proc is not None
        stdout = self._proc.stdout
        assert stdout is not None
        buffer = b""
        deadline = time.monotonic() + self.startup_timeout
        with selectors.DefaultSelector() as selector:
            selector.register(stdout, selectors.EVENT_READ)
            while b"\n" not in buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("no READY line in time")
                if not selector.select(remaining):
                    continue
                chunk = os.read(stdout.fileno(), 4096)
                if not chunk:
                    code = self._proc.wait(timeout=10)
                    raise RuntimeError(f"oidc server exited ({code}); see {self.log_file}")
                buffer += chunk
        line = buffer.split(b"\n", 1)[0].decode()
        if line != f"READY {self.base_url}":
            raise RuntimeError(f"unexpected first line from the oidc server: {line!r}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, SIGKILL whatever is left, reap the child."""
        proc, self._proc = self._proc, None
        if self._http is not None:
            self._http.close()
            self._http = None
        self._discovery = None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=timeout)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        self.last_exit_code = proc.wait(timeout=timeout)
        if proc.stdout is not None:
            proc.stdout.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- HTTP --------------------------------------------------------------------------------

    def http_session(self) -> requests.Session:
        """A session that trusts this server's certificate.

        trust_env=False because REQUESTS_CA_BUNDLE in the environment would otherwise replace
        ``session.verify`` on every request.
        """
        session = requests.Session()
        session.trust_env = False
        session.verify = self.verify
        return session

    @property
    def _session(self) -> requests.Session:
        if self._http is None:
            raise RuntimeError("the oidc server is not running")
        return self._http

    def discovery(self) -> dict[str, Any]:
        if self._discovery is None:
            url = f"{self.issuer}/.well-known/openid-configuration"
            self._discovery = _json_object(self._session.get(url, timeout=10))
        return self._discovery

    def endpoint(self, name: str) -> str:
        """An endpoint URL from discovery, e.g. "token_endpoint"."""
        return str(self.discovery()[name])

    # -- control API (tests only) ------------------------------------------------------------

    def _control(self, path: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        url = f"{self.control_url}/{path}"
        if body is None and path == "stats":
            return _json_object(self._session.get(url, timeout=10))
        return _json_object(self._session.post(url, json=dict(body or {}), timeout=10))

    def stats(self) -> dict[str, Any]:
        """Counters: grants / grant_errors by type and code, revocations, introspections, ..."""
        return self._control("stats")

    def reset_stats(self) -> None:
        self._control("reset")

    def fail_next(
        self,
        endpoint: Endpoint,
        status: int | None,
        count: int = 1,
        *,
        retry_after: int | None = None,
        error: str | None = None,
        delay_ms: int | None = None,
        error_codes: list[int] | None = None,
        error_description: str | None = None,
    ) -> None:
        """Answer the next ``count`` POSTs to ``endpoint`` with ``status`` (and the OAuth error
        body) without reaching the provider; ``status=None`` with ``delay_ms`` only delays them.
        ``error_codes`` (AADSTS numbers) makes the body Entra's."""
        body: dict[str, Any] = {"endpoint": endpoint, "status": status, "count": count}
        optional = {
            "retry_after": retry_after,
            "error": error,
            "delay_ms": delay_ms,
            "error_codes": error_codes,
            "error_description": error_description,
        }
        body.update({key: value for key, value in optional.items() if value is not None})
        self._control("fail", body)

    def clear_failures(self) -> None:
        self._control("clear_failures")

    def set_access_token_ttl(self, seconds: int) -> None:
        """Applies to access tokens issued from now on."""
        self._control("ttl", {"access_token": seconds})

    # -- OAuth helpers -----------------------------------------------------------------------

    def introspect(self, token: str, client_id: str, client_secret: str) -> dict[str, Any]:
        """RFC 7662: ``{"active": false}`` once a token is expired, revoked or rotated away."""
        response = self._session.post(
            self.endpoint("introspection_endpoint"),
            data={"token": token},
            auth=(client_id, client_secret),
            timeout=10,
        )
        return _json_object(response)

    def revoke(
        self, token: str, client_id: str, client_secret: str, token_type_hint: str | None = None
    ) -> None:
        """RFC 7009 revocation (200 even for unknown tokens)."""
        data = {"token": token}
        if token_type_hint:
            data["token_type_hint"] = token_type_hint
        response = self._session.post(
            self.endpoint("revocation_endpoint"),
            data=data,
            auth=(client_id, client_secret),
            timeout=10,
        )
        response.raise_for_status()

    def login_and_consent(
        self,
        authorize_url: str,
        account: str = "alice",
        session: requests.Session | None = None,
    ) -> str:
        """Walk the development login and consent forms like a browser would.

        Returns the redirect to the client (with ``code``, ``state``, ``iss``, or an OAuth
        ``error``) without requesting it. Raises OidcFlowError when the server stops elsewhere,
        e.g. on an error page for an unknown client or redirect URI.
        """
        http = session or self.http_session()
        redirect_uri = parse_qs(urlsplit(authorize_url).query).get("redirect_uri", [None])[0]
        # verify= per request: it wins over REQUESTS_CA_BUNDLE even in a trust_env session.
        response = http.get(authorize_url, allow_redirects=False, verify=self.verify, timeout=10)
        for _ in range(_MAX_HOPS):
            if response.is_redirect:
                location = urljoin(response.url, response.headers["Location"])
                if self._leaves_server(location, redirect_uri):
                    return location
                response = http.get(location, allow_redirects=False, verify=self.verify, timeout=10)
                continue
            form = _post_form(response.text) if response.status_code == 200 else None
            if form is None:
                raise OidcFlowError(
                    f"{response.status_code} at {response.url} with no form to submit: "
                    f"{response.text[:500]}"
                )
            fields = dict(form.fields)
            if "login" in fields:  # the login form accepts any account and password
                fields.update(login=account, password="any")  # noqa: S106
            response = http.post(
                urljoin(response.url, form.action),
                data=fields,
                allow_redirects=False,
                verify=self.verify,
                timeout=10,
            )
        raise OidcFlowError(f"no redirect to the client after {_MAX_HOPS} steps")

    def _leaves_server(self, location: str, redirect_uri: str | None) -> bool:
        without_query = location.split("#", 1)[0].split("?", 1)[0]
        if redirect_uri is not None and without_query == redirect_uri:
            return True
        return _origin(location) != _origin(self.base_url)
