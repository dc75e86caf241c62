"""The one input toolkit and the request objects built from it: every malformed field is a 400
naming the field, never a value a service would have to check again."""

from __future__ import annotations

import pytest

from shared.access.key_requests import KeyChange, NewKey
from shared.foundation import inputs
from shared.foundation.errors import InputError
from shared.lifecycle.caller_requests import NewLink, NewPat, PatExtension, RotationMessage
from shared.lifecycle.revocation_requests import RevocationRequest


def test_text_is_stripped_bounded_and_printable() -> None:
    assert inputs.text({"n": "  x  "}, "n", limit=5) == "x"
    for bad in ({"n": ""}, {"n": "   "}, {"n": 3}, {"n": "x" * 6}, {"n": "a\x00b"}, {}):
        with pytest.raises(InputError, match="'n'"):
            inputs.text(bad, "n", limit=5)
    assert inputs.optional_text({}, "n", limit=5) is None
    assert inputs.text({"n": "two\nlines"}, "n", limit=20, printable=False) == "two\nlines"


def test_a_bool_is_never_a_number_and_ranges_hold() -> None:
    assert inputs.whole({"d": 7}, "d", low=1, high=10) == 7
    assert inputs.whole({}, "d", low=1, high=10, default=3) == 3
    for bad in (True, False, 0, 11, 1.5, "5", None):
        with pytest.raises(InputError, match="'d' must be a whole number from 1 to 10"):
            inputs.whole({"d": bad}, "d", low=1, high=10)


def test_flags_lists_and_choices() -> None:
    assert inputs.flag({}, "f", default=True) is True
    with pytest.raises(InputError, match="'f' is true or false"):
        inputs.flag({"f": "yes"}, "f", default=False)
    assert inputs.listed({"l": ["a", "b", "a"]}, "l", hint="x") == ["a", "b"]
    for bad in ([], "a", [1], None):
        with pytest.raises(InputError, match="'l' must be a non-empty list"):
            inputs.listed({"l": bad}, "l", hint="x")
    with pytest.raises(InputError, match="at most 1"):
        inputs.listed({"l": ["a", "b"]}, "l", hint="x", most=1)
    assert inputs.one_of(None, "s", ("a",)) is None
    with pytest.raises(InputError, match="'s' must be one of a"):
        inputs.one_of("b", "s", ("a",))
    with pytest.raises(InputError, match="unknown field"):
        inputs.only({"x": 1}, {"y"})


def test_query_values_arrive_as_text() -> None:
    assert inputs.query_whole({"t": "0042"}, "t", low=0, high=100) == 42
    assert inputs.query_whole({"t": ""}, "t", low=0, high=100) is None
    for bad in ("-1", "1e3", "١٢", "101", "9" * 5000):
        with pytest.raises(InputError, match="'t' must be"):
            inputs.query_whole({"t": bad}, "t", low=0, high=100)
    assert inputs.query_flag({"f": "TRUE"}, "f") is True
    assert inputs.query_flag({}, "f") is False
    with pytest.raises(InputError, match="'f' must be true or false"):
        inputs.query_flag({"f": "yes"}, "f")


@pytest.mark.parametrize(
    ("parse", "body", "field"),
    [
        (NewKey.parse, {"name": "", "scopes": ["tokens:read"], "resources": ["*"]}, "name"),
        (NewKey.parse, {"name": "k", "scopes": ["nope"], "resources": ["*"]}, "scope"),
        (NewKey.parse, {"name": "k", "scopes": ["tokens:read"], "resources": []}, "resources"),
        (
            NewKey.parse,
            {"name": "k", "scopes": ["tokens:read"], "resources": ["*"], "expires_in_days": True},
            "expires_in_days",
        ),
        (
            NewKey.parse,
            {"name": "k", "scopes": ["tokens:read"], "resources": ["*"], "x": 1},
            "unknown field",
        ),
        (KeyChange.parse, {}, "nothing to change"),
        (KeyChange.parse, {"scopes": ["keys:admin"]}, "cannot be changed"),
        (NewLink.parse, {"user_id": "u"}, "'app' is required"),
        (NewLink.parse, {"app": "a", "user_id": "u", "return_to": "ftp://x"}, "return_to"),
        (NewLink.parse, {"app": "a", "user_id": "a/b"}, "user_id"),
        (NewPat.parse, {"display_name": "d", "scope": "s", "lifetime_days": 0}, "lifetime_days"),
        (NewPat.parse, {"display_name": "d", "scope": "s", "all_orgs": 1}, "all_orgs"),
        (NewPat.parse, {"display_name": "d", "scope": "s", "organization": "a b"}, "organization"),
        (
            NewPat.parse,
            {"display_name": "d", "scope": "s", "lifetime_days": 5, "rotate_before_days": 6},
            "rotate_before_days",
        ),
        (PatExtension.parse, {"extend_days": "3"}, "extend_days"),
        (RevocationRequest.parse, {"app": "a", "reason": "r"}, "requested_by"),
        (RevocationRequest.parse, ["not", "an", "object"], "JSON object"),
    ],
)
def test_every_request_object_refuses_a_malformed_body(
    parse: object, body: object, field: str
) -> None:
    with pytest.raises(InputError, match=field):
        parse(body)  # type: ignore[operator]


def test_request_objects_hold_typed_checked_values() -> None:
    key = NewKey(name=" ci ", scopes=["tokens:read", "connections:read"], resources=["*", "*"])
    assert (key.name, key.scopes, key.resources) == ("ci", ["connections:read", "tokens:read"],
                                                      ["*"])  # fmt: skip
    with pytest.raises(InputError, match="expires_in_days"):
        NewKey(name="k", scopes=["tokens:read"], resources=["*"], expires_in_days=0)
    pat = NewPat.parse({"display_name": " d ", "scope": "vso.code", "lifetime_days": 5})
    assert (pat.display_name, pat.rotate_before_days, pat.organization) == ("d", 5, None)
    message = RotationMessage("pat-1", "rot-2")
    assert RotationMessage.parse(message.encode().encode()) == message
    for raw in (b"{", b"[]", b'{"pat_id": "p"}', b'{"pat_id": "p/..", "rotation_id": "r"}'):
        with pytest.raises(InputError):
            RotationMessage.parse(raw)
