"""An uninterruptible greeting (issue 17.5): whole calls through the running server to the
OpenAI Realtime fake. The fake streams the greeting 8x faster than real time, so it is all at
Twilio when the caller talks over it; the guard decides whether it still plays in full."""

from __future__ import annotations

from tests.fakes.gemini_live_fake import GeminiLiveFake
from tests.fakes.openai_realtime_fake import FakeOptions, FakeRealtimeServer
from tests.support.audio import to_mulaw, tone
from tests.support.server import running_server
from tests.test_gemini_live_call import ENV as GEMINI_ENV
from tests.test_gemini_live_call import gemini_config
from tests.test_silence import TICK_MS, config, voiced_ms

GREETING_MS = 1500


async def greeting_talked_over(uninterruptible: bool) -> tuple[list[float], float]:
    """Clear times while the greeting played, and what the caller heard of it (ms)."""
    route = f'greeting = "This call is recorded."\ngreeting_uninterruptible = {str(uninterruptible).lower()}'
    async with (
        FakeRealtimeServer(FakeOptions(tone_hz=440.0, response_ms=GREETING_MS)) as fake,
        running_server(config(fake, route)) as server,
        server.twilio().call() as call,
    ):
        await call.wait_for(lambda: call.received_media_ms() > 0, timeout=10)
        await call.pause(300)
        await call.say(to_mulaw(tone(1000, 400)))  # over the greeting
        conn = fake.last
        # The bot answers that speech; both play out (the answer right behind the greeting).
        await fake.wait_for(lambda: len(conn.responses) >= 2, timeout=10)
        await call.wait_for(lambda: call.queued_ms == 0 and conn.responses[1].status != "in_progress", timeout=10)
        greeting_clears = list(call.clear_times)
        greeting_heard = voiced_ms(call, 0, call.now_ms()) - GREETING_MS  # minus the whole answer
        # Once the greeting has been heard, the caller can interrupt the bot again.
        await call.say(to_mulaw(tone(1000, 400)))
        await call.wait_for(lambda: call.queued_ms > 0, timeout=10)
        await call.say(to_mulaw(tone(1000, 400)))
        await call.wait_for(lambda: len(call.clear_times) > len(greeting_clears), timeout=10)
        await call.hangup()
    return greeting_clears, greeting_heard


async def test_the_caller_cannot_talk_over_an_uninterruptible_greeting() -> None:
    clears, heard = await greeting_talked_over(uninterruptible=True)
    assert clears == []
    # Heard whole: never more than was sent, and far more than the cut greeting of the test below
    # (< GREETING_MS - 300). The lower margin absorbs the level-based edges of two back-to-back
    # answers and a late frame or two on a loaded machine; a cut greeting loses at least 800 ms.
    assert GREETING_MS - 250 <= heard <= GREETING_MS + 4 * TICK_MS


async def test_without_the_flag_the_same_speech_cuts_the_greeting() -> None:
    clears, heard = await greeting_talked_over(uninterruptible=False)
    assert len(clears) == 1
    assert heard < GREETING_MS - 300


# -- Gemini: the caller's input is held back while the greeting is generated ---------------
# NO_INTERRUPTION is a setup field for the whole connection, so the Gemini session instead
# sends nothing from the caller until the greeting's turn is complete (s2s.gemini_live.protocol).
# The fake here sends its audio in real time, so an interruption cuts what the caller hears.


async def gemini_greeting_talked_over(uninterruptible: bool) -> tuple[float, GeminiLiveFake]:
    """What the caller heard of a 2 s Gemini greeting they talked over 500 ms into it (ms)."""
    route = f'greeting = "This call is recorded."\ngreeting_uninterruptible = {str(uninterruptible).lower()}'
    async with GeminiLiveFake(reply_ms=2000.0, reply_freqs=(620.0, 750.0), chunk_interval_s=0.04) as fake:
        config = gemini_config(fake).replace('instructions = "You are the Acme line."', route)
        async with running_server(config, env=GEMINI_ENV) as server, server.twilio().call() as call:
            await call.wait_for(lambda: call.received_media_ms() > 0, timeout=10)
            await call.pause(500)
            await call.say(to_mulaw(tone(1000, 400)))  # over the greeting
            conn = fake.last
            greeting = conn.reply_task
            await fake.wait_for(lambda: greeting is not None and greeting.done(), timeout=10)
            await call.wait_for(lambda: call.queued_ms == 0, timeout=10)
            greeting_heard = voiced_ms(call, 0, call.now_ms())
            # After the greeting the caller is heard again: speech gets an answer.
            answers = fake.replies
            await call.say(to_mulaw(tone(1000, 400)))
            await fake.wait_for(lambda: fake.replies > answers, timeout=10)
            await call.hangup()
    return greeting_heard, fake


async def test_gemini_is_not_interrupted_during_an_uninterruptible_greeting() -> None:
    heard, fake = await gemini_greeting_talked_over(uninterruptible=True)
    assert fake.last.interruptions == 0
    assert 2000 - 250 <= heard <= 2000 + 4 * TICK_MS


async def test_gemini_without_the_flag_is_interrupted_by_the_same_speech() -> None:
    heard, fake = await gemini_greeting_talked_over(uninterruptible=False)
    assert fake.last.interruptions == 1
    assert heard < 2000 - 300
