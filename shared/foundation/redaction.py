"""The one redaction used by everything that writes outside: the audit trail, events, logs.

Nothing secret may enter the trail (nor an event, which reuses ``redact``). Two nets:

* **By name.** A mapping key is split into words (``snake_case``, ``kebab-case``, ``camelCase``).
  It is sensitive when a word is one of ``token``, ``secret``, ``password``, ``key``, ``code``,
  ``verifier``, ``assertion``, ``authorization``, ``cookie``, ``signature``, ``pat``... or the
  name contains a long fragment such as ``token``, ``secret`` or ``apikey`` (``accessToken``,
  ``apikey``) -- unless its last word says the value only describes the secret (``key_id``,
  ``token_type``, ``secret_expires_at``, ``code_challenge_method``, ``token_endpoint``) or it is
  a well-known harmless name (``status_code``, ``error_code``, ``provider_code``). Its whole
  value, however nested, becomes ``"[redacted]"``. Booleans and nulls are kept: they cannot
  carry a secret.
* **By shape**, for every string anywhere: known credential formats are cut out wherever they
  appear (Keysteward API keys ``ks_...``, JWTs ``eyJ...eyJ...``, PagerDuty ``pdus+_...``,
  GitHub, Slack and AWS key formats, PEM private keys, Standard Webhooks ``whsec_`` secrets,
  ``Bearer``/``Basic`` credentials, a password in a URL's user-info, the value of a
  ``name=value`` pair -- query string, form body, log line -- whose name is sensitive). Then
  every run of 32 or more characters of the base64/base64url/hex alphabet, with canonical GUIDs
  taken out, is key material when it is
    - mixed case, >= 4.0 bits of entropy per character and a change of character class
      (upper/lower/digit/symbol) at >= 35% of its positions -- random base64 sits near 62%
      (about 0.1% of 32-character random strings fall below), while words joined by
      separators (slugs, dotted names, CamelCase, paths) sit near 20-33%; or
    - hexadecimal of 40 characters or more (a 32-character one is an undashed GUID); or
    - 40 or more letters of a single case and digits with no separator and >= 4.0 bits per
      character (base32 keys such as classic Azure DevOps PATs).
  GUIDs, e-mail addresses (``@`` ends a run), app slugs, ordinary URLs and ISO timestamps
  (``:`` ends a run) stay readable.
"""

from __future__ import annotations

import enum
import itertools
import math
import re
from collections import Counter
from collections.abc import Mapping
from datetime import datetime

from shared.foundation.secret import Secret

REDACTED = "[redacted]"
_MAX_DEPTH = 16
_MAX_FIELD_CHARS = 1024

_WORDS = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
_SENSITIVE_WORDS = frozenset(
    {
        "apikey",
        "assertion",
        "auth",
        "authorization",
        "bearer",
        "code",
        "codes",
        "cookie",
        "cookies",
        "credential",
        "credentials",
        "key",
        "keys",
        "passphrase",
        "passwd",
        "password",
        "passwords",
        "pat",
        "pats",
        "pwd",
        "secret",
        "secrets",
        "sig",
        "signature",
        "token",
        "tokens",
        "verifier",
    }
)
# Distinctive enough to match inside a run-together name (``accesstoken``, ``xApiKey``).
_SENSITIVE_FRAGMENTS = (
    "token",
    "secret",
    "password",
    "passwd",
    "credential",
    "assertion",
    "verifier",
    "authorization",
    "cookie",
    "apikey",
    "privatekey",
    "accesskey",
    "bearer",
)
# A last word that says the value describes a secret rather than being one (``key_id``,
# ``token_type``), or counts or flags what happened to it (``tokens_revoked``).
_DESCRIPTIVE_SUFFIXES = frozenset(
    {
        "active",
        "age",
        "at",
        "count",
        "created",
        "deleted",
        "expired",
        "issued",
        "refreshed",
        "revoked",
        "rotated",
        "total",
        "valid",
        "days",
        "endpoint",
        "error",
        "expiration",
        "expires",
        "expiry",
        "field",
        "fields",
        "format",
        "hint",
        "id",
        "ids",
        "kid",
        "kids",
        "kind",
        "length",
        "lifetime",
        "method",
        "methods",
        "name",
        "names",
        "path",
        "policy",
        "prefix",
        "reason",
        "ref",
        "scope",
        "scopes",
        "seconds",
        "source",
        "status",
        "ttl",
        "type",
        "types",
        "uri",
        "url",
        "version",
    }
)
_HARMLESS_NAMES = frozenset(
    {
        "statuscode",
        "errorcode",
        "httpcode",
        "responsecode",
        "exitcode",
        "countrycode",
        "currencycode",
        "languagecode",
        "providercode",  # a provider's error code (AADSTS70008, TF400813), not an OAuth code
    }
)

_KNOWN_FORMATS = re.compile(
    r"(?<![A-Za-z0-9])ks_[A-Za-z0-9_-]{16,}"  # Keysteward API keys
    r"|eyJ[A-Za-z0-9_-]{2,}\.eyJ[A-Za-z0-9_-]{2,}\.?[A-Za-z0-9_.-]*"  # JWT / JWS / JWE
    r"|pdu[a-z]*\+_[A-Za-z0-9_+/=.-]{8,}"  # PagerDuty OAuth tokens
    r"|(?<![A-Za-z0-9])(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})"
    r"|(?<![A-Za-z0-9])xox[abposr]-[A-Za-z0-9-]{10,}"  # Slack
    r"|(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])"  # AWS access key ids
    r"|(?<![A-Za-z0-9])whsec_[A-Za-z0-9+/=]{16,}"  # Standard Webhooks secrets
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)"
)
_BEARER = re.compile(r"(?i)\b(bearer\s+)[^\s\"',;]+")
_BASIC = re.compile(r"\b(Basic\s+)(?=[A-Za-z+/]*[0-9+/=])[A-Za-z0-9+/]{6,}={0,2}")
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]+:)[^/\s@]+@")
# name=value in a query string, fragment, form body or log line ("...&code=abc", "password=x")
_URL_PARAM = re.compile(r"(^|[?&#;\s])([^=&#\s?;]+)=([^&#\s;]+)")
_RUN = re.compile(r"[A-Za-z0-9+/=_~.-]{32,}")
_GUID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
_HEX = re.compile(r"[0-9A-Fa-f]+")
_SINGLE_CASE_ALNUM = re.compile(r"[a-z0-9]+|[A-Z0-9]+")


def is_sensitive_name(name: str) -> bool:
    """Whether a field called ``name`` holds a secret (see the module docstring)."""
    words = [w.lower() for w in _WORDS.findall(name)]
    compact = "".join(words)
    if not words or compact in _HARMLESS_NAMES or words[-1] in _DESCRIPTIVE_SUFFIXES:
        return False
    if any(w in _SENSITIVE_WORDS for w in words):
        return True
    return any(fragment in compact for fragment in _SENSITIVE_FRAGMENTS)


def looks_secret(text: str) -> bool:
    return redact_text(text) != text


def redact_text(text: str) -> str:
    """``text`` with every secret-looking part replaced by ``[redacted]``."""
    text = _KNOWN_FORMATS.sub(REDACTED, text)
    text = _BEARER.sub(lambda m: m.group(1) + REDACTED, text)
    text = _BASIC.sub(lambda m: m.group(1) + REDACTED, text)
    text = _URL_USERINFO.sub(lambda m: m.group(1) + REDACTED + "@", text)
    text = _URL_PARAM.sub(_redact_param, text)
    return _RUN.sub(lambda m: REDACTED if _is_key_material(m.group(0)) else m.group(0), text)


def redact(data: Mapping[str, object]) -> dict[str, object]:
    """A JSON-ready copy of ``data`` with sensitive fields and secret-looking strings redacted."""
    return {str(k): _redact_field(str(k), v, 0) for k, v in data.items()}


def check_identifier(name: str, value: str) -> None:
    """Refuse an empty, oversized or secret-looking identifier (a programming error)."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string")
    if len(value) > _MAX_FIELD_CHARS:
        raise ValueError(f"{name} is longer than {_MAX_FIELD_CHARS} characters")
    if looks_secret(value):
        raise ValueError(f"{name} looks like a secret; pass identifiers, never credentials")


def _redact_field(name: str, value: object, depth: int) -> object:
    if value is None or isinstance(value, bool):
        return value
    if is_sensitive_name(name):
        return REDACTED
    return _redact_value(value, depth)


def _redact_value(value: object, depth: int) -> object:
    if depth >= _MAX_DEPTH:
        return "[truncated]"
    if isinstance(value, Mapping):
        return {str(k): _redact_field(str(k), v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact_value(v, depth + 1) for v in value]
    return _redact_scalar(value)


def _redact_scalar(value: object) -> object:
    if isinstance(value, enum.Enum):
        value = value.value
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Secret | bytes | bytearray | memoryview):
        return REDACTED  # raw bytes may be key material; nothing in the trail needs them
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    return redact_text(text)


def _redact_param(match: re.Match[str]) -> str:
    if is_sensitive_name(match.group(2)):
        return f"{match.group(1)}{match.group(2)}={REDACTED}"
    return match.group(0)


def _is_key_material(run: str) -> bool:
    return any(_piece_is_key_material(p) for p in _GUID.split(run) if len(p) >= 32)


def _piece_is_key_material(piece: str) -> bool:
    has_digit = any(c.isdigit() for c in piece)
    has_upper = any(c.isupper() for c in piece)
    has_lower = any(c.islower() for c in piece)
    if _HEX.fullmatch(piece):
        return len(piece) >= 40 and has_digit and (has_upper or has_lower)
    if _SINGLE_CASE_ALNUM.fullmatch(piece):
        return len(piece) >= 40 and has_digit and _entropy(piece) >= 4.0
    return has_upper and has_lower and _entropy(piece) >= 4.0 and _class_changes(piece) >= 0.35


def _entropy(text: str) -> float:
    """Shannon entropy in bits per character of the text's own character distribution."""
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in Counter(text).values())


def _class_changes(text: str) -> float:
    def kind(c: str) -> int:
        return 0 if c.isupper() else 1 if c.islower() else 2 if c.isdigit() else 3

    changes = sum(kind(a) != kind(b) for a, b in itertools.pairwise(text))
    return changes / (len(text) - 1)
