from __future__ import annotations

import base64
import os
from dataclasses import dataclass

import pytest

from shared.foundation.errors import DecryptionError
from shared.foundation.secret import Secret
from shared.storage.crypto import KeyRing, SealedSecret, binding, kid_of
from shared.storage.entities import Entity
from shared.storage.store import Row, Store

AAD = binding("Connections", "app", "alice", "refresh_token")


def ring(*kids: str) -> KeyRing:
    return KeyRing([(kid, os.urandom(32)) for kid in kids])


def test_seal_then_open_returns_the_plaintext_and_hides_it() -> None:
    keys = ring("k1")
    token = keys.seal(b"refresh-token-value", AAD)
    assert b"refresh-token-value" not in token.encode()
    assert kid_of(token) == "k1"
    assert keys.open(token, AAD) == b"refresh-token-value"


def test_each_seal_uses_a_fresh_nonce() -> None:
    keys = ring("k1")
    assert keys.seal(b"same", AAD) != keys.seal(b"same", AAD)


@pytest.mark.parametrize(
    "elsewhere",
    [
        binding("Connections", "app", "mallory", "refresh_token"),
        binding("Connections", "other-app", "alice", "refresh_token"),
        binding("Connections", "app", "alice", "access_token"),
        binding("Pats", "app", "alice", "refresh_token"),
    ],
)
def test_a_ciphertext_moved_to_another_row_or_field_fails(elsewhere: bytes) -> None:
    keys = ring("k1")
    token = keys.seal(b"secret", AAD)
    with pytest.raises(DecryptionError, match="k1"):
        keys.open(token, elsewhere)


def test_an_older_kid_still_decrypts_and_new_seals_use_the_primary() -> None:
    old_key, new_key = os.urandom(32), os.urandom(32)
    before = KeyRing([("2025", old_key)])
    token = before.seal(b"kept", AAD)
    after = KeyRing([("2026", new_key), ("2025", old_key)])
    assert after.open(token, AAD) == b"kept"
    assert after.needs_reseal(token)
    assert kid_of(after.seal(b"new", AAD)) == "2026"


def test_an_unknown_kid_gives_a_clear_error_naming_the_kid() -> None:
    token = ring("retired").seal(b"secret", AAD)
    with pytest.raises(DecryptionError, match=r"'retired'.*not in the key ring"):
        ring("current").open(token, AAD)


def test_a_wrong_key_under_the_same_kid_names_the_kid_never_the_key() -> None:
    right, wrong = os.urandom(32), os.urandom(32)
    token = KeyRing([("k1", right)]).seal(b"secret", AAD)
    with pytest.raises(DecryptionError) as caught:
        KeyRing([("k1", wrong)]).open(token, AAD)
    message = str(caught.value)
    assert "'k1'" in message
    for key in (right, wrong):
        assert base64.b64encode(key).decode() not in message
        assert key.hex() not in message


def test_a_tampered_ciphertext_fails() -> None:
    keys = ring("k1")
    token = keys.seal(b"secret", AAD)
    head, body = token.rsplit(".", 1)
    raw = bytearray(base64.urlsafe_b64decode(body))
    raw[-1] ^= 1
    with pytest.raises(DecryptionError):
        keys.open(f"{head}.{base64.urlsafe_b64encode(bytes(raw)).decode()}", AAD)


def test_secrets_do_not_show_themselves() -> None:
    secret = Secret("hunter2-refresh-token")
    assert "hunter2" not in repr(secret)
    assert "hunter2" not in str(secret)
    assert "hunter2" not in f"{secret}"
    assert "hunter2" not in repr([secret, {"token": secret}])


@dataclass
class Grant(Entity):
    TABLE = "CryptoTest"
    PARTITION = "app"
    ROW = "user"
    app: str
    user: str
    refresh_token: Secret | None = None
    access_token: Secret | None = None


def test_the_store_seals_secret_fields_bound_to_their_row(store: Store) -> None:
    store.create(Grant("app", "alice", refresh_token=Secret("rt-alice")))
    raw = store.get("CryptoTest", "app", "alice")
    assert raw is not None
    assert "rt-alice" not in repr(raw.data)
    # Copy alice's sealed refresh token into mallory's row, and into another field of her own.
    store.insert("CryptoTest", Row("app", "mallory", {"refresh_token": raw.data["refresh_token"]}))
    store.upsert("CryptoTest", Row("app", "alice", {"access_token": raw.data["refresh_token"]}))
    mallory = store.read(Grant, "app", "mallory")
    alice = store.read(Grant, "app", "alice")
    assert mallory is not None
    assert alice is not None
    assert mallory.refresh_token is not None
    assert alice.access_token is not None
    with pytest.raises(DecryptionError):
        mallory.refresh_token.reveal()
    with pytest.raises(DecryptionError):
        alice.access_token.reveal()


def test_an_unchanged_secret_is_written_back_as_it_was(store: Store) -> None:
    store.create(Grant("app", "bob", refresh_token=Secret("rt-bob")))
    before = store.get("CryptoTest", "app", "bob")
    grant = store.read(Grant, "app", "bob")
    assert grant is not None
    assert isinstance(grant.refresh_token, SealedSecret)
    store.save(grant)  # never revealed: the ciphertext is kept, not re-sealed
    after = store.get("CryptoTest", "app", "bob")
    assert before is not None
    assert after is not None
    assert after.data["refresh_token"] == before.data["refresh_token"]


def test_a_secret_sealed_under_an_old_key_is_resealed_with_the_primary_on_write(
    store: Store, key_ring: KeyRing
) -> None:
    old_key = os.urandom(32)
    old_store = Store(store._service, KeyRing([("old", old_key)]))
    old_store.create(Grant("app", "carol", refresh_token=Secret("rt-carol")))
    rotated = Store(
        store._service,
        KeyRing([("new", os.urandom(32)), ("old", old_key)]),
    )
    grant = rotated.read(Grant, "app", "carol")
    assert grant is not None
    assert grant.refresh_token is not None
    assert grant.refresh_token.reveal() == "rt-carol"
    rotated.save(grant)
    raw = rotated.get("CryptoTest", "app", "carol")
    assert raw is not None
    assert kid_of(raw.data["refresh_token"]) == "new"


def test_equal_secrets_hash_equal_and_unequal_ones_differ() -> None:
    ring = KeyRing([("k1", os.urandom(32))])
    aad = binding("T", "p", "r", "f")
    sealed = SealedSecret(ring.seal(b"same value", aad), aad, ring)
    plain, other = Secret("same value"), Secret("other value")
    assert plain == sealed
    assert hash(plain) == hash(sealed) == hash(Secret("same value"))
    assert plain != other
    assert len({plain, sealed, Secret("same value"), other}) == 2
