"""Providers: how Keysteward speaks to the outside. OAuth mechanics and the one normalisation of a
token response (``oauth``), a driver per wire-protocol family (``drivers/``), the Azure DevOps PAT
API client (``pat_api``) and the HTTP session with timeouts. May import ``foundation`` and
``config``; never storage (a driver holds no state of its own)."""
