"""The Azure DevOps PAT Lifecycle Management fake answers as providers.md §1 documents.

Each test drives ``AdoPatsFake`` over real HTTP with plain ``requests``, as a correct client and as
wrong ones, and checks both the documented answer and the violation the fake recorded.
"""

from __future__ import annotations

import base64
import re
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from tests.fakes import AdoPatsFake
from tests.fakes.ado_pats import PAT_TOKEN_ERRORS, PAT_TOKEN_ERRORS_7_2_ADDED, iso
from tests.peers.processes import wait_until

T0 = 1_750_000_000.0  # a fixed start: the fake's time moves only with advance()
DAY = 86400.0
V71, V72 = "7.1-preview.1", "7.2-preview.1"
# Entra access tokens as the bearer resolver knows them (a dict lookup stands in for OIDC).
ENTRA = {"entra-alice": "alice", "entra-bob": "bob"}
ALICE, BOB = "entra-alice", "entra-bob"
PAT_SHAPE = re.compile(r"[a-z0-9]{52}")


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.trust_env = False  # no proxy between us and 127.0.0.1
        yield session


def make_fake(**options: Any) -> AdoPatsFake:
    return AdoPatsFake(bearer=ENTRA.get, now=lambda: T0, **options)


@pytest.fixture
def fake() -> Iterator[AdoPatsFake]:
    with make_fake(organizations=("contoso", "fabrikam")) as server:
        yield server


def pats_url(fake: AdoPatsFake, org: str = "contoso", path: str = "_apis/tokens/pats") -> str:
    return f"{fake.url}/{org}/{path}"


def call(
    http: requests.Session,
    fake: AdoPatsFake,
    method: str,
    *,
    bearer: str | None = ALICE,
    org: str = "contoso",
    version: str | None = V71,
    params: dict[str, Any] | None = None,
    body: dict[str, Any] | None = None,
    timeout: float = 10,
) -> requests.Response:
    query = dict(params or {})
    if version is not None:
        query["api-version"] = version
    headers = {} if bearer is None else {"Authorization": f"Bearer {bearer}"}
    return http.request(
        method,
        pats_url(fake, org),
        params=query,
        json=body,
        headers=headers,
        timeout=timeout,
    )


def create(
    http: requests.Session,
    fake: AdoPatsFake,
    name: str = "keysteward",
    *,
    days: float = 30,
    scope: str = "vso.code vso.work",
    all_orgs: bool = False,
    **kwargs: Any,
) -> requests.Response:
    body = {
        "displayName": name,
        "scope": scope,
        "validTo": iso(T0 + days * DAY),
        "allOrgs": all_orgs,
    }
    return call(http, fake, "POST", body=body, **kwargs)


def created(http: requests.Session, fake: AdoPatsFake, name: str = "keysteward", **kw: Any) -> Any:
    response = create(http, fake, name, **kw)
    assert response.status_code == 200, response.text
    assert response.json()["patTokenError"] == "none"
    return response.json()["patToken"]


def connection_data(
    http: requests.Session, fake: AdoPatsFake, pat: str, org: str = "contoso"
) -> requests.Response:
    basic = base64.b64encode(f"keysteward:{pat}".encode()).decode()  # any user part works
    return http.get(
        f"{fake.url}/{org}/_apis/connectionData", headers={"Authorization": f"Basic {basic}"}
    )


def list_all(
    http: requests.Session, fake: AdoPatsFake, params: dict[str, Any], **kw: Any
) -> list[list[dict[str, Any]]]:
    """Every page, following continuation tokens until the empty one (§1)."""
    pages: list[list[dict[str, Any]]] = []
    token = ""
    while True:
        query = {**params, "continuationToken": token} if token else dict(params)
        response = call(http, fake, "GET", params=query, **kw)
        assert response.status_code == 200, response.text
        assert set(response.json()) == {"continuationToken", "patTokens"}
        pages.append(response.json()["patTokens"])
        token = response.json()["continuationToken"]
        if token == "":
            return pages
        assert len(pages) < 50, "the continuation tokens never ran out"


# -- the correct client ------------------------------------------------------------------------


def test_a_correct_client_goes_through_the_whole_lifecycle(
    fake: AdoPatsFake, http: requests.Session
) -> None:
    response = create(http, fake, "ks-rotation", days=30)

    assert response.status_code == 200
    result = response.json()
    assert set(result) == {"patToken", "patTokenError"}  # 7.1: no patTokenErrorMessage
    assert result["patTokenError"] == "none"
    pat = result["patToken"]
    assert set(pat) == {
        "displayName",
        "validTo",
        "scope",
        "targetAccounts",
        "validFrom",
        "authorizationId",
        "token",
    }
    secret, authorization_id = pat["token"], pat["authorizationId"]
    assert PAT_SHAPE.fullmatch(secret)
    assert pat["validTo"] == "2025-07-15T15:06:40Z"  # read back (§1: "Always read validTo")
    assert pat["validFrom"] == iso(T0) == "2025-06-15T15:06:40Z"
    assert pat["targetAccounts"] == [fake.account_id("contoso")]
    assert pat["scope"] == "vso.code vso.work"

    got = call(http, fake, "GET", params={"authorizationId": authorization_id})
    assert got.status_code == 200
    assert got.json() == {"patToken": {**pat, "token": None}, "patTokenError": "none"}

    [listed] = list_all(http, fake, {"displayFilterOption": "active"})
    assert listed == [{**pat, "token": None}]

    fake.advance(DAY)
    update = {
        "authorizationId": authorization_id,
        "validTo": iso(T0 + 60 * DAY),
        "scope": "vso.code",
    }
    updated = call(http, fake, "PUT", body=update)
    assert updated.status_code == 200
    assert updated.json()["patTokenError"] == "none"
    assert updated.json()["patToken"] == {
        **pat,
        "token": None,  # §1: only Create carries the secret
        "validTo": iso(T0 + 60 * DAY),
        "scope": "vso.code",
    }

    works = connection_data(http, fake, secret)
    assert works.status_code == 200
    assert works.json()["authenticatedUser"]["providerDisplayName"] == "alice"
    assert works.json()["authenticatedUser"]["id"] == fake.user_id("alice")
    assert fake.secret_active(secret)

    revoked = call(http, fake, "DELETE", params={"authorizationId": authorization_id})
    assert revoked.status_code == 204  # the RevokePat example (§1)
    assert revoked.content == b""
    assert connection_data(http, fake, secret).status_code == 401
    assert not fake.secret_active(secret)
    assert fake.checks[authorization_id] == 2
    [record] = fake.pats("alice")
    assert record["state"] == "revoked"
    assert record["revoked_by"] == "api"
    assert record["token"] == secret
    assert record["checks"] == 2
    assert fake.active("alice") == []
    assert list_all(http, fake, {"displayFilterOption": "revoked"})[0][0]["authorizationId"] == (
        authorization_id
    )
    assert fake.calls == {
        ("POST", "create"): 1,
        ("GET", "get"): 1,
        ("GET", "list"): 2,
        ("PUT", "update"): 1,
        ("DELETE", "revoke"): 1,
        ("GET", "connectionData"): 2,
    }
    assert fake.violations == []


def test_revoke_status_200_is_a_constructor_option(http: requests.Session) -> None:
    with make_fake(revoke_status=200) as fake:
        pat = created(http, fake)

        revoked = call(http, fake, "DELETE", params={"authorizationId": pat["authorizationId"]})

        assert revoked.status_code == 200  # the spec's answer (§1)
        assert connection_data(http, fake, pat["token"]).status_code == 401
    with pytest.raises(ValueError, match="200 or 204"):
        make_fake(revoke_status=202)


def test_7_2_results_carry_pat_token_error_message(
    fake: AdoPatsFake, http: requests.Session
) -> None:
    response = create(http, fake, version=V72)

    assert response.json()["patTokenErrorMessage"] is None
    assert response.json()["patTokenError"] == "none"
    assert PAT_SHAPE.fullmatch(response.json()["patToken"]["token"])


def test_list_pages_with_continuation_tokens(http: requests.Session) -> None:
    with make_fake(page_size=4) as fake:
        for i in range(10):
            created(http, fake, f"pat-{i:02d}")
        for _ in range(3):
            created(http, fake, "bob's", bearer=BOB)

        by_page_size = list_all(http, fake, {})
        by_top = list_all(http, fake, {"$top": 3, "sortByOption": "displayName"})
        descending = list_all(http, fake, {"isSortAscending": "false"})

    assert [len(page) for page in by_page_size] == [4, 4, 2]
    assert [len(page) for page in by_top] == [3, 3, 3, 1]  # $top smaller than page_size wins
    names = [p["displayName"] for page in by_top for p in page]
    assert names == [f"pat-{i:02d}" for i in range(10)]  # only alice's, no repeats, sorted
    assert [p["displayName"] for page in descending for p in page] == names[::-1]
    assert all(p["token"] is None for page in by_top for p in page)
    assert fake.violations == []


def test_top_is_capped_at_100(fake: AdoPatsFake, http: requests.Session) -> None:
    for i in range(105):
        fake.seed("alice", f"ui-{i:03d}")

    pages = list_all(http, fake, {"$top": 500})

    assert [len(page) for page in pages] == [100, 5]  # §1: "limit of 100"


def test_list_filters_and_sorts_by_state(fake: AdoPatsFake, http: requests.Session) -> None:
    keep = created(http, fake, "b-keep", days=10)
    gone = created(http, fake, "a-gone", days=20)
    old = created(http, fake, "c-old", days=30)
    call(http, fake, "DELETE", params={"authorizationId": gone["authorizationId"]})
    fake.expire(old["authorizationId"])

    def names(**params: Any) -> list[str]:
        return [p["displayName"] for page in list_all(http, fake, params) for p in page]

    assert names() == ["b-keep"]  # displayFilterOption defaults to active
    assert names(displayFilterOption="revoked") == ["a-gone"]
    assert names(displayFilterOption="expired") == ["c-old"]
    assert names(displayFilterOption="all") == ["a-gone", "b-keep", "c-old"]
    assert names(displayFilterOption="all", sortByOption="status") == ["b-keep", "c-old", "a-gone"]
    by_date = names(displayFilterOption="all", sortByOption="displayDate", isSortAscending="false")
    assert by_date == ["a-gone", "b-keep", "c-old"]  # validTo 20d, 10d, expired now
    assert fake.pats("alice")[2]["state"] == "expired"
    assert keep["authorizationId"] in {p["authorization_id"] for p in fake.active("alice")}
    assert connection_data(http, fake, old["token"]).status_code == 401
    assert fake.violations == []


def test_all_org_pats_show_everywhere_org_pats_only_at_home(
    fake: AdoPatsFake, http: requests.Session
) -> None:
    everywhere = created(http, fake, "global", all_orgs=True)
    home = created(http, fake, "contoso-only")

    in_fabrikam = list_all(http, fake, {}, org="fabrikam")

    assert everywhere["targetAccounts"] is None  # §1: null when allOrgs
    assert [p["displayName"] for p in in_fabrikam[0]] == ["global"]
    assert connection_data(http, fake, everywhere["token"], "fabrikam").status_code == 200
    assert connection_data(http, fake, home["token"], "fabrikam").status_code == 401
    assert connection_data(http, fake, home["token"], "Contoso").status_code == 200
    elsewhere = call(
        http, fake, "GET", org="fabrikam", params={"authorizationId": home["authorizationId"]}
    )
    assert elsewhere.json()["patTokenError"] == "authorizationNotFound"
    assert fake.checks[home["authorizationId"]] == 2


def test_the_path_is_case_insensitive(fake: AdoPatsFake, http: requests.Session) -> None:
    response = http.post(
        pats_url(fake, "Contoso", "_apis/Tokens/Pats"),
        params={"api-version": V71},
        json={"displayName": "x", "scope": "app_token", "validTo": iso(T0 + DAY)},
        headers={"Authorization": f"Bearer {ALICE}"},
    )

    assert response.status_code == 200
    assert response.json()["patToken"]["targetAccounts"] == [fake.account_id("contoso")]
    assert fake.pats()[0]["organization"] == "contoso"


# -- wrong clients -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "reason"),
    [(None, "No api-version was supplied"), ("7.1", "is not one of"), ("6.0", "is not one of")],
)
def test_api_version_is_required(
    fake: AdoPatsFake, http: requests.Session, version: str | None, reason: str
) -> None:
    response = create(http, fake, version=version)

    assert response.status_code == 400
    assert reason in response.json()["message"]
    [violation] = fake.violations
    assert reason in violation
    assert fake.pats() == []


def test_a_pat_does_not_authenticate_the_pat_api(fake: AdoPatsFake, http: requests.Session) -> None:
    pat = created(http, fake)
    basic = base64.b64encode(f":{pat['token']}".encode()).decode()

    as_bearer = call(http, fake, "GET", bearer=pat["token"])
    as_basic = http.get(
        pats_url(fake), params={"api-version": V71}, headers={"Authorization": f"Basic {basic}"}
    )
    missing = call(http, fake, "GET", bearer=None)
    unknown = call(http, fake, "GET", bearer="entra-expired")

    assert [r.status_code for r in (as_bearer, as_basic, missing, unknown)] == [401] * 4
    assert "cannot be used" in as_bearer.json()["message"]
    assert missing.content == b"" == unknown.content
    assert "Bearer" in missing.headers["WWW-Authenticate"]
    assert len(fake.violations) == 3  # an unknown Entra token is the provider's verdict
    assert "a PAT does not work" in fake.violations[0]
    assert "a PAT does not work" in fake.violations[1]
    assert "no Authorization: Bearer" in fake.violations[2]


def test_another_users_pat_is_not_found(fake: AdoPatsFake, http: requests.Session) -> None:
    bobs = created(http, fake, "bob's", bearer=BOB)
    by_id = {"authorizationId": bobs["authorizationId"]}

    got = call(http, fake, "GET", params=by_id)
    updated = call(http, fake, "PUT", body={**by_id, "displayName": "mine now"})
    revoked = call(http, fake, "DELETE", params=by_id)

    for response in (got, updated, revoked):
        assert response.status_code == 400
        assert response.json() == {"patToken": None, "patTokenError": "authorizationNotFound"}
    assert fake.secret_active(bobs["token"])
    assert fake.pats("bob")[0]["display_name"] == "bob's"
    assert len(fake.violations) == 3
    assert "not the caller's PAT" in fake.violations[0]


def test_a_continuation_token_needs_the_same_filter_options(
    fake: AdoPatsFake, http: requests.Session
) -> None:
    for i in range(3):
        created(http, fake, f"pat-{i}")
    first = call(http, fake, "GET", params={"$top": 1, "displayFilterOption": "active"})
    token = first.json()["continuationToken"]
    assert token

    same = call(http, fake, "GET", params={"$top": 1, "continuationToken": token})  # defaults
    other_filter = call(
        http, fake, "GET", params={"continuationToken": token, "displayFilterOption": "all"}
    )
    other_sort = call(
        http, fake, "GET", params={"continuationToken": token, "sortByOption": "status"}
    )
    other_user = call(http, fake, "GET", bearer=BOB, params={"continuationToken": token})
    made_up = call(http, fake, "GET", params={"continuationToken": "not-ours"})

    assert same.status_code == 200
    assert same.json()["patTokens"][0]["displayName"] == "pat-1"
    assert [r.status_code for r in (other_filter, other_sort, other_user, made_up)] == [400] * 4
    assert len(fake.violations) == 4
    assert "same filter options" in fake.violations[0]
    assert "same filter options" in fake.violations[1]
    assert "another user" in fake.violations[2]
    assert "not issued" in fake.violations[3]


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"displayFilterOption": "valid"}, "displayFilterOption must be one of"),
        ({"sortByOption": "validTo"}, "sortByOption must be one of"),
        ({"isSortAscending": "yes"}, "isSortAscending must be a boolean"),
        ({"$top": "0"}, "$top must be a positive int32"),
    ],
)
def test_list_rejects_bad_options(
    fake: AdoPatsFake, http: requests.Session, params: dict[str, str], reason: str
) -> None:
    response = call(http, fake, "GET", params=params)

    assert response.status_code == 400
    assert reason in response.json()["message"]
    assert reason in fake.violations[0]


def test_the_lifespan_policy_clamps_silently(http: requests.Session) -> None:
    with make_fake(max_lifespan_days=30) as fake:
        response = create(http, fake, days=365)
        pat = response.json()["patToken"]

        # §1: no error, the PAT comes back with validTo = now + max.
        assert response.status_code == 200
        assert response.json()["patTokenError"] == "none"
        assert pat["validTo"] == iso(T0 + 30 * DAY)

        fake.advance(20 * DAY)
        update = {"authorizationId": pat["authorizationId"], "validTo": iso(T0 + 400 * DAY)}
        updated = call(http, fake, "PUT", body=update).json()["patToken"]
        # §1: on Update the clamp counts from the original creation, not from now.
        assert updated["validTo"] == iso(T0 + 30 * DAY)

        shorter = call(http, fake, "PUT", body={**update, "validTo": iso(T0 + 25 * DAY)})
        assert shorter.json()["patToken"]["validTo"] == iso(T0 + 25 * DAY)
        assert fake.violations == []


@pytest.mark.parametrize("error_status", [200, 400])
@pytest.mark.parametrize("version", [V71, V72])
def test_every_injected_error_enum_comes_back_as_documented(
    http: requests.Session, error_status: int, version: str
) -> None:
    with make_fake(error_status=error_status) as fake:
        for error in PAT_TOKEN_ERRORS[1:]:
            fake.inject_error(error)

            response = create(http, fake, version=version)

            assert response.status_code == error_status
            body = response.json()
            assert body["patToken"] is None
            assert body["patTokenError"] == error
            if version == V72:
                assert error in body["patTokenErrorMessage"]
            else:
                assert "patTokenErrorMessage" not in body
        assert fake.pats() == []
        assert fake.violations == []  # a policy is not the client's fault
        assert created(http, fake, version=version)["token"]


def test_injected_errors_hit_mutating_calls_only(fake: AdoPatsFake, http: requests.Session) -> None:
    pat = created(http, fake)
    by_id = {"authorizationId": pat["authorizationId"]}
    fake.inject_error("accessDenied", count=2)

    got = call(http, fake, "GET", params=by_id)
    refused_revoke = call(http, fake, "DELETE", params=by_id)
    refused_update = call(http, fake, "PUT", body={**by_id, "displayName": "renamed"})
    revoked = call(http, fake, "DELETE", params=by_id)

    assert got.status_code == 200
    assert refused_revoke.json()["patTokenError"] == "accessDenied"
    assert refused_update.json()["patTokenError"] == "accessDenied"
    assert revoked.status_code == 204
    assert fake.pats()[0]["display_name"] == "keysteward"
    assert not fake.secret_active(pat["token"])
    assert "disablePatCreationPolicyViolation" in PAT_TOKEN_ERRORS_7_2_ADDED
    assert len(PAT_TOKEN_ERRORS) == 35
    with pytest.raises(ValueError, match="not a failing"):
        fake.inject_error("none")
    with pytest.raises(ValueError, match="not a failing"):
        fake.inject_error("noSuchError")


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"displayName": ""}, "displayNameRequired"),
        ({"displayName": None}, "displayNameRequired"),
        ({"displayName": 7}, "invalidDisplayName"),
        ({"scope": ""}, "invalidScope"),
        ({"scope": "vso.code,vso.work"}, "invalidScope"),
        ({"scope": None}, "invalidScope"),
        ({"validTo": iso(T0 - 1)}, "invalidValidTo"),
        ({"validTo": "next tuesday"}, "invalidValidTo"),
        ({"validTo": None}, "invalidValidTo"),
    ],
)
def test_create_validates_its_body(
    fake: AdoPatsFake, http: requests.Session, change: dict[str, Any], error: str
) -> None:
    body = {"displayName": "ok", "scope": "vso.code", "validTo": iso(T0 + DAY), **change}

    response = call(http, fake, "POST", body={k: v for k, v in body.items() if v is not None})

    assert response.status_code == 400
    assert response.json() == {"patToken": None, "patTokenError": error}
    assert fake.violations[0].startswith(f"POST /contoso/_apis/tokens/pats: {error}: ")
    assert fake.pats() == []


def test_mutations_want_a_json_body(fake: AdoPatsFake, http: requests.Session) -> None:
    form = {"displayName": "x", "scope": "vso.code", "validTo": iso(T0 + DAY)}

    response = http.post(
        pats_url(fake),
        params={"api-version": V71},
        data=form,
        headers={"Authorization": f"Bearer {ALICE}"},
    )
    patch = http.patch(
        pats_url(fake), params={"api-version": V71}, headers={"Authorization": f"Bearer {ALICE}"}
    )

    assert response.status_code == 400
    assert "JSON object" in response.json()["message"]
    assert patch.status_code == 405
    assert len(fake.violations) == 2


def test_updating_a_revoked_pat_fails(fake: AdoPatsFake, http: requests.Session) -> None:
    mine = created(http, fake, "mine")
    outside = created(http, fake, "outside")
    call(http, fake, "DELETE", params={"authorizationId": mine["authorizationId"]})
    fake.revoke_outside(outside["authorizationId"])
    later = iso(T0 + 90 * DAY)

    after_own_revoke = call(
        http, fake, "PUT", body={"authorizationId": mine["authorizationId"], "validTo": later}
    )
    after_ui_revoke = call(
        http, fake, "PUT", body={"authorizationId": outside["authorizationId"], "validTo": later}
    )

    for response in (after_own_revoke, after_ui_revoke):
        assert response.status_code == 400
        assert response.json()["patTokenError"] == "authorizationNotFound"
    assert [p["revoked_by"] for p in fake.pats()] == ["api", "outside"]
    assert len(fake.violations) == 1  # the PAT revoked in the UI is not the client's fault
    assert "revoked" in fake.violations[0]
    assert connection_data(http, fake, outside["token"]).status_code == 401

    fake.update_revoked_error = "invalidAuthorizationId"  # the other UNCONFIRMED candidate
    again = call(http, fake, "PUT", body={"authorizationId": mine["authorizationId"]})
    assert again.json()["patTokenError"] == "invalidAuthorizationId"


def test_an_expired_pat_can_be_extended(fake: AdoPatsFake, http: requests.Session) -> None:
    pat = created(http, fake)
    fake.expire(pat["authorizationId"])
    assert connection_data(http, fake, pat["token"]).status_code == 401

    # §1 Update: valid means "not revoked", so an expired PAT may get a new validTo.
    body = {"authorizationId": pat["authorizationId"], "validTo": iso(T0 + 10 * DAY)}
    updated = call(http, fake, "PUT", body=body)

    assert updated.json()["patToken"]["validTo"] == iso(T0 + 10 * DAY)
    assert connection_data(http, fake, pat["token"]).status_code == 200


def test_unknown_ids_and_organizations(fake: AdoPatsFake, http: requests.Session) -> None:
    unknown = call(http, fake, "GET", params={"authorizationId": str(uuid.uuid4())})
    malformed = call(http, fake, "GET", params={"authorizationId": "4ab5764f-0000"})
    absent = call(http, fake, "DELETE")
    no_org = create(http, fake, org="northwind")
    basic = base64.b64encode(b":" + b"a" * 52).decode()
    never_issued = http.get(
        f"{fake.url}/contoso/_apis/connectionData", headers={"Authorization": f"Basic {basic}"}
    )

    assert unknown.json()["patTokenError"] == "authorizationNotFound"
    assert malformed.json()["patTokenError"] == "invalidAuthorizationId"
    assert absent.json()["patTokenError"] == "invalidAuthorizationId"
    assert no_org.status_code == 404
    assert never_issued.status_code == 401
    assert len(fake.violations) == 5


def test_connection_data_takes_entra_tokens_but_not_a_pat_as_bearer(
    fake: AdoPatsFake, http: requests.Session
) -> None:
    pat = created(http, fake)
    url = f"{fake.url}/contoso/_apis/connectionData"

    entra = http.get(url, headers={"Authorization": f"Bearer {BOB}"})
    pat_as_bearer = http.get(url, headers={"Authorization": f"Bearer {pat['token']}"})
    anonymous = http.get(url)

    assert entra.json()["authenticatedUser"]["providerDisplayName"] == "bob"
    assert pat_as_bearer.status_code == 401
    assert anonymous.status_code == 401
    assert len(fake.violations) == 2
    assert "Basic auth" in fake.violations[0]


# -- latency, failures, concurrency ------------------------------------------------------------


def test_latency_delays_every_call_and_the_work_still_happens(
    fake: AdoPatsFake, http: requests.Session
) -> None:
    fake.latency = 0.4

    with pytest.raises(requests.exceptions.ReadTimeout):
        create(http, fake, timeout=0.1)
    wait_until(lambda: fake.pats("alice"), timeout=5, what="the late create")

    fake.latency = 0.0
    assert call(http, fake, "GET", timeout=2).status_code == 200
    assert fake.calls[("POST", "create")] == 1


def test_fail_next_on_the_pat_path(fake: AdoPatsFake, http: requests.Session) -> None:
    fake.fail_next("/_apis/tokens/pats", 503, retry_after=5)

    unavailable = create(http, fake)
    retried = create(http, fake)

    assert unavailable.status_code == 503
    assert unavailable.headers["Retry-After"] == "5"
    assert retried.status_code == 200
    assert len(fake.pats()) == 1


def test_concurrent_calls_are_served_side_by_side(fake: AdoPatsFake) -> None:
    fake.latency = 0.2

    def one(i: int) -> Any:
        with requests.Session() as session:
            session.trust_env = False
            return created(session, fake, f"pat-{i}", bearer=ALICE if i % 2 else BOB)

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(one, range(20)))
    elapsed = time.monotonic() - started

    assert elapsed < 2.0  # 20 x 0.2 s would be 4 s if latency held the lock
    assert len({r["token"] for r in results}) == 20
    assert len({r["authorizationId"] for r in results}) == 20
    assert len(fake.pats("alice")) == len(fake.pats("bob")) == 10
    assert fake.calls[("POST", "create")] == 20


def test_a_broken_bearer_resolver_is_reported(http: requests.Session) -> None:
    def broken(token: str) -> str | None:
        raise RuntimeError("introspection down")

    with AdoPatsFake(bearer=broken, now=lambda: T0) as fake:
        response = call(http, fake, "GET")

    assert response.status_code == 500
    assert "introspection down" in response.text


# -- out-of-band changes and organisation policies (providers.md §1, §8) -----------------------


@pytest.mark.parametrize("answer", ["entry", "authorizationNotFound", "http404", "null"])
def test_a_pat_revoked_outside_reads_back_as_configured(
    fake: AdoPatsFake, http: requests.Session, answer: str
) -> None:
    """UNCONFIRMED how Get answers for a revoked PAT: each candidate can be served."""
    pat = created(http, fake)
    fake.revoked_get = answer
    fake.revoke_outside(pat["authorizationId"])
    got = call(http, fake, "GET", params={"authorizationId": pat["authorizationId"]})
    if answer == "entry":
        assert got.status_code == 200
        assert got.json()["patToken"]["validTo"] == pat["validTo"]  # the spec shape, unchanged
    elif answer == "authorizationNotFound":
        assert got.status_code == fake.error_status
        assert got.json() == {"patToken": None, "patTokenError": "authorizationNotFound"}
    elif answer == "http404":
        assert got.status_code == 404
        assert "patTokenError" not in got.json()
    else:
        assert got.status_code == 200
        assert got.json() == {"patToken": None, "patTokenError": "none"}
    assert fake.violations == []  # revoked in the UI: no client could have known


def test_revoked_and_expired_pats_leave_the_active_list_or_stay_with_a_past_valid_to(
    fake: AdoPatsFake, http: requests.Session
) -> None:
    revoked, expired, alive = (created(http, fake, name) for name in ("r", "e", "a"))
    fake.advance(60)
    fake.revoke_outside(revoked["authorizationId"])
    fake.expire(expired["authorizationId"])
    active = [p["authorizationId"] for page in list_all(http, fake, {}) for p in page]
    assert active == [alive["authorizationId"]]  # the documented filter: active ones only

    fake.stale_in_active_list = fake.revoked_shows_past_valid_to = True
    listed = {p["authorizationId"]: p for page in list_all(http, fake, {}) for p in page}
    assert set(listed) == {p["authorizationId"] for p in (revoked, expired, alive)}
    assert listed[revoked["authorizationId"]]["validTo"] == iso(T0 + 60)  # when it was revoked
    assert listed[expired["authorizationId"]]["validTo"] == iso(T0 + 60)
    assert listed[alive["authorizationId"]]["validTo"] == alive["validTo"]


def test_a_change_made_outside_shows_in_get_and_list(
    fake: AdoPatsFake, http: requests.Session
) -> None:
    pat = created(http, fake, scope="vso.code")
    fake.change_outside(pat["authorizationId"], valid_to=T0 + 3 * DAY, scope="vso.code_status")
    got = call(http, fake, "GET", params={"authorizationId": pat["authorizationId"]}).json()
    assert got["patToken"]["validTo"] == iso(T0 + 3 * DAY)
    assert got["patToken"]["scope"] == "vso.code_status"
    [listed] = list_all(http, fake, {})[0]
    assert (listed["validTo"], listed["scope"]) == (iso(T0 + 3 * DAY), "vso.code_status")


@pytest.mark.parametrize("error_status", [200, 400])
def test_organisation_policies_refuse_creates_with_their_pat_token_error(
    http: requests.Session, error_status: int
) -> None:
    with make_fake(error_status=error_status, max_lifespan_days=30) as fake:
        fake.full_scope_forbidden = fake.global_pats_forbidden = fake.lifespan_refuses = True
        cases: list[tuple[dict[str, Any], str]] = [
            ({"scope": "app_token"}, "fullScopePatPolicyViolation"),
            ({"all_orgs": True}, "globalPatPolicyViolation"),
            ({"days": 90}, "patLifespanPolicyViolation"),
        ]
        for options, error in cases:
            response = create(http, fake, **options)
            assert response.status_code == error_status
            assert response.json() == {"patToken": None, "patTokenError": error}
        assert created(http, fake, days=10)["token"]  # within every policy
        fake.pat_creation_disabled = True
        refused = create(http, fake, days=10)
        assert refused.json()["patTokenError"] == "disablePatCreationPolicyViolation"
        assert len(fake.pats()) == 1  # a refusal makes nothing
        assert fake.violations == []  # a policy is not the client's fault
