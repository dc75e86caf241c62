"""The nightly run: expiry warnings, another try at upstream revocations that kept failing, and
the repair of managed PATs. Each part runs whatever the others did: a failing expiry sweep must not
cost that night's revocation retries."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from shared.foundation.errors import NightlyFailed

log = logging.getLogger("keysteward.nightly")


@dataclass
class NightlyReport:
    results: dict[str, object] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)


def run_nightly(parts: Sequence[tuple[str, Callable[[], object]]]) -> NightlyReport:
    """Run every part in order; a part that raises is logged and the rest still run. Raises
    ``NightlyFailed`` at the end when any part failed, so the failure stays visible."""
    report = NightlyReport()
    for name, part in parts:
        try:
            report.results[name] = part()
        except Exception:
            log.exception("nightly: %s failed; the other parts still run", name)
            report.failed.append(name)
    if report.failed:
        raise NightlyFailed(f"nightly parts failed: {', '.join(report.failed)}")
    return report
