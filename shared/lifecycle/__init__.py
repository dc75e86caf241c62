"""The lifecycle services, one module per concern: the connect flow, access tokens and their
refresh policy, the refresh sweep, managed PATs (records, rotation, revocation), revocation
requests and credential revocation, expiry warnings, the nightly run, rekey. Any lower layer may be
imported; ``functions/`` reaches ``shared`` only through here, ``access``, ``config``,
``foundation`` and ``runtime``."""
