"""The one conflict-retry discipline: bounded tries, then a named 503, never a fall-through."""

from __future__ import annotations

import pytest

from shared.foundation.errors import ConcurrencyConflict, Contended
from shared.storage.retry import on_conflict


def test_a_lost_race_is_tried_again_from_a_fresh_read() -> None:
    calls: list[int] = []

    def attempt() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConcurrencyConflict("the row changed")
        return "written"

    assert on_conflict(attempt, what="the row") == "written"
    assert len(calls) == 3


def test_running_out_of_tries_is_a_named_503_with_retry_after() -> None:
    calls: list[int] = []

    def attempt() -> None:
        calls.append(1)
        raise ConcurrencyConflict("the row changed")

    with pytest.raises(Contended) as raised:
        on_conflict(attempt, what="the managed PAT 'pat-1'", tries=4)
    assert len(calls) == 4
    assert raised.value.status == 503
    assert raised.value.retry_after >= 1
    assert "pat-1" in raised.value.message
