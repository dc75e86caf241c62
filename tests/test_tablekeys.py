from __future__ import annotations

import string
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.foundation.errors import IdTooLong
from shared.storage.entities import Entity
from shared.storage.store import Store
from shared.storage.tablekeys import MAX_KEY_LENGTH, decode_key, encode_key

_FORBIDDEN = set("/\\#?") | {chr(c) for c in range(0x20)} | {chr(c) for c in range(0x7F, 0xA0)}


@given(st.text(max_size=200))
def test_encoding_is_reversible_and_safe(value: str) -> None:
    encoded = encode_key(value)
    assert decode_key(encoded) == value
    assert not set(encoded) & _FORBIDDEN
    assert set(encoded) <= set(string.ascii_letters + string.digits + "._@+=-~")


@pytest.mark.parametrize(
    "value", ["pagerduty-incidents", "alice@contoso.com", "4ab5764f-1b2c-4d5e-8f90-123456789abc"]
)
def test_ordinary_ids_stay_readable(value: str) -> None:
    assert encode_key(value) == value


def test_the_escape_character_itself_is_escaped() -> None:
    assert encode_key("a~41") == "a~7E41"
    assert decode_key(encode_key("a~41")) == "a~41"


def test_an_id_too_long_for_a_key_is_refused_with_a_clear_error() -> None:
    encode_key("a" * MAX_KEY_LENGTH)
    with pytest.raises(IdTooLong, match="too long"):
        encode_key("a" * (MAX_KEY_LENGTH + 1))
    with pytest.raises(IdTooLong):
        encode_key("é" * 200)  # 200 chars, 1,200 once encoded


@dataclass
class Named(Entity):
    TABLE = "KeyTest"
    PARTITION = "app"
    ROW = "user"
    app: str
    user: str
    note: str = ""


@pytest.mark.parametrize(
    "user",
    [
        "alice/bob",
        "back\\slash",
        "hash#tag",
        "what?",
        "tab\there",
        "nul\x00byte",
        "del\x7f",
        "zoë@exämple.com",
        "日本語",
        "emoji 🔑",
        "100% ~escaped~",
        "' or 1 eq 1 or '",
    ],
)
def test_awkward_ids_round_trip_through_table_storage(store: Store, user: str) -> None:
    store.create(Named("app/with#chars", user, note=user))
    found = store.read(Named, "app/with#chars", user)
    assert found is not None
    assert (found.app, found.user, found.note) == ("app/with#chars", user, user)
    listed = list(store.entities_in(Named, "app/with#chars"))
    assert [n.user for n in listed] == [user]
