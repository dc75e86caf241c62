"""Managed Azure DevOps PATs, one concern per module: ``records`` (create, read, extend, list,
the user's inventory), ``rotation`` (the staged rotation's state machine) and ``revocation`` (the
one path that revokes a PAT, for ``DELETE /pats/{id}`` and for revocation requests, and its one
nightly retry).

A managed PAT belongs to one ``entra`` connection: every call to the PAT API carries that user's
Entra access token, taken through the token path (refreshed as needed)."""
