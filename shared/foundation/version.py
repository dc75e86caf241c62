"""The version reported by /api/health and stamped on events."""

VERSION = "0.1.0"
