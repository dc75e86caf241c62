"""Named points where the crash tests kill a worker, as a power cut or an OOM kill would.

Inert in every real deployment: a point does anything only once the process is armed with its
name, which ``runtime`` does from the test-only setting ``KEYSTEWARD_TEST_FAULT``; then the
process dies at once (SIGKILL: no ``finally``, no flush), so a test can prove that the stored
state alone lets the next worker finish the job.
"""

from __future__ import annotations

import os
import signal

SETTING = "KEYSTEWARD_TEST_FAULT"
_armed: str | None = None


def arm(name: str | None) -> None:
    """Kill the process when it reaches the point ``name`` (None: never)."""
    global _armed  # noqa: PLW0603 - one setting per process, read once at wiring
    _armed = name or None


def crash_point(name: str) -> None:
    """Die here if the process was armed with this point; otherwise do nothing."""
    if _armed is not None and _armed == name:
        os.kill(os.getpid(), signal.SIGKILL)
