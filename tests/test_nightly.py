"""The nightly run: one part failing does not cost the others their turn, and stays visible."""

from __future__ import annotations

import logging

import pytest

from shared.foundation.errors import NightlyFailed
from shared.lifecycle.nightly import run_nightly


def test_a_failing_part_does_not_skip_the_others(caplog: pytest.LogCaptureFixture) -> None:
    ran: list[str] = []

    def expiry() -> object:
        ran.append("expiry")
        raise RuntimeError("storage said no")

    def retries() -> object:
        ran.append("retries")
        return {"revoked": 1}

    def repair() -> object:
        ran.append("repair")
        return {"abandoned": 0}

    caplog.set_level(logging.ERROR, logger="keysteward.nightly")
    with pytest.raises(NightlyFailed, match="expiry"):
        run_nightly([("expiry", expiry), ("retries", retries), ("repair", repair)])
    assert ran == ["expiry", "retries", "repair"]
    assert "expiry failed" in caplog.text


def test_a_clean_night_reports_every_part() -> None:
    report = run_nightly([("a", lambda: 1), ("b", lambda: 2)])
    assert report.results == {"a": 1, "b": 2}
    assert report.failed == []
