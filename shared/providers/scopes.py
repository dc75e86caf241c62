"""Whether a grant covers what an app asked: the one scope comparison, in a provider's style.

``strict``: every requested scope is in the grant as written (RFC 6749 §3.3).

``resource`` (Microsoft Entra): a scope is ``{resource}/{permission}``, where the resource is an
application id URI or GUID and a bare permission (``User.Read``) belongs to the default resource,
Microsoft Graph. Entra compares them case-insensitively, and it answers a request for
``{resource}/.default`` with the concrete permissions consented for that resource, never with
``.default`` itself (providers.md §8; learn.microsoft.com, "Scopes and permissions", "The
.default scope"). So ``.default`` is satisfied by any permission of its resource.

``off``: the grant is not compared.
"""

from __future__ import annotations

from collections.abc import Iterable

DEFAULT = ".default"
# Microsoft Graph's application id URI and its GUID: where a bare permission belongs.
GRAPH = ("https://graph.microsoft.com", "00000003-0000-0000-c000-000000000000")


def missing(
    style: str, asked: Iterable[str], granted: Iterable[str], implicit: Iterable[str] = ()
) -> list[str]:
    """The asked scopes the grant lacks (the provider's implicit ones are never missing)."""
    skip = set(implicit)
    wanted = [s for s in asked if s not in skip]
    if style == "off":
        return []
    if style == "strict":
        have = set(granted)
        return [s for s in wanted if s not in have]
    held = {_split(s) for s in granted}
    resources = {resource for resource, _ in held}
    return [s for s in wanted if not _covered(_split(s), held, resources)]


def _covered(scope: tuple[str, str], held: set[tuple[str, str]], resources: set[str]) -> bool:
    resource, permission = scope
    if permission == DEFAULT.casefold():
        return resource in resources
    return scope in held


def _split(scope: str) -> tuple[str, str]:
    """(resource, permission), case-folded, with Graph's aliases and bare names as one."""
    resource, slash, permission = scope.rstrip("/").rpartition("/")
    if not slash:
        resource, permission = GRAPH[0], scope
    resource = resource.casefold()
    if resource in GRAPH:
        resource = GRAPH[0]
    return resource, permission.casefold()
