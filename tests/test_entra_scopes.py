"""Entra scopes as Entra answers them (issue 14, point 1): asked for ``{resource}/.default``,
Entra grants that resource's concrete permissions and never echoes ``.default``; scopes are
``{resource}/{permission}`` (a bare one is Microsoft Graph's) and compare case-insensitively."""

from __future__ import annotations

import pytest

from shared.providers import scopes
from tests.peers.world import ADO_DEFAULT, ADO_RESOURCE, World

GRAPH_ID = "00000003-0000-0000-c000-000000000000"


def test_a_default_scope_connects_and_keeps_the_concrete_permissions(world: World) -> None:
    # The peer answers as Entra does: the token response says user_impersonation, not .default
    # (with a strict comparison this connect was a 403 insufficient_scope).
    response = world.connect("entra-demo", "dot-default@contoso.com")
    assert response.status_code == 200, response.text
    granted = world.connection("entra-demo", "dot-default@contoso.com").scopes
    assert f"{ADO_RESOURCE}/user_impersonation" in granted
    assert ADO_DEFAULT not in granted
    # ... and so does a refresh through MSAL.
    refreshed = world.token("entra-demo", "dot-default@contoso.com", force_refresh="true")
    assert refreshed.status_code == 200, refreshed.text
    assert ADO_DEFAULT not in world.connection("entra-demo", "dot-default@contoso.com").scopes


@pytest.mark.parametrize(
    ("asked", "granted"),
    [
        ([ADO_DEFAULT], [f"{ADO_RESOURCE}/user_impersonation", "openid", "profile"]),
        ([ADO_DEFAULT], [f"{ADO_RESOURCE}/vso.pats", f"{ADO_RESOURCE}/vso.pats_manage"]),
        (["https://graph.microsoft.com/.default"], ["User.Read", "Mail.Read"]),
        (["User.Read"], ["https://graph.microsoft.com/User.Read"]),
        (["https://graph.microsoft.com/User.Read"], ["user.read"]),
        ([f"{GRAPH_ID}/User.Read"], ["User.Read"]),
        (["api://contoso-api/Data.Read"], ["api://contoso-api/data.read"]),
        (["openid", "offline_access", "User.Read"], ["User.Read"]),
    ],
)
def test_what_entra_grants_covers_what_was_asked(asked: list[str], granted: list[str]) -> None:
    implicit = ["openid", "profile", "offline_access", "email"]
    assert scopes.missing("resource", asked, granted, implicit) == []


@pytest.mark.parametrize(
    ("asked", "granted"),
    [
        ([ADO_DEFAULT], ["User.Read", "openid"]),  # another resource's permission
        (["api://contoso-api/.default"], ["api://other-api/Data.Read"]),
        (["User.Read", "Mail.Send"], ["User.Read"]),
        (["api://contoso-api/Data.Write"], ["api://contoso-api/Data.Read"]),
    ],
)
def test_a_missing_permission_or_resource_is_still_missing(
    asked: list[str], granted: list[str]
) -> None:
    assert scopes.missing("resource", asked, granted) == [asked[-1]]


def test_strict_and_off_are_unchanged() -> None:
    assert scopes.missing("strict", ["a", "B"], ["a", "b"]) == ["B"]
    assert scopes.missing("strict", [ADO_DEFAULT], [f"{ADO_RESOURCE}/user_impersonation"]) == [
        ADO_DEFAULT
    ]
    assert scopes.missing("strict", ["a", "x"], ["a"], implicit=["x"]) == []
    assert scopes.missing("off", ["a"], []) == []
