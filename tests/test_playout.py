"""Heard-position accounting from mark echoes."""

from __future__ import annotations

import pytest

from telephony.playout import PlayoutTracker


def test_echoed_marks_count_as_heard_and_unknown_echoes_are_ignored() -> None:
    t = PlayoutTracker()
    m1 = t.sent("a", 40, now=0.0)
    m2 = t.sent("a", 40, now=0.0)
    assert t.pending and t.pending_ms == 80
    assert t.echoed(m1, now=0.040)
    assert t.heard_ms("a", now=0.040) == 40
    assert not t.echoed("m999", now=0.05)
    assert t.echoed(m2, now=0.080)
    assert not t.pending and t.heard_ms("a", now=1.0) == 80


def test_position_inside_the_playing_chunk_is_interpolated_and_capped() -> None:
    t = PlayoutTracker()
    m1 = t.sent("a", 100, now=0.0)
    t.sent("a", 100, now=0.0)
    t.echoed(m1, now=0.1)
    assert t.heard_ms("a", now=0.13) == 130
    assert t.heard_ms("a", now=5.0) == 200  # never more than was sent


def test_playback_after_an_underrun_starts_when_the_chunk_was_sent() -> None:
    t = PlayoutTracker()
    m1 = t.sent("a", 40, now=0.0)
    t.echoed(m1, now=0.04)
    t.sent("a", 40, now=1.0)  # Twilio's buffer ran dry meanwhile
    assert t.heard_ms("a", now=1.01) == pytest.approx(50)


def test_clear_drops_pending_marks_so_their_echoes_mean_nothing() -> None:
    t = PlayoutTracker()
    t.sent("a", 40, now=0.0)
    m2 = t.sent("b", 40, now=0.0)
    assert t.pending_items() == ["a", "b"]
    dropped = t.clear()
    assert [c.item_id for c in dropped] == ["a", "b"]
    assert not t.echoed(m2, now=0.01)
    assert t.heard_ms("a", now=1.0) == 0 and t.sent_ms("a") == 40
