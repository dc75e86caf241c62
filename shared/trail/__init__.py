"""The trail: the append-only audit log, lifecycle events (CloudEvents) and signed webhook
delivery. May import ``foundation``, ``config`` and ``storage``."""
