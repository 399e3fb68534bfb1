"""Regression tests from recorded calls: each tape in tests/fixtures/calls is replayed against
the real server with its provider side served from the tape, and must not diverge. Beyond
"no divergence", each checks the audio the simulated caller heard this time.

Re-record the tapes with ``.venv/bin/python -m tests.fixtures.calls.record_fixtures``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.audio import active_segments, dominant_frequency, level_at
from voicebot.devtools.tape.replay import ReplayResult, replay_call

CALLS = Path(__file__).parent / "fixtures" / "calls"
# What the caller heard is measured three ways: from the server tape's send times (the view),
# from the server's own mark-based estimate (barge-ins) and from the simulated caller's playback.
# They agree to a frame or two on an idle machine; on a starved one each side's scheduling
# lateness (seen up to ~40 ms real time under `./dev test --stress`) separates them, and at
# speed 2 a real millisecond is two on the tape's clock.
SPEED = 2
SKEW_MS = 40 * SPEED


def heard_segments(result: ReplayResult) -> list[tuple[float, float]]:
    return active_segments(result.heard_pcm(), 8000, threshold_dbfs=-35)


def frequency_heard(result: ReplayResult, start: float, end: float) -> float:
    return dominant_frequency(result.heard_pcm(start + 20, end - 20), 8000)


async def test_two_turn_call() -> None:
    result = await replay_call(CALLS / "echo_two_turns.jsonl", speed=SPEED)
    assert result.ok, result.report()

    assert [(t.sent_ms, t.interrupted) for t in result.turns] == [(700, False), (500, False)]
    (s1, e1), (s2, e2) = heard_segments(result)
    assert e1 - s1 == pytest.approx(700, abs=30) and e2 - s2 == pytest.approx(500, abs=30)
    assert frequency_heard(result, s1, e1) == pytest.approx(500, abs=10)
    assert frequency_heard(result, s2, e2) == pytest.approx(800, abs=10)


async def test_barge_in_call() -> None:
    result = await replay_call(CALLS / "echo_barge_in.jsonl", speed=SPEED)
    assert result.ok, result.report()

    (barge,) = result.barge_ins
    assert barge.sent_ms == pytest.approx(1500, abs=40) and 400 < barge.heard_ms < 800
    first, second = result.turns
    assert first.interrupted and first.heard_ms == pytest.approx(barge.heard_ms, abs=SKEW_MS)
    assert not second.interrupted and second.sent_ms == pytest.approx(400, abs=40)
    # On the audio: the 600 Hz answer stops at the clear, then the 400 Hz answer plays.
    clear_at = result.got.barge_ins[0].at_ms
    after_clear = result.heard_pcm(clear_at + 40, second.start_ms - 20)
    assert level_at(after_clear, 8000, 600) < -50
    assert frequency_heard(result, second.start_ms, second.start_ms + second.heard_ms) == pytest.approx(400, abs=10)


async def test_dtmf_and_caller_hangup_mid_answer() -> None:
    result = await replay_call(CALLS / "echo_dtmf_hangup.jsonl", speed=SPEED)
    assert result.ok, result.report()

    assert result.got.dtmf == ["4", "2", "#"]
    assert result.got.provider_text == ["The caller entered 42, then # on the phone keypad."]
    (turn,) = result.turns
    assert turn.sent_ms == pytest.approx(1000, abs=40) and 200 < turn.heard_ms < 700
    assert result.got.outcome == "caller-hangup"
    (start, end) = heard_segments(result)[-1]
    assert end - start == pytest.approx(turn.heard_ms, abs=SKEW_MS)
    assert frequency_heard(result, start, end) == pytest.approx(700, abs=10)


async def test_openai_fake_barge_in_call_keeps_its_transcript() -> None:
    result = await replay_call(CALLS / "openai_barge_in.jsonl", speed=SPEED)
    assert result.ok, result.report()

    assert [(t.role, t.text) for t in result.transcript] == [
        ("caller", "caller tone 1000 hertz"),
        ("bot", "bot tone …"),  # only what the caller heard of the interrupted answer
        ("caller", "caller tone 700 hertz"),
        ("bot", "bot tone 440 hertz"),
    ]
    (barge,) = result.barge_ins
    assert result.turns[0].interrupted and 450 < barge.heard_ms < 750
    second = result.turns[1]
    assert frequency_heard(result, second.start_ms, second.start_ms + second.heard_ms) == pytest.approx(440, abs=10)
