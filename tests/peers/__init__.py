"""Real peers the tests run: Azurite, devhost processes, and later oidc-provider and fakes."""
