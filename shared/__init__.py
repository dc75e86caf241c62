"""Keysteward's core, in layers. Each layer imports only the layers listed before it:

    foundation  errors, clock, Secret, redaction, input parsing, crash points
    config      settings, the provider catalogue (providers.yaml), the apps file
    storage     Table/Queue clients, the store chokepoint, typed rows and their tables, keys,
                crypto, the lease and conflict-retry helpers
    providers   OAuth mechanics, drivers, the Azure DevOps PAT API client (beside storage: neither
                imports the other)
    trail       audit trail, lifecycle events, signed webhooks
    access      API keys and resource globs
    lifecycle   the services: connect, tokens, sweeps, PATs and rotation, revocation, expiry, rekey
    runtime     wiring: the process's collaborators, built once

Nothing in this package imports ``azure.functions``: services never know which trigger called
them. ``tests/test_architecture.py`` holds every rule above.
"""
