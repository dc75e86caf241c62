"""Named points where the crash tests kill a worker, as a power cut or an OOM kill would.

Inert in every real deployment: a point does anything only when the test-only setting
``KEYSTEWARD_TEST_FAULT`` names it, and then the process dies at once (SIGKILL: no ``finally``, no
flush), so a test can prove that the stored state alone lets the next worker finish the job.
"""

from __future__ import annotations

import os
import signal

SETTING = "KEYSTEWARD_TEST_FAULT"


def crash_point(name: str) -> None:
    """Die here if the test-only setting names this point; otherwise do nothing."""
    if os.environ.get(SETTING) == name:
        os.kill(os.getpid(), signal.SIGKILL)
