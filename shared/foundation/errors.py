"""Keysteward's error tree. Every error carries a stable ``error`` code and an HTTP status.

    KeystewardError
    ├── SettingsError             a setting is missing or malformed (start-up)
    ├── InputError                400 invalid_request: bad input from a caller
    │   ├── IdTooLong             an id does not fit in a Table key
    │   └── PayloadTooLarge       413: a body over the documented limit (64 KiB)
    ├── Unauthorized              401 unauthorized
    ├── WebhookVerificationError  401 invalid_webhook_signature: a delivery's signature is wrong
    ├── Forbidden                 403 forbidden
    ├── NotFound                  404 not_found
    ├── Conflict                  409 conflict
    ├── Gone                      410 gone: revoked, never served again
    ├── CallbackFailed            a connect step failed: its own status and code, for the browser
    ├── RefreshUnavailable        503: no token fresh enough can be had now (``retry_after``)
    ├── NightlyFailed             a part of the nightly run failed (after every part had its turn)
    ├── StoreError                storage said no
    │   ├── ConcurrencyConflict   a conditional write lost a race (stale ETag)
    │   ├── AlreadyExists         an insert met an existing row
    │   ├── LeaseLost             409: the lease was taken over, or its row changed
    │   ├── Contended             503 busy: a read-modify-write lost every try (``retry_after``)
    │   └── StorageUnavailable    storage did not answer
    ├── CryptoError
    │   └── DecryptionError       503: unknown kid, wrong key, or a ciphertext moved to another row
    ├── PatError                  Azure DevOps refused a PAT operation (``pat_error``, own status)
    │   └── PatPolicyViolation    409 pat_policy_violation: an organisation policy refused it
    └── ProviderError             502: a provider answered with an OAuth error (``oauth_error``,
        │                         and ``provider_code`` such as AADSTS70008 when it gives one)
        ├── GrantInvalid          424 needs_reauth: the grant is dead (invalid_grant and kin, or a
        │                         connection already marked so): the user must connect again
        ├── ClientInvalid         502 app_misconfigured: the provider refused the app itself
        │                         (invalid_client, unauthorized_client, TF400813)
        ├── RefusalUnrecognised   502: a 4xx neither transient nor known (retried, then as dead)
        └── ProviderUnavailable   503: network error, timeout, 5xx, 429 (``retry_after``)

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


class PayloadTooLarge(InputError):
    error = "payload_too_large"
    status = 413


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


class Gone(KeystewardError):
    error = "gone"
    status = 410


class WebhookVerificationError(KeystewardError):
    error = "invalid_webhook_signature"
    status = 401


class CallbackFailed(KeystewardError):
    """A connect step failed; ``status`` and ``message`` are for the user's browser."""

    def __init__(
        self, status: int, error: str, message: str, detail: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.detail = detail or {}  # for the audit row: never a secret


class RefreshUnavailable(KeystewardError):
    """No token that lives long enough can be had now (the provider is failing and backing off,
    or a refresh in flight takes too long): try again after ``retry_after`` seconds."""

    error = "refresh_unavailable"
    status = 503

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = max(1, round(retry_after))


class NightlyFailed(KeystewardError):
    """At least one part of the nightly run failed; the timer run shows as failed."""

    error = "nightly_failed"


class StoreError(KeystewardError):
    error = "storage_error"
    status = 503


class ConcurrencyConflict(StoreError):
    error = "concurrency_conflict"
    status = 409


class AlreadyExists(StoreError):
    error = "already_exists"
    status = 409


class LeaseLost(StoreError):
    error = "lease_lost"
    status = 409


class Contended(StoreError):
    """A row kept changing under other writers until the tries ran out (``shared.storage.retry``).
    Nothing was written; trying again shortly will most likely succeed."""

    error = "busy"
    status = 503
    retry_after = 1.0


class StorageUnavailable(StoreError):
    error = "storage_unavailable"
    status = 503


class CryptoError(KeystewardError):
    error = "crypto_error"


class DecryptionError(CryptoError):
    """A stored secret does not open: its key left the ring (or it was altered or moved). An
    operator's fix (put the key back), not a bug: 503, the message naming the kid."""

    error = "decryption_failed"
    status = 503


class PatError(KeystewardError):
    """Azure DevOps refused a PAT operation; ``pat_error`` is its ``patTokenError`` value."""

    error = "pat_error"

    def __init__(self, pat_error: str, status: int, message: str) -> None:
        super().__init__(message)
        self.pat_error = pat_error
        self.status = status


class PatPolicyViolation(PatError):
    """An organisation policy refused a PAT (lifespan, full scope, all organisations, creation
    disabled): the message names the policy by its ``patTokenError`` value."""

    error = "pat_policy_violation"


class ProviderError(KeystewardError):
    """A provider refused; ``oauth_error`` is its RFC 6749 error code (or the nearest we know)."""

    error = "provider_error"
    status = 502

    def __init__(
        self,
        message: str,
        *,
        oauth_error: str = "server_error",
        http_status: int | None = None,
        provider_code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.oauth_error = oauth_error
        self.http_status = http_status
        self.provider_code = provider_code


class GrantInvalid(ProviderError):
    """The grant is dead: the provider refused it (``invalid_grant`` and kin), or the connection
    is already marked ``needs_reauth``. Only the user connecting again brings it back."""

    error = "needs_reauth"
    status = 424


class ClientInvalid(ProviderError):
    """The provider refused the app, not the grant: a wrong or expired client secret, an app it
    does not know or allow, an organisation policy. An operator's fix: the app is marked
    misconfigured and no connection is touched for it."""

    error = "app_misconfigured"


class RefusalUnrecognised(ProviderError):
    """A 4xx that is neither transient nor known: retried a bounded number of times
    (``shared.providers.refusals.UNRECOGNISED_RETRIES``), then the grant is treated as dead."""


class ProviderUnavailable(ProviderError):
    error = "provider_unavailable"
    status = 503

    def __init__(
        self,
        message: str,
        *,
        oauth_error: str = "temporarily_unavailable",
        http_status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, oauth_error=oauth_error, http_status=http_status)
        self.retry_after = retry_after
