"""Keysteward's error tree. Every error carries a stable ``error`` code and an HTTP status.

    KeystewardError
    ├── SettingsError            a setting is missing or malformed (start-up)
    ├── InputError               400 invalid_request: bad input from a caller
    │   └── IdTooLong            an id does not fit in a Table key
    ├── Unauthorized             401 unauthorized
    ├── Forbidden                403 forbidden
    ├── NotFound                 404 not_found
    ├── Conflict                 409 conflict
    ├── StoreError               storage said no
    │   ├── ConcurrencyConflict  a conditional write lost a race (stale ETag)
    │   ├── AlreadyExists        an insert met an existing row
    │   └── StorageUnavailable   storage did not answer
    └── CryptoError
        └── DecryptionError      unknown kid, wrong key, or a ciphertext moved to another row

Messages are written for humans and never contain secret values.
"""

from __future__ import annotations


class KeystewardError(Exception):
    error = "internal_error"
    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SettingsError(KeystewardError):
    error = "invalid_settings"


class InputError(KeystewardError):
    error = "invalid_request"
    status = 400


class IdTooLong(InputError):
    error = "id_too_long"


class Unauthorized(KeystewardError):
    error = "unauthorized"
    status = 401


class Forbidden(KeystewardError):
    error = "forbidden"
    status = 403


class NotFound(KeystewardError):
    error = "not_found"
    status = 404


class Conflict(KeystewardError):
    error = "conflict"
    status = 409


class StoreError(KeystewardError):
    error = "storage_error"
    status = 503


class ConcurrencyConflict(StoreError):
    error = "concurrency_conflict"
    status = 409


class AlreadyExists(StoreError):
    error = "already_exists"
    status = 409


class StorageUnavailable(StoreError):
    error = "storage_unavailable"
    status = 503


class CryptoError(KeystewardError):
    error = "crypto_error"


class DecryptionError(CryptoError):
    error = "decryption_failed"
