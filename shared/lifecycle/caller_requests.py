"""What callers ask of the lifecycle services, parsed and checked at the edge: a connect link
(``NewLink``), a managed PAT (``NewPat``), a PAT's new lifetime (``PatExtension``), a token the
provider refused (``TokenRejection``) and a rotation step from its queue (``RotationStep``-carrying
``RotationMessage``). The revocation request has
its own module's ``RevocationRequest``. A service receives these, never a raw body."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import ClassVar

from shared.foundation import inputs
from shared.foundation.errors import InputError
from shared.foundation.urls import browser_url
from shared.lifecycle.user_ids import check_user_id

MAX_LIFETIME_DAYS = 365
_ORG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,49}$")
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


@dataclass(frozen=True)
class NewLink:
    FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"app", "user_id", "return_to", "allow_identity_change"}
    )
    app: str
    user_id: str
    return_to: str | None
    # A reconnect may bring another account at the provider (a user who changed accounts).
    allow_identity_change: bool = False

    @classmethod
    def parse(cls, body: inputs.Fields) -> NewLink:
        inputs.only(body, cls.FIELDS)
        app = inputs.text(body, "app", limit=64, hint="the id of a configured app")
        raw = body.get("return_to")
        # Stored in the form a browser would follow, or refused now: never a 5xx at the callback.
        return_to = None if raw is None else browser_url(raw)
        return cls(
            app=app,
            user_id=check_user_id(body.get("user_id")),
            return_to=return_to,
            allow_identity_change=inputs.flag(body, "allow_identity_change", default=False),
        )


@dataclass(frozen=True)
class TokenRejection:
    """A caller's report that the provider refused a token: its SHA-256, never the token."""

    FIELDS: ClassVar[frozenset[str]] = frozenset({"access_token_sha256"})
    access_token_sha256: str

    @classmethod
    def parse(cls, body: inputs.Fields) -> TokenRejection:
        inputs.only(body, cls.FIELDS)
        value = body.get("access_token_sha256")
        if not isinstance(value, str) or not _SHA256.match(value):
            # Never echoed: a caller who sent the token itself must not see it in a log or body.
            raise InputError(
                "'access_token_sha256' must be the SHA-256 of the refused access token as 64 hex "
                "digits (hashlib.sha256(token.encode()).hexdigest()); never send the token"
            )
        return cls(access_token_sha256=value.lower())


def organization(value: object) -> str:
    if not isinstance(value, str) or not _ORG.match(value):
        raise InputError("'organization' is required: the Azure DevOps organisation name")
    return value


@dataclass(frozen=True)
class NewPat:
    FIELDS: ClassVar[frozenset[str]] = frozenset({
        "organization", "display_name", "scope", "lifetime_days", "all_orgs",
        "rotate_before_days", "auto_rotate",
    })  # fmt: skip
    organization: str | None  # None: the app's default organisation
    display_name: str
    scope: str
    lifetime_days: int
    rotate_before_days: int
    all_orgs: bool
    auto_rotate: bool

    @classmethod
    def parse(cls, body: inputs.Fields) -> NewPat:
        inputs.only(body, cls.FIELDS)
        org = body.get("organization")
        lifetime = inputs.whole(body, "lifetime_days", low=1, high=MAX_LIFETIME_DAYS, default=30)
        return cls(
            organization=organization(org) if org else None,
            display_name=inputs.text(body, "display_name", limit=100),
            scope=inputs.text(body, "scope", limit=1000),
            lifetime_days=lifetime,
            rotate_before_days=inputs.whole(
                body, "rotate_before_days", low=1, high=lifetime, default=min(7, lifetime)
            ),
            all_orgs=inputs.flag(body, "all_orgs", default=False),
            auto_rotate=inputs.flag(body, "auto_rotate", default=True),
        )


@dataclass(frozen=True)
class PatExtension:
    FIELDS: ClassVar[frozenset[str]] = frozenset({"extend_days"})
    extend_days: int

    @classmethod
    def parse(cls, body: inputs.Fields) -> PatExtension:
        inputs.only(body, cls.FIELDS)
        return cls(inputs.whole(body, "extend_days", low=1, high=MAX_LIFETIME_DAYS))


@dataclass(frozen=True)
class RotationMessage:
    """A message on ``rotation-requests``: run this rotation of this PAT as far as it can go."""

    pat_id: str
    rotation_id: str

    @classmethod
    def parse(cls, raw: bytes) -> RotationMessage:
        try:
            body = inputs.require_object(json.loads(raw), "a rotation message")
        except ValueError:
            raise InputError("a rotation message is JSON") from None
        ids = [inputs.text(body, name, limit=64) for name in ("pat_id", "rotation_id")]
        if not all(_ID.match(value) for value in ids):
            raise InputError("'pat_id' and 'rotation_id' are letters, digits, '_' and '-'")
        return cls(*ids)

    def encode(self) -> str:
        return json.dumps({"pat_id": self.pat_id, "rotation_id": self.rotation_id})
