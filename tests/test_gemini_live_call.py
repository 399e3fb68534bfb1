"""Whole phone calls on a Gemini Live route: the signing Twilio simulator calls the running
server, whose gemini_live provider talks through the real SDK to the TLS fake Live server.

The caller speaks 8 kHz mu-law; the fake must receive 16 kHz PCM of the same tone, and its
24 kHz reply must reach the caller as 8 kHz mu-law at the same frequency."""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
import pytest

from tests.fakes.gemini_live_fake import GeminiLiveFake
from tests.support.audio import active_segments, dominant_frequency, longest, to_mulaw, tone
from tests.support.barge_in import assert_cut_at_the_clear, talk_over_the_answer
from tests.support.server import AUTH_TOKEN, RunningServer, running_server
from voicebot.devtools.twilio_sim import SimulatedCall

ENV = {"GOOGLE_API_KEY": "test-key"}


def gemini_config(fake: GeminiLiveFake) -> str:
    return f"""
[twilio]
auth_token = "{AUTH_TOKEN}"
validate_signatures = true

[providers.gemini]
type = "gemini_live"
api_key = "${{GOOGLE_API_KEY}}"
base_url = "{fake.base_url}"
ca_file = "{fake.ca_file}"
voice = "Aoede"

[[routes]]
name = "default"
providers = ["gemini"]
instructions = "You are the Acme line."
"""


@pytest.fixture
async def fake() -> AsyncIterator[GeminiLiveFake]:
    async with GeminiLiveFake() as server:
        yield server


@pytest.fixture
async def server(fake: GeminiLiveFake) -> AsyncIterator[RunningServer]:
    async with running_server(gemini_config(fake), env=ENV) as running:
        yield running


async def test_tone_reaches_gemini_at_16k_and_its_24k_reply_reaches_the_caller(
    fake: GeminiLiveFake, server: RunningServer
) -> None:
    fake.reply_ms = 800.0
    fake.reply_freqs = (1000.0,)
    async with server.twilio().call() as call:
        await call.pause(200)
        await call.say(to_mulaw(tone(440, 600)))
        await call.wait_for(lambda: call.received_media_ms() >= 790, timeout=8)
        await call.wait_for(lambda: call.queued_ms == 0, timeout=5)
        await call.pause(100)

        conn = fake.last
        assert conn.setup["model"] == "models/gemini-3.8-live"
        assert conn.setup["systemInstruction"]["parts"][0]["text"].startswith("You are the Acme line.\n\n")
        assert conn.audio_mime_types == {"audio/pcm;rate=16000"}
        received = np.frombuffer(bytes(conn.audio_in), dtype="<i2")
        start, end = longest(active_segments(received, 16000, threshold_dbfs=-35))
        # At the wrong rate the 600 ms tone would last 300 or 1200 ms and sit at 220/880 Hz.
        assert end - start == pytest.approx(600, abs=40)
        segment = received[int((start + 20) * 16) : int((end - 20) * 16)]
        assert dominant_frequency(segment, 16000) == pytest.approx(440, abs=5)

        start, end = longest(active_segments(call.heard_pcm(), 8000, threshold_dbfs=-35))
        assert end - start == pytest.approx(800, abs=60)
        assert dominant_frequency(call.heard_pcm(start + 40, end - 40), 8000) == pytest.approx(1000, abs=10)
        # The reply follows the caller's speech end (fake VAD: 300 ms of silence), never before
        # it; how promptly is bench's business, not something a loaded machine should fail.
        assert 200 + 600 + 300 <= start <= 200 + 600 + 5000

        summary = server.runtime.active[call.call_sid].summary
        await call.wait_for(lambda: len(summary.transcript) == 2, timeout=2)  # bot's at turnComplete
        assert [t.role for t in summary.transcript] == ["caller", "bot"]


@pytest.mark.parametrize("answers_text_at_once", [False, True], ids=["text-joins-the-turn", "text-answered-at-once"])
@pytest.mark.parametrize("model", ["gemini-3.8-live", "gemini-2.5-flash-native-audio-preview-12-2025"])
async def test_interrupted_clears_twilio_and_the_whole_answer_to_the_interruption_is_heard(
    fake: GeminiLiveFake, model: str, answers_text_at_once: bool
) -> None:
    """Whatever the service does with realtime text during caller activity, the barge-in note
    never starts an answer over the caller: the caller hears the whole answer to the
    interruption (900 Hz, 2 s), and the model answered exactly twice."""
    fake.reply_ms = 2000.0
    fake.reply_words = 20  # one word per 100 ms of reply audio
    fake.reply_freqs = (600.0, 900.0)
    fake.answers_text_at_once = answers_text_at_once
    config = gemini_config(fake).replace('type = "gemini_live"', f'type = "gemini_live"\nmodel = "{model}"')
    async with running_server(config, env=ENV) as server, server.twilio().call() as call:
        await call.pause(200)
        await call.say(to_mulaw(tone(440, 500)))
        # The whole 2 s answer reaches Twilio's buffer at once, as the real service sends it.
        reply_start, clear_at = await talk_over_the_answer(
            call, answered=lambda: fake.wait_for(lambda: fake.replies == 2, timeout=5)
        )
        assert_cut_at_the_clear(call, reply_start, clear_at)
        assert fake.replies == 2 and fake.last.interruptions == 1

        # Gemini was told what the caller heard: the note quotes about one word per 100 ms.
        bridge = server.runtime.active[call.call_sid]
        barge = bridge.summary.barge_ins[0]
        assert barge.sent_ms == pytest.approx(2000, abs=60)
        conn = fake.last
        if model == "gemini-3.8-live":
            # clientContent without turnComplete, which 3.8 holds for the caller's turn.
            [content] = conn.client_contents
            assert content["turnComplete"] is False
            note = content["turns"][0]["parts"][0]["text"]
        else:
            # Held until the caller went quiet, then realtime text inside the caller's turn.
            assert conn.client_contents == [] and len(conn.texts_during_speech) == 1
            note = conn.texts_during_speech[0]
        quoted = note.split('"')[1].split()
        assert abs(len(quoted) - barge.heard_ms / 100) <= 1


async def test_route_greeting_is_spoken_first_and_dtmf_gets_an_answer(fake: GeminiLiveFake) -> None:
    fake.reply_ms = 400.0
    fake.reply_freqs = (620.0, 750.0)
    config = gemini_config(fake).replace(
        'instructions = "You are the Acme line."',
        'instructions = "You are the Acme line."\ngreeting = "Thanks for calling Acme."',
    )
    async with running_server(config, env=ENV) as server, server.twilio().call() as call:
        # The caller says nothing: the greeting is heard anyway.
        await call.wait_for(lambda: call.received_media_ms() >= 390, timeout=5)
        await call.wait_for(lambda: call.queued_ms == 0, timeout=5)
        conn = fake.last
        assert conn.client_contents[0]["turnComplete"] is True
        assert "Thanks for calling Acme." in conn.client_contents[0]["turns"][-1]["parts"][0]["text"]
        start, end = longest(active_segments(call.heard_pcm(), 8000, threshold_dbfs=-35))
        assert end - start == pytest.approx(400, abs=40)
        assert dominant_frequency(call.heard_pcm(start + 20, end - 20), 8000) == pytest.approx(620, abs=10)

        await call.press("5")
        await call.wait_for(lambda: call.received_media_ms() >= 790, timeout=5)
        await call.wait_for(lambda: call.queued_ms == 0, timeout=5)
        assert len(conn.realtime_texts) == 1 and "5" in conn.realtime_texts[0]
        start, end = active_segments(call.heard_pcm(), 8000, threshold_dbfs=-35)[-1]
        assert dominant_frequency(call.heard_pcm(start + 20, end - 20), 8000) == pytest.approx(750, abs=10)


async def test_tool_call_round_trip_through_the_bridge_and_the_answer_is_heard(
    fake: GeminiLiveFake, server: RunningServer
) -> None:
    # The route declares no tools, so the dispatcher answers with an error output, which still
    # exercises toolCall -> toolResponse (id + name) -> spoken answer.
    fake.reply_ms = 500.0
    fake.reply_freqs = (500.0,)
    fake.tool_call_next = ("get_time", {"zone": "UTC"})
    async with server.twilio().call() as call:
        await call.pause(200)
        await call.say(to_mulaw(tone(1000, 400)))
        await call.wait_for(lambda: call.received_media_ms() >= 490, timeout=8)
        await call.wait_for(lambda: call.queued_ms == 0, timeout=5)
        [response] = fake.last.tool_responses[0]["functionResponses"]
        assert response["name"] == "get_time" and response["id"].startswith("fc-")
        assert response["response"]["error"].startswith("no tool named 'get_time'")
        start, end = longest(active_segments(call.heard_pcm(), 8000, threshold_dbfs=-35))
        assert dominant_frequency(call.heard_pcm(start + 20, end - 20), 8000) == pytest.approx(500, abs=10)
        summary = server.runtime.active[call.call_sid].summary
        await call.wait_for(lambda: summary.transcript[-1].role == "bot", timeout=2)  # at turnComplete
        assert summary.transcript[-1].text.startswith("the tool said")


async def answered_turn(call: SimulatedCall, fake: GeminiLiveFake) -> tuple[float, float]:
    """The caller says something and hears the whole answer, which the fake has completed
    (turnComplete and a fresh resumption handle sent); returns the answer's segment."""
    await fake.wait_for(lambda: bool(fake.connections), timeout=5)  # the session opens as the call starts
    conn = fake.last
    completed = conn.turns_completed
    heard_before = call.received_media_ms()
    await call.say(to_mulaw(tone(440, 400)))
    await call.wait_for(lambda: call.received_media_ms() >= heard_before + fake.reply_ms - 10, timeout=8)
    await call.wait_for(lambda: call.queued_ms == 0, timeout=5)
    await fake.wait_for(lambda: conn.turns_completed > completed, timeout=2)
    return active_segments(call.heard_pcm(), 8000, threshold_dbfs=-35)[-1]


@pytest.mark.parametrize("model", ["gemini-2.5-flash-native-audio-preview-12-2025", "gemini-3.8-live"])
async def test_go_away_mid_call_renews_between_turns(fake: GeminiLiveFake, model: str) -> None:
    """2.5 resumes the conversation by handle while the old socket is still open; 3.8 refuses
    that (1011), so its renewal opens a fresh session that carries the history instead."""
    fake.reply_ms = 500.0
    fake.reply_freqs = (700.0, 900.0)
    config = gemini_config(fake).replace('type = "gemini_live"', f'type = "gemini_live"\nmodel = "{model}"')
    async with running_server(config, env=ENV) as server, server.twilio().call() as call:
        await call.pause(200)
        await answered_turn(call, fake)
        first = fake.last
        await fake.go_away("30s")
        # The renewal happens between turns; the first connection is then closed.
        await fake.wait_for(lambda: len(fake.connections) == 2 and not first.open, timeout=5)
        second = fake.last
        assert fake.refused_resumptions == 0
        if model == "gemini-3.8-live":
            assert second.resumed_from is None and second.conversation is not first.conversation
            [seed] = second.client_contents  # the call so far, replayed; it waits for the caller
            assert [t["role"] for t in seed["turns"]][:2] == ["user", "model"]
            assert seed["turnComplete"] is False
        else:
            assert second.resumed_from == first.handles_sent[-1]
            assert second.conversation is first.conversation
            assert second.client_contents == [] and second.realtime_texts == []  # nothing replayed

        start, end = await answered_turn(call, fake)
        assert (first.replies_started, second.replies_started) == (1, 1)  # nothing said unprompted
        assert end - start == pytest.approx(500, abs=40)
        conversation = second.conversation
        assert conversation is not None
        assert [role for role, _ in conversation.turns][-2:] == ["caller", "bot"]
        assert not server.runtime.active[call.call_sid].summary.outcome.startswith("provider")


async def test_a_dropped_connection_is_resumed_and_the_call_goes_on(
    fake: GeminiLiveFake, server: RunningServer
) -> None:
    fake.reply_ms = 500.0
    fake.reply_freqs = (700.0, 900.0)
    async with server.twilio().call() as call:
        await call.pause(200)
        await answered_turn(call, fake)
        first = fake.last
        await fake.close_active(1011, "Internal error encountered.")
        await fake.wait_for(lambda: len(fake.connections) == 2, timeout=5)
        second = fake.last
        assert second.resumed_from == first.handles_sent[-1]
        start, end = await answered_turn(call, fake)
        assert dominant_frequency(call.heard_pcm(start + 20, end - 20), 8000) == pytest.approx(900, abs=10)
        assert second.replies_started == 1


def route_settings(fake: GeminiLiveFake, settings: str, model: str | None = None) -> str:
    """The default route with ``[routes.provider_settings.gemini]``; the provider table keeps
    automatic activity detection on, so what changes comes from the route."""
    config = gemini_config(fake) + f"\n[routes.provider_settings.gemini]\n{settings}\n"
    if model is not None:
        config = config.replace('type = "gemini_live"', f'type = "gemini_live"\nmodel = "{model}"')
    return config


async def test_route_turns_activity_detection_off_and_voicebot_marks_the_callers_turn(fake: GeminiLiveFake) -> None:
    """The route switches the service's activity detection off: the fake runs no VAD and answers
    only after activityEnd, so any answer at all proves voicebot marked the turn; the turn held
    the caller's whole tone (its onset too) and the answer plays in full after the turn ended."""
    fake.reply_ms = 800.0
    fake.reply_freqs = (1000.0,)
    config = route_settings(fake, "automatic_activity_detection = false\nsilence_duration_ms = 400")
    async with running_server(config, env=ENV) as server, server.twilio().call() as call:
        await call.pause(800)
        await call.say(to_mulaw(tone(440, 600)))
        await call.wait_for(lambda: call.received_media_ms() >= 790, timeout=8)
        await call.wait_for(lambda: call.queued_ms == 0, timeout=5)

        conn = fake.last
        # The SDK passes realtimeInputConfig's inner keys through in snake case.
        assert conn.setup["realtimeInputConfig"]["automatic_activity_detection"] == {"disabled": True}
        assert conn.manual_activity
        assert conn.activity == ["start", "audio", "end"]
        # Only turns are sent: of the 800 ms of quiet before the caller spoke, just the
        # pre-roll (at most 300 ms) went out, right after activityStart.
        assert conn.outside_activity_bytes == 0 and len(conn.audio_in) == conn.active_bytes
        assert conn.active_bytes <= 16000 * 2 * (300 + 600 + 400 + 60) // 1000
        # Inside the turn: the whole 600 ms tone at 440 Hz, onset included (pre-roll), then the
        # 400 ms of quiet that ended the turn.
        received = np.frombuffer(bytes(conn.audio_in), dtype="<i2")
        start, end = longest(active_segments(received, 16000, threshold_dbfs=-35))
        assert end - start == pytest.approx(600, abs=40)
        assert dominant_frequency(received[int((start + 20) * 16) : int((end - 20) * 16)], 16000) == pytest.approx(
            440, abs=5
        )
        assert conn.active_bytes >= 16000 * 2 * (600 + 400) // 1000 - 640 * 3

        start, end = longest(active_segments(call.heard_pcm(), 8000, threshold_dbfs=-35))
        assert end - start == pytest.approx(800, abs=60)
        assert dominant_frequency(call.heard_pcm(start + 40, end - 40), 8000) == pytest.approx(1000, abs=10)
        assert start >= 800 + 600 + 400  # after the turn ended (400 ms of quiet), never over the caller
        summary = server.runtime.active[call.call_sid].summary
        await call.wait_for(lambda: len(summary.transcript) == 2, timeout=2)
        assert summary.transcript[0].text.startswith("caller spoke for")


async def test_barge_in_with_voicebot_marked_turns_interrupts_and_the_note_rides_in_the_turn(
    fake: GeminiLiveFake,
) -> None:
    """Activity detection off on a 2.5 model: the caller talking over the answer opens a turn
    (activityStart interrupts the model), the barge-in note goes inside that turn just before
    activityEnd, and the whole answer to the interruption is heard."""
    fake.reply_ms = 2000.0
    fake.reply_words = 20
    fake.reply_freqs = (600.0, 900.0)
    config = route_settings(
        fake,
        "automatic_activity_detection = false\nsilence_duration_ms = 300",
        model="gemini-2.5-flash-native-audio-preview-12-2025",
    )
    async with running_server(config, env=ENV) as server, server.twilio().call() as call:
        await call.pause(200)
        await call.say(to_mulaw(tone(440, 500)))
        reply_start, clear_at = await talk_over_the_answer(
            call, answered=lambda: fake.wait_for(lambda: fake.replies == 2, timeout=5)
        )
        assert_cut_at_the_clear(call, reply_start, clear_at)
        conn = fake.last
        assert fake.replies == 2 and conn.interruptions == 1
        assert conn.activity == ["start", "audio", "end", "start", "audio", "text", "end"]
        [note] = conn.texts_during_speech
        barge = server.runtime.active[call.call_sid].summary.barge_ins[0]
        assert abs(len(note.split('"')[1].split()) - barge.heard_ms / 100) <= 1


@pytest.mark.parametrize("model", ["gemini-2.5-flash-native-audio-preview-12-2025", "gemini-3.8-live"])
async def test_go_away_during_an_answer_lets_it_finish_and_hands_the_call_over(
    fake: GeminiLiveFake, model: str, caplog: pytest.LogCaptureFixture
) -> None:
    """goAway arrives while the model is still generating a 3 s answer, and the connection ends
    2 s later, before the service completes the turn (it waits for real-time playback). The
    caller hears the whole answer exactly once, the next connection knows the answer was given,
    and the next turn is answered there in full."""
    fake.reply_ms = 3000.0
    fake.reply_words = 30
    fake.chunk_interval_s = 0.02  # 40 ms of audio per 20 ms: generation takes 1.5 s
    fake.reply_freqs = (600.0, 900.0)
    config = gemini_config(fake).replace('type = "gemini_live"', f'type = "gemini_live"\nmodel = "{model}"')
    async with running_server(config, env=ENV) as server, server.twilio().call() as call:
        await call.pause(200)
        await fake.wait_for(lambda: bool(fake.connections), timeout=5)
        first = fake.last
        await call.say(to_mulaw(tone(440, 400)))
        await fake.wait_for(lambda: first.audio_out_bytes > 0, timeout=5)
        await fake.go_away("2s", close_after=2.0)
        await call.wait_for(lambda: call.received_media_ms() >= 2990, timeout=8)
        await call.wait_for(lambda: call.queued_ms == 0, timeout=6)
        await fake.wait_for(lambda: len(fake.connections) >= 2 and not first.open, timeout=5)
        second = fake.last
        heard = active_segments(call.heard_pcm(), 8000, threshold_dbfs=-35)
        start, end = longest(heard)
        assert end - start == pytest.approx(3000, abs=80)  # the whole answer, in one piece
        assert dominant_frequency(call.heard_pcm(start + 40, end - 40), 8000) == pytest.approx(600, abs=10)
        assert fake.replies == 1 and second.replies_started == 0  # nothing repeated or said unprompted
        # Handed over with the handle the service issued once the answer was generated (not
        # the unresumable moment of the goAway): the resumed conversation holds the answer.
        assert second.resumed_from == first.handles_sent[-1]
        assert second.conversation is first.conversation and second.conversation is not None
        assert second.conversation.turns[-1] == ("bot", " ".join(f"word{i:02d}" for i in range(1, 31)))
        assert "session lost" not in caplog.text and "provider error" not in caplog.text

        heard_before = call.received_media_ms()
        await call.say(to_mulaw(tone(440, 400)))
        await call.wait_for(lambda: call.received_media_ms() >= heard_before + 2990, timeout=10)
        await call.wait_for(lambda: call.queued_ms == 0, timeout=6)
        start, end = active_segments(call.heard_pcm(), 8000, threshold_dbfs=-35)[-1]
        assert end - start == pytest.approx(3000, abs=80)
        assert dominant_frequency(call.heard_pcm(start + 40, end - 40), 8000) == pytest.approx(900, abs=10)
        assert second.replies_started == 1
        assert not server.runtime.active[call.call_sid].summary.outcome.startswith("provider")
