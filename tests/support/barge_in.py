"""The barge-in scenario that provider call tests share: a provider answers with a 2 s tone
(600 Hz) that reaches Twilio's buffer at once, the caller talks over it, and the provider's
answer to that (a 2 s tone at 900 Hz) must play in full while nothing of the first plays after
Twilio's buffer was cleared."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from tests.support.audio import active_segments, dominant_frequency, level_at, longest, to_mulaw, tone
from voicebot.devtools.twilio_sim import SimulatedCall


async def talk_over_the_answer(call: SimulatedCall, answered: Callable[[], Awaitable[object]]) -> tuple[float, float]:
    """Once the whole first answer is in Twilio's buffer, the caller hears 600 ms of it and
    talks over it; ``answered`` waits until the provider has answered the barge-in, which then
    plays out. Returns when the first answer started playing and when the clear arrived (ms)."""
    await call.wait_for(lambda: call.received_media_ms() >= 1900, timeout=8)
    reply_start = next(e.t_ms for e in call.log if e.event == "media")
    await call.pause(600)
    await call.say(to_mulaw(tone(440, 300)))  # the caller talks over the answer
    await call.wait_for(lambda: bool(call.clear_times), timeout=3)
    clear_at = call.clear_times[0]
    await answered()
    await call.wait_for(lambda: call.received_media_ms() >= 3900, timeout=8)
    await call.wait_for(lambda: call.queued_ms == 0, timeout=6)
    return reply_start, clear_at


def assert_cut_at_the_clear(call: SimulatedCall, reply_start: float, clear_at: float) -> None:
    heard = call.heard_pcm()
    # The first answer (600 Hz) was heard up to the clear, and never after it.
    assert dominant_frequency(call.heard_pcm(reply_start + 40, clear_at - 40), 8000) == pytest.approx(600, abs=15)
    assert level_at(heard[int((clear_at + 40) * 8) :], 8000, 600) < -50
    # The answer to the barge-in (900 Hz) played in full afterwards.
    start, end = longest([s for s in active_segments(heard, 8000, -35) if s[0] > clear_at])
    assert dominant_frequency(call.heard_pcm(start + 40, end - 40), 8000) == pytest.approx(900, abs=15)
    assert end - start == pytest.approx(2000, abs=80)
