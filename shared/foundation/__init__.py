"""Foundation: what every layer shares and that knows nothing of Keysteward's state.

Holds the error tree, the clock, ``Secret``, the one redaction, the input-parsing toolkit and the
test-only crash points. Imports nothing else from ``shared``.
"""
