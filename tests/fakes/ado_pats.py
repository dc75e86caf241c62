"""A strict fake of the Azure DevOps PAT Lifecycle Management API ("Tokens - Pats").

It serves ``/{organization}/_apis/tokens/pats`` (path matched case-insensitively, as the service's
own examples use ``/_apis/Tokens/Pats``) the way providers.md §1 documents it, plus
``GET /{organization}/_apis/connectionData`` so a test can prove that a PAT works (or no longer
does). Wire facts come from providers.md §1; where the docs are silent the choice is marked
UNCONFIRMED and, where a client must cope with either answer, it is a constructor argument or a
plain attribute a test can change at runtime.

Who calls is decided by ``bearer(token) -> user | None``: an ``Authorization: Bearer <Microsoft
Entra access token>``. It runs outside the fake's lock (it may ask a real OIDC server), so slow
introspection does not serialise concurrent requests. A PAT in the Authorization header is
refused on the PAT API (§1 Auth: "A PAT does not work here").

Helper records returned by ``pats()``/``active()``/``seed()`` are plain dicts with snake_case keys
and epoch-second floats, so they are never confused with the camelCase wire shapes.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any, Self

from tests.fakes.base import FakeServer, Incoming, Refusal, Response

# providers.md §1: the SessionTokenError enum of PatTokenResult.patTokenError, 7.1 ...
PAT_TOKEN_ERRORS_7_1: tuple[str, ...] = (
    "none",
    "displayNameRequired",
    "invalidDisplayName",
    "invalidValidTo",
    "invalidScope",
    "userIdRequired",
    "invalidUserId",
    "invalidUserType",
    "accessDenied",
    "failedToIssueAccessToken",
    "invalidClient",
    "invalidClientType",
    "invalidClientId",
    "invalidTargetAccounts",
    "hostAuthorizationNotFound",
    "authorizationNotFound",
    "failedToUpdateAccessToken",
    "sourceNotSupported",
    "invalidSourceIP",
    "invalidSource",
    "duplicateHash",
    "sshPolicyDisabled",
    "invalidToken",
    "tokenNotFound",
    "invalidAuthorizationId",
    "failedToReadTenantPolicy",
    "globalPatPolicyViolation",
    "fullScopePatPolicyViolation",
    "patLifespanPolicyViolation",
    "invalidTokenType",
    "invalidAudience",
    "invalidSubject",
)
# ... and what 7.2 adds.
PAT_TOKEN_ERRORS_7_2_ADDED: tuple[str, ...] = (
    "deploymentHostNotSupported",
    "disablePatCreationPolicyViolation",
    "failedToReadOrgPolicy",
)
# The whole enum, "none" (success) first. Iterate ``PAT_TOKEN_ERRORS[1:]`` for the failures.
PAT_TOKEN_ERRORS: tuple[str, ...] = PAT_TOKEN_ERRORS_7_1 + PAT_TOKEN_ERRORS_7_2_ADDED

DEFAULT_API_VERSIONS = ("7.1-preview.1", "7.2-preview.1")  # providers.md §1 api-version
DISPLAY_FILTERS = ("active", "revoked", "expired", "all")  # §1 List displayFilterOption
SORT_OPTIONS = ("displayName", "displayDate", "status")  # §1 List sortByOption
TOP_LIMIT = 100  # §1 List: $top has a "limit of 100"
PAT_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"  # classic PATs: 52 lowercase base32 chars
PAT_LENGTH = 52
# UNCONFIRMED scope grammar: §1 only names "vso.work_full", "app_token", "vso.packaging".
SCOPE_WORD = re.compile(r"app_token|vso\.[a-z][a-z0-9_]*")
MUTATING = frozenset({"create", "update", "revoke"})
DAY = 86400.0
LISTEN_BACKLOG = 128
# UNCONFIRMED (§1, §8: "the list operation is the only way to notice"): what Get by
# authorizationId answers for a PAT revoked outside. "entry": the PatTokenResult as if nothing
# happened; "authorizationNotFound": that patTokenError; "http404": a plain 404; "null": 200 with
# a null patToken and patTokenError "none".
REVOKED_GET_ANSWERS = ("entry", "authorizationNotFound", "http404", "null")
FULL_SCOPE = "app_token"  # §1: "app_token" (full access)

_PATS_PATH = re.compile(r"/([^/]+)/_apis/tokens/pats/?", re.IGNORECASE)
_CONNECTION_DATA_PATH = re.compile(r"/([^/]+)/_apis/connectiondata/?", re.IGNORECASE)
# UNCONFIRMED sort order for sortByOption=status (the spec names the option only).
_STATUS_RANK = {"active": 0, "expired": 1, "revoked": 2}
_WWW_AUTHENTICATE = {
    "WWW-Authenticate": 'Bearer authorization_uri="https://login.microsoftonline.com/common"'
}


def iso(ts: float) -> str:
    """``2020-11-02T22:56:52.103333Z``: UTC, trailing fraction zeros trimmed (as §1 examples)."""
    moment = datetime.fromtimestamp(ts, UTC)
    fraction = f"{moment.microsecond:06d}".rstrip("0")
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{fraction}" if fraction else "") + "Z"


def parse_iso(value: str) -> float:
    """An ISO 8601 date(-time) as epoch seconds; a value without offset is taken as UTC."""
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def new_pat_secret() -> str:
    return "".join(secrets.choice(PAT_ALPHABET) for _ in range(PAT_LENGTH))


@dataclass
class _Pat:
    authorization_id: str
    user: str
    organization: str | None  # None: allOrgs, i.e. every org of the user (§1 targetAccounts)
    display_name: str
    scope: str
    valid_from: float  # the creation time; §1's update clamp counts from it
    valid_to: float
    secret: str
    revoked_by: str | None = None  # "api" (DELETE) | "outside" (the user, in the ADO UI)
    revoked_at: float | None = None

    def state(self, now: float) -> str:
        if self.revoked_by is not None:
            return "revoked"
        return "expired" if self.valid_to <= now else "active"

    def covers(self, organization: str) -> bool:
        return self.organization is None or self.organization == organization


@dataclass(frozen=True)
class _Options:
    display_filter: str
    sort_by: str
    ascending: bool


@dataclass(frozen=True)
class _Cursor:
    user: str
    organization: str
    options: _Options
    last: tuple[Any, ...]  # the sort key of the last PAT handed out


@dataclass
class _Call:
    """One request to the PAT API, once routed and authenticated."""

    request: Incoming
    op: str
    organization: str
    user: str
    version: str
    query: dict[str, str]  # parameter names lower-cased (the service binds them so)

    @property
    def v72(self) -> bool:
        major, _, rest = self.version.partition(".")
        minor = rest.split("-")[0]
        try:
            return (int(major), int(minor)) >= (7, 2)
        except ValueError:
            return False


class AdoPatsFake(FakeServer):
    def __init__(
        self,
        *,
        organizations: Iterable[str] = ("contoso",),
        bearer: Callable[[str], str | None],
        page_size: int = 100,
        max_lifespan_days: float | None = None,
        revoke_status: int = 204,
        error_status: int = 400,
        api_versions: Iterable[str] = DEFAULT_API_VERSIONS,
        now: Callable[[], float] = time.time,
        port: int | None = None,
    ) -> None:
        super().__init__(now=now, port=port)
        self.organizations: tuple[str, ...] = tuple(organizations)
        if not self.organizations:
            raise ValueError("at least one organization")
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        if revoke_status not in (200, 204):
            # providers.md §1 Revoke: the spec says 200, the RevokePat example shows 204.
            raise ValueError("revoke_status must be 200 or 204")
        self.bearer = bearer
        self.page_size = page_size
        # "Enforce maximum personal access token lifespan" (§1 lifespan policy); None: off.
        self.max_lifespan_days = max_lifespan_days
        self.revoke_status = revoke_status
        # UNCONFIRMED (§1 "Error codes"): the HTTP status sent with a non-"none" patTokenError.
        self.error_status = error_status
        # UNCONFIRMED (§1 Update says only "must still be valid (not revoked)"): the enum answered
        # to an update of a revoked PAT. "invalidAuthorizationId" is the other candidate.
        self.update_revoked_error = "authorizationNotFound"
        # Organisation policies (§1 "Lifespan policy", §1 Global PATs, §8 out-of-band changes):
        # each refuses a Create with its own patTokenError (with ``error_status``), makes nothing.
        self.pat_creation_disabled = False  # disablePatCreationPolicyViolation (7.2 enum)
        self.full_scope_forbidden = False  # app_token: fullScopePatPolicyViolation
        self.global_pats_forbidden = False  # allOrgs: globalPatPolicyViolation
        # With ``max_lifespan_days``: True refuses a longer validTo (patLifespanPolicyViolation)
        # instead of the documented silent clamp; the enum value exists, so both are served.
        self.lifespan_refuses = False
        # UNCONFIRMED read-back of a revoked PAT: see REVOKED_GET_ANSWERS; whether it (and an
        # expired one) stays in the "active" list; whether its validTo then shows the revocation.
        self.revoked_get = "entry"
        self.stale_in_active_list = False
        self.revoked_shows_past_valid_to = False
        self.api_versions: tuple[str, ...] = tuple(api_versions)
        self.latency = 0.0  # seconds every request waits before it is handled (runtime-settable)
        self.calls: Counter[tuple[str, str]] = Counter()  # (method, op) of every routed request
        self.checks: Counter[str] = Counter()  # authorizationId -> connectionData calls with it
        self._pats: dict[str, _Pat] = {}
        self._by_secret: dict[str, str] = {}
        self._cursors: dict[str, _Cursor] = {}
        self._injected: deque[str] = deque()
        self._caller = threading.local()

    # -- test controls ---------------------------------------------------------------------------

    def account_id(self, organization: str) -> str:
        """The org's account GUID, as put in ``targetAccounts`` (deterministic per name)."""
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"https://dev.azure.com/{organization.lower()}"))

    def user_id(self, user: str) -> str:
        """The user's GUID, as ``connectionData`` reports it (deterministic per user)."""
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"urn:ado-user:{user}"))

    def inject_error(self, error: str, count: int = 1) -> None:
        """The next ``count`` create/update/revoke calls answer ``patTokenError=error`` and change
        nothing (a tenant/org policy such as ``fullScopePatPolicyViolation``, or a server fault)."""
        if error not in PAT_TOKEN_ERRORS or error == "none":
            raise ValueError(f"{error!r} is not a failing SessionTokenError value (§1)")
        with self._lock:
            self._injected.extend([error] * count)

    def seed(
        self,
        user: str,
        display_name: str = "made in the ADO UI",
        *,
        scope: str = "vso.code",
        valid_to: float | None = None,
        all_orgs: bool = False,
        organization: str | None = None,
    ) -> dict[str, Any]:
        """A PAT the user made outside Keysteward (the ADO UI); ``valid_to``: +30 days."""
        with self._lock:
            now = self.now()
            org = None if all_orgs else (organization or self.organizations[0])
            valid_to = valid_to or now + 30 * DAY
            pat = self._add(user, org, name=display_name, scope=scope, valid_to=valid_to, now=now)
            return self._record(pat)

    def pats(self, user: str | None = None) -> list[dict[str, Any]]:
        """Every PAT (or ``user``'s), secrets and states included, oldest first."""
        with self._lock:
            return [self._record(p) for p in self._pats.values() if user in (None, p.user)]

    def active(self, user: str) -> list[dict[str, Any]]:
        return [p for p in self.pats(user) if p["state"] == "active"]

    def secret_active(self, secret: str) -> bool:
        with self._lock:
            pat = self._pats.get(self._by_secret.get(secret, ""))
            return pat is not None and pat.state(self.now()) == "active"

    def revoke_outside(self, authorization_id: str) -> None:
        """The user revokes the PAT in the ADO UI (or an administrator, through the Token Admin
        API's revocations, §1), behind Keysteward's back."""
        with self._lock:
            pat = self._pats[authorization_id]
            if pat.revoked_by is None:
                pat.revoked_by, pat.revoked_at = "outside", self.now()

    def change_outside(
        self, authorization_id: str, *, valid_to: float | None = None, scope: str | None = None
    ) -> None:
        """The user (in the ADO UI) or a policy changes the PAT's ``validTo`` or scope (§8)."""
        with self._lock:
            pat = self._pats[authorization_id]
            pat.valid_to = pat.valid_to if valid_to is None else valid_to
            pat.scope = pat.scope if scope is None else " ".join(scope.split())

    def expire(self, authorization_id: str) -> None:
        """The PAT reaches its ``validTo`` now."""
        with self._lock:
            pat = self._pats[authorization_id]
            pat.valid_to = min(pat.valid_to, self.now())

    # -- plumbing --------------------------------------------------------------------------------

    def start(self) -> Self:
        super().start()
        if self._server is not None:
            # socketserver listens with a backlog of 5; a benchmark opening many connections at
            # once would see dropped SYNs (1 s retransmits). Linux lets a listener grow it.
            self._server.socket.listen(LISTEN_BACKLOG)
        return self

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        if self.latency > 0:  # outside the lock: concurrent requests wait side by side
            self._stopping.wait(self.latency)
        super()._handle(handler)

    def _parse(self, handler: BaseHTTPRequestHandler) -> Incoming | None:
        """Parse, then resolve a Bearer token through ``bearer`` while NOT holding the lock."""
        request = super()._parse(handler)
        if request is None:
            return None
        self._caller.user = None
        self._caller.error = ""
        token = request.bearer()
        if token is not None:
            try:
                self._caller.user = self.bearer(token)
            except Exception as exc:  # the test's resolver broke; say so instead of hanging up
                self._caller.error = f"bearer resolver raised {exc!r}"
        return request

    def _route(self, request: Incoming) -> Response:
        if match := _PATS_PATH.fullmatch(request.path):
            return self._pats_api(request, self._organization(request, match.group(1)))
        if match := _CONNECTION_DATA_PATH.fullmatch(request.path):
            return self._connection_data(request, self._organization(request, match.group(1)))
        return Response.text(404, "Not Found")

    def _organization(self, request: Incoming, name: str) -> str:
        for organization in self.organizations:  # org names are case-insensitive
            if organization.lower() == name.lower():
                return organization
        reason = f"organization {name!r} does not exist"
        self._violation(request, reason)
        raise Refusal(self._vss_error(404, reason, "OrganizationNotFoundException"))

    # -- /{organization}/_apis/tokens/pats -------------------------------------------------------

    def _pats_api(self, request: Incoming, organization: str) -> Response:
        query = {name.lower(): value for name, value in request.query.items()}
        op = self._operation(request, query)
        self.calls[(request.method, op)] += 1
        user = self._authenticate(request)
        version = self._api_version(request, query)
        call = _Call(request, op, organization, user, version, query)
        if op in MUTATING and self._injected:
            return self._error(call, self._injected.popleft())  # a policy, not a client fault
        handlers: dict[str, Callable[[_Call], Response]] = {
            "list": self._list,
            "get": self._get,
            "create": self._create,
            "update": self._update,
            "revoke": self._revoke,
        }
        return handlers[op](call)

    def _operation(self, request: Incoming, query: dict[str, str]) -> str:
        if request.method == "GET":
            return "get" if "authorizationid" in query else "list"
        ops = {"POST": "create", "PUT": "update", "DELETE": "revoke"}
        if request.method not in ops:
            self._violation(request, f"{request.method} is not an operation of the PAT API (§1)")
            raise Refusal(self._vss_error(405, "Method Not Allowed", "HttpMethodNotAllowed"))
        return ops[request.method]

    def _authenticate(self, request: Incoming) -> str:
        if self._caller.error:
            raise Refusal(Response.text(500, self._caller.error))
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        value = value.strip()
        if scheme.lower() == "basic" or (scheme.lower() == "bearer" and value in self._by_secret):
            # providers.md §1 Auth: Bearer <Microsoft Entra access token>; "A PAT does not work".
            self._violation(request, "a PAT does not work on the PAT API; send an Entra Bearer")
            body = {"message": "Personal access tokens cannot be used with this API."}
            raise Refusal(Response.json(401, body, _WWW_AUTHENTICATE))
        if scheme.lower() != "bearer" or not value:
            self._violation(request, "no Authorization: Bearer <Entra access token> (§1 Auth)")
            raise Refusal(Response(401, b"", dict(_WWW_AUTHENTICATE)))
        user: str | None = self._caller.user
        if user is None:  # expired or unknown Entra token: the provider's verdict, no fault
            raise Refusal(Response(401, b"", dict(_WWW_AUTHENTICATE)))
        return user

    def _api_version(self, request: Incoming, query: dict[str, str]) -> str:
        version = query.get("api-version", "")
        if not version:
            reason = "No api-version was supplied; it is a required query parameter (§1)"
            self._violation(request, reason)
            raise Refusal(self._vss_error(400, reason, "VssVersionNotSpecifiedException"))
        for known in self.api_versions:
            if known.lower() == version.lower():
                return known
        reason = f"api-version {version!r} is not one of {list(self.api_versions)} (§1)"
        self._violation(request, reason)
        raise Refusal(self._vss_error(400, reason, "VssInvalidPreviewVersionException"))

    # -- List ------------------------------------------------------------------------------------

    def _list(self, c: _Call) -> Response:
        options = self._list_options(c)
        limit = min(self.page_size, self._top(c), TOP_LIMIT)
        now = self.now()
        mine = [
            p
            for p in self._pats.values()
            if p.user == c.user
            and p.covers(c.organization)
            and (
                options.display_filter in ("all", p.state(now))
                or (options.display_filter == "active" and self.stale_in_active_list)
            )
        ]

        def key(p: _Pat) -> tuple[Any, ...]:
            if options.sort_by == "displayDate":  # UNCONFIRMED: "display date" taken as validTo
                return (p.valid_to, p.authorization_id)
            if options.sort_by == "status":
                return (_STATUS_RANK[p.state(now)], p.display_name.casefold(), p.authorization_id)
            return (p.display_name.casefold(), p.display_name, p.authorization_id)

        mine.sort(key=key, reverse=not options.ascending)
        token = c.query.get("continuationtoken", "")
        if token:  # "" is the first page, as the ListPats example's "no next page" value
            last = self._cursor(c, token, options).last
            mine = [p for p in mine if (key(p) > last) == options.ascending and key(p) != last]
        page = mine[:limit]
        next_token = ""  # §1: an empty continuationToken means there is no next page
        if len(mine) > limit:
            next_token = secrets.token_urlsafe(18)  # opaque; a keyset cursor kept server-side
            self._cursors[next_token] = _Cursor(c.user, c.organization, options, key(page[-1]))
        body = {"continuationToken": next_token, "patTokens": [self._wire(p) for p in page]}
        return Response.json(200, body)

    def _list_options(self, c: _Call) -> _Options:
        q = c.query
        display_filter = self._choice(c, "displayFilterOption", DISPLAY_FILTERS, "active")
        sort_by = self._choice(c, "sortByOption", SORT_OPTIONS, "displayName")
        ascending_text = q.get("issortascending", "true").lower()
        if ascending_text not in ("true", "false"):
            raise self._bad_request(c, f"isSortAscending must be a boolean, got {ascending_text!r}")
        return _Options(display_filter, sort_by, ascending_text == "true")

    def _choice(self, c: _Call, name: str, allowed: tuple[str, ...], default: str) -> str:
        value = c.query.get(name.lower(), default)
        for option in allowed:  # enum binding is case-insensitive
            if option.lower() == value.lower():
                return option
        raise self._bad_request(c, f"{name} must be one of {list(allowed)}, got {value!r} (§1)")

    def _top(self, c: _Call) -> int:
        text = c.query.get("$top")
        if text is None:
            return TOP_LIMIT
        try:
            top = int(text)
        except ValueError:
            top = 0
        if top < 1:
            raise self._bad_request(c, f"$top must be a positive int32, got {text!r}")
        return top  # capped at 100 by the caller (§1: "limit of 100")

    def _cursor(self, c: _Call, token: str, options: _Options) -> _Cursor:
        cursor = self._cursors.get(token)
        if cursor is None:
            raise self._bad_request(c, "continuationToken was not issued by this API")
        if (cursor.user, cursor.organization) != (c.user, c.organization):
            raise self._bad_request(c, "continuationToken belongs to another user or organization")
        if cursor.options != options:
            # §1 List: "later calls must pass the same filter options".
            raise self._bad_request(
                c,
                f"continuationToken was issued for {cursor.options}, not {options}: "
                "later calls must pass the same filter options (§1)",
            )
        return cursor

    # -- Get / Create / Update / Revoke ----------------------------------------------------------

    def _get(self, c: _Call) -> Response:
        pat = self._owned(c, c.query.get("authorizationid"))
        if pat.revoked_by is None or self.revoked_get == "entry":
            return self._result(c, pat)
        if self.revoked_get == "authorizationNotFound":
            return self._error(c, "authorizationNotFound")
        if self.revoked_get == "http404":
            return self._vss_error(404, "The authorization was not found.", "NotFound")
        return Response.json(200, {"patToken": None, "patTokenError": "none"})

    def _create(self, c: _Call) -> Response:
        body = self._json_body(c)
        name = self._display_name(c, body.get("displayName"))
        scope = self._scope(c, body.get("scope"))
        valid_to = self._valid_to(c, body.get("validTo"))
        all_orgs = self._all_orgs(c, body.get("allOrgs", False))
        # §1 Create takes all of {displayName, scope, validTo}; allOrgs defaults to false.
        if name is None:
            raise self._refuse(c, "displayNameRequired", "displayName is required on Create")
        if scope is None:
            raise self._refuse(c, "invalidScope", "scope is required on Create")
        if valid_to is None:
            raise self._refuse(c, "invalidValidTo", "validTo is required on Create")
        now = self.now()
        if policy := self._policy_refusal(scope, valid_to, all_orgs, now):
            raise self._refuse(c, policy, "refused by an organisation policy", fault=False)
        if self.max_lifespan_days is not None:
            # §1 lifespan policy: silently clamped to now + max on Create; no error.
            valid_to = min(valid_to, now + self.max_lifespan_days * DAY)
        organization = None if all_orgs else c.organization
        pat = self._add(c.user, organization, name=name, scope=scope, valid_to=valid_to, now=now)
        return self._result(c, pat, with_secret=True)  # §1: only Create carries the secret

    def _update(self, c: _Call) -> Response:
        body = self._json_body(c)
        pat = self._owned(c, body.get("authorizationId"))
        if pat.revoked_by is not None:
            # §1 Update: "The token must still be valid (not revoked)". A client that revoked the
            # PAT itself and then updates it has a bug; one revoked outside could not know.
            reason = "the PAT is revoked; Update needs a valid (not revoked) token (§1)"
            raise self._refuse(c, self.update_revoked_error, reason, fault=pat.revoked_by == "api")
        name = self._display_name(c, body.get("displayName"))
        scope = self._scope(c, body.get("scope"))
        valid_to = self._valid_to(c, body.get("validTo"))
        all_orgs = self._all_orgs(c, body.get("allOrgs"))
        if valid_to is not None and self.max_lifespan_days is not None:
            # §1 lifespan policy: on Update the clamp is original creation + max.
            valid_to = min(valid_to, pat.valid_from + self.max_lifespan_days * DAY)
        pat.display_name = pat.display_name if name is None else name
        pat.scope = pat.scope if scope is None else scope
        pat.valid_to = pat.valid_to if valid_to is None else valid_to
        if all_orgs is not None:
            pat.organization = None if all_orgs else c.organization
        return self._result(c, pat)

    def _revoke(self, c: _Call) -> Response:
        pat = self._owned(c, c.query.get("authorizationid"))
        if pat.revoked_by is None:
            pat.revoked_by, pat.revoked_at = "api", self.now()
        # UNCONFIRMED: revoking an already revoked PAT; this fake answers success again.
        # §1 Revoke: the spec says 200, the RevokePat example 204 with an empty body.
        return Response(self.revoke_status)

    def _policy_refusal(
        self, scope: str, valid_to: float, all_orgs: bool | None, now: float
    ) -> str | None:
        if self.pat_creation_disabled:
            return "disablePatCreationPolicyViolation"
        if self.full_scope_forbidden and FULL_SCOPE in scope.split():
            return "fullScopePatPolicyViolation"
        if self.global_pats_forbidden and all_orgs:
            return "globalPatPolicyViolation"
        limit = self.max_lifespan_days
        if self.lifespan_refuses and limit is not None and valid_to > now + limit * DAY:
            return "patLifespanPolicyViolation"
        return None

    # -- shared pieces ---------------------------------------------------------------------------

    def _add(
        self,
        user: str,
        organization: str | None,
        *,
        name: str,
        scope: str,
        valid_to: float,
        now: float,
    ) -> _Pat:
        secret = new_pat_secret()
        pat = _Pat(str(uuid.uuid4()), user, organization, name, scope, now, valid_to, secret)
        self._pats[pat.authorization_id] = pat
        self._by_secret[secret] = pat.authorization_id
        return pat

    def _owned(self, c: _Call, authorization_id: object) -> _Pat:
        if not isinstance(authorization_id, str) or not authorization_id:
            raise self._refuse(c, "invalidAuthorizationId", "authorizationId is required (§1)")
        try:
            key = str(uuid.UUID(authorization_id))
        except ValueError:
            raise self._refuse(
                c, "invalidAuthorizationId", f"authorizationId {authorization_id!r} is no uuid"
            ) from None
        pat = self._pats.get(key)
        if pat is None or pat.user != c.user or not pat.covers(c.organization):
            why = "unknown" if pat is None else "not the caller's PAT in this organization"
            raise self._refuse(c, "authorizationNotFound", f"authorizationId {key}: {why}")
        return pat

    def _json_body(self, c: _Call) -> dict[str, Any]:
        content_type = c.request.content_type
        try:
            body = json.loads(c.request.body or b"null")
        except ValueError:
            body = None
        if content_type != "application/json" or not isinstance(body, dict):
            raise self._bad_request(
                c, f"the body must be a JSON object sent as application/json, got {content_type!r}"
            )
        return body

    def _display_name(self, c: _Call, value: object) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise self._refuse(c, "invalidDisplayName", f"displayName must be a string: {value!r}")
        if not value.strip():
            raise self._refuse(c, "displayNameRequired", "displayName is blank")
        return value

    def _scope(self, c: _Call, value: object) -> str | None:
        if value is None:
            return None
        words = value.split() if isinstance(value, str) else []
        bad = [w for w in words if not SCOPE_WORD.fullmatch(w)]
        if not words or bad:
            # §1: scope is a space-separated string such as "vso.work_full" or "app_token".
            raise self._refuse(c, "invalidScope", f"scope {value!r} is not space-separated scopes")
        return " ".join(words)

    def _valid_to(self, c: _Call, value: object) -> float | None:
        if value is None:
            return None
        try:
            valid_to = parse_iso(value) if isinstance(value, str) else None
        except ValueError:
            valid_to = None
        if valid_to is None:
            raise self._refuse(c, "invalidValidTo", f"validTo {value!r} is not an ISO date-time")
        if valid_to <= self.now():
            raise self._refuse(c, "invalidValidTo", f"validTo {value!r} is not in the future")
        return valid_to

    def _all_orgs(self, c: _Call, value: object) -> bool | None:
        if value is None or isinstance(value, bool):
            return value
        raise self._bad_request(c, f"allOrgs must be a JSON boolean, got {value!r}")

    def _wire(self, pat: _Pat, *, with_secret: bool = False) -> dict[str, Any]:
        """A §1 PatToken; ``token`` is null except in the Create answer."""
        valid_to = pat.valid_to
        if pat.revoked_at is not None and self.revoked_shows_past_valid_to:
            valid_to = min(valid_to, pat.revoked_at)
        return {
            "displayName": pat.display_name,
            "validTo": iso(valid_to),
            "scope": pat.scope,
            # §1: null when the PAT is for all of the user's orgs (allOrgs=true).
            "targetAccounts": (
                None if pat.organization is None else [self.account_id(pat.organization)]
            ),
            "validFrom": iso(pat.valid_from),
            "authorizationId": pat.authorization_id,
            "token": pat.secret if with_secret else None,
        }

    def _result(self, c: _Call, pat: _Pat, *, with_secret: bool = False) -> Response:
        body: dict[str, Any] = {
            "patToken": self._wire(pat, with_secret=with_secret),
            "patTokenError": "none",
        }
        if c.v72:
            body["patTokenErrorMessage"] = None  # §1: 7.2 adds it to PatTokenResult
        return Response.json(200, body)

    def _error(self, c: _Call, error: str) -> Response:
        """A §1 PatTokenResult carrying ``error``, with the (UNCONFIRMED) ``error_status``."""
        body: dict[str, Any] = {"patToken": None, "patTokenError": error}
        if c.v72:
            body["patTokenErrorMessage"] = f"The {c.op} operation failed: {error}."
        return Response.json(self.error_status, body)

    def _refuse(self, c: _Call, error: str, reason: str, *, fault: bool = True) -> Refusal:
        if fault:
            self._violation(c.request, f"{error}: {reason}")
        return Refusal(self._error(c, error))

    def _bad_request(self, c: _Call, reason: str) -> Refusal:
        """Refused while binding query or body: a plain 400, not a PatTokenResult."""
        self._violation(c.request, reason)
        return Refusal(self._vss_error(400, reason, "ArgumentException"))

    @staticmethod
    def _vss_error(status: int, message: str, type_key: str) -> Response:
        # The usual Azure DevOps exception envelope (UNCONFIRMED for this API: §1 lists none).
        body = {
            "$id": "1",
            "innerException": None,
            "message": message,
            "typeName": f"Microsoft.VisualStudio.Services.WebApi.{type_key}",
            "typeKey": type_key,
            "errorCode": 0,
            "eventId": 3000,
        }
        return Response.json(status, body)

    def _record(self, pat: _Pat) -> dict[str, Any]:
        return {
            "authorization_id": pat.authorization_id,
            "user": pat.user,
            "organization": pat.organization,
            "all_orgs": pat.organization is None,
            "display_name": pat.display_name,
            "scope": pat.scope,
            "valid_from": pat.valid_from,
            "valid_to": pat.valid_to,
            "token": pat.secret,
            "state": pat.state(self.now()),
            "revoked_by": pat.revoked_by,
            "checks": self.checks[pat.authorization_id],
        }

    # -- GET /{organization}/_apis/connectionData ------------------------------------------------

    def _connection_data(self, request: Incoming, organization: str) -> Response:
        """Proves a PAT works: ``Authorization: Basic base64(<any user>:<PAT>)``."""
        if request.method != "GET":
            self._violation(request, f"{request.method} is not allowed here, only GET")
            return Response.text(405, "Method Not Allowed")
        self.calls[("GET", "connectionData")] += 1
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        value = value.strip()
        if scheme.lower() == "basic":
            return self._connection_data_pat(request, organization, value)
        if scheme.lower() == "bearer" and value in self._by_secret:
            self._violation(request, "a PAT goes in Basic auth (any user name), not Bearer")
        elif scheme.lower() == "bearer" and self._caller.user is not None:
            return self._connection(self._caller.user)  # an Entra token works here too
        elif scheme.lower() != "bearer":
            self._violation(request, "connectionData without credentials")
        return Response(401, b"", dict(_WWW_AUTHENTICATE))

    def _connection_data_pat(self, request: Incoming, organization: str, value: str) -> Response:
        try:
            _, _, secret = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            secret = ""
        pat = self._pats.get(self._by_secret.get(secret, ""))
        if pat is None:
            self._violation(request, "Basic credentials carry no PAT issued by this fake")
            return Response(401, b"", dict(_WWW_AUTHENTICATE))
        self.checks[pat.authorization_id] += 1
        if pat.state(self.now()) != "active" or not pat.covers(organization):
            return Response(401, b"", dict(_WWW_AUTHENTICATE))  # revoked, expired or other org
        return self._connection(pat.user)

    def _connection(self, user: str) -> Response:
        identity = {
            "id": self.user_id(user),
            "descriptor": f"aad.{base64.b64encode(user.encode()).decode()}",
            "providerDisplayName": user,
            "isActive": True,
        }
        body = {
            "authenticatedUser": identity,
            "authorizedUser": identity,
            "instanceId": str(uuid.uuid5(uuid.NAMESPACE_URL, self.url)),
            "deploymentType": "hosted",
        }
        return Response.json(200, body)
