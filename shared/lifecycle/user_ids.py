"""User ids as callers name them: checked once, at the edge, before anything is stored."""

from __future__ import annotations

from shared.foundation.errors import InputError
from shared.foundation.redaction import looks_secret
from shared.storage.tablekeys import encode_key

MAX_USER_ID = 256


def check_user_id(user_id: object) -> str:
    if not isinstance(user_id, str) or not user_id.strip():
        raise InputError("'user_id' is required: the user's id at the provider or in your org")
    if len(user_id) > MAX_USER_ID or not user_id.isprintable():
        raise InputError(f"'user_id' must be printable text of at most {MAX_USER_ID} characters")
    if "/" in user_id:
        raise InputError("'user_id' cannot contain '/': it could not be addressed in a URL path")
    if looks_secret(user_id):
        # The audit trail refuses secret-looking subjects: refused now, not as a 500 later.
        raise InputError("'user_id' looks like a credential (a token or key), not a user's id")
    encode_key(user_id)  # refused now, not after the user consented, if it cannot be a key
    return user_id
