"""Session renewal (the one rotation policy, s2s.resilience): a session that announces its
expiry is replaced between turns, never during a bot answer, with the transcript carried."""

from __future__ import annotations

import pytest

from s2s.resilience import ResilientSession
from tests.support.audio import active_segments, dominant_frequency, to_mulaw, tone
from tests.support.server import AUTH_TOKEN, running_server


def config(expire_after_s: float) -> str:
    # speed = 1.5: the echo line sends its answer barely faster than real time, so the answer is
    # "in progress" for most of its length and the expiry notice lands in the middle of it, while
    # Twilio's buffer stays a little ahead (at exactly real time, a loaded test machine's
    # scheduling jitter alone would open 20 ms gaps in what the caller hears).
    return f"""
[twilio]
auth_token = "{AUTH_TOKEN}"
validate_signatures = true

[providers.line]
type = "echo"
speed = 1.5
transcribe = true
expire_after_s = {expire_after_s}

[[routes]]
name = "main"
providers = ["line"]
instructions = "Renewal test."
"""


async def test_expiring_session_is_renewed_after_the_answer_with_no_gap_and_history_carried() -> None:
    async with running_server(config(expire_after_s=2.2)) as server, server.twilio().call() as call:
        await call.wait_for(lambda: call.call_sid in server.runtime.active, timeout=3)
        await call.wait_for(lambda: server.runtime.active[call.call_sid].session is not None, timeout=3)
        session = server.runtime.active[call.call_sid].session
        assert isinstance(session, ResilientSession)
        first = session.current

        # Caller speaks 0.2-1.2 s; the 1 s answer is sent ~1.85-2.5 s; expiry is announced at ~2.2 s.
        await call.pause(200)
        await call.say(to_mulaw(tone(500, 1000)))
        await call.wait_for(lambda: bool(session.renewed_at), timeout=5)
        await call.wait_for(lambda: call.queued_ms == 0 and call.received_media_ms() >= 950, timeout=3)
        await call.pause(150)

        reply_media = [e.t_ms for e in call.log if e.event == "media"]
        swap_ms = (session.renewed_at[0] - call._t0) * 1000.0
        assert reply_media[0] < 2200 < reply_media[-1], "the expiry must land inside the answer for this test"
        assert swap_ms >= reply_media[-1], "renewed while the bot was still answering"

        # What the caller heard: one unbroken 1 s answer at the caller's frequency.
        segments = [s for s in active_segments(call.heard_pcm(), 8000, -35) if s[0] > 1300]
        assert len(segments) == 1
        start, end = segments[0]
        assert end - start == pytest.approx(1000, abs=60)
        assert dominant_frequency(call.heard_pcm(start + 20, end - 20), 8000) == pytest.approx(500, abs=15)

        # The new session got the instructions and the conversation so far, and no greeting.
        assert len(session.opened) == 2
        name, ctx = session.opened[1]
        assert name == "line" and ctx.instructions == "Renewal test." and ctx.greeting is None
        assert [t.role for t in ctx.history] == ["caller", "bot"]
        assert ctx.history[0].text.endswith("ms of speech")
        assert session.current is not first

        # ...and it answers the next utterance.
        said_at = call.now_ms()
        await call.say(to_mulaw(tone(1200, 600)))
        await call.wait_for(lambda: call.received_media_ms() >= 950 + 550, timeout=5)
        await call.wait_for(lambda: call.queued_ms == 0, timeout=3)
        await call.pause(100)
        later = [s for s in active_segments(call.heard_pcm(), 8000, -35) if s[0] > said_at + 600]
        assert later, "the renewed session did not answer"
        start, end = later[0]
        assert dominant_frequency(call.heard_pcm(start + 20, end - 20), 8000) == pytest.approx(1200, abs=15)
        # (The renewed session announces its own expiry 2.2 s after opening, which may fall
        # inside this second exchange; a second renewal is then legitimate.)
        assert session.recoveries == 0
