"""Hold audio while a slow tool works (issue 17 item 2): the hold clip as audio (pure), the
route's ``[routes.waiting]`` config, then whole calls through the running server, the echo line
calling a slow route tool on cue, asserting on what the simulated caller heard: the hold clip
(a 300 Hz WAV) from ``hold_after_s`` after the tool call to its answer, never over the bot,
gone when the caller speaks, and never counted in what the caller heard of the bot's answer.
Times are on the simulator's stream clock; upper bounds are generous (a loaded machine)."""

from __future__ import annotations

import asyncio
import io
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from telephony.hold_audio import HOLD_TONE_DBFS, HOLD_TONE_NOTES, BadWav, builtin_hold_tone, wav_to_mulaw_8k
from tests.support.audio import active_segments, dominant_frequency, from_mulaw, level_at, rms_dbfs, to_mulaw, tone
from tests.support.live_call import echo_of, live_bridge
from tests.support.server import echo_line_config, running_server
from tests.test_telemetry import scrape, value
from voicebot.config import ConfigError, load_config_text
from voicebot.devtools.twilio_sim import SimulatedCall

HOLD_HZ = 300.0
BOT_HZ = 700.0
HOLD_AFTER_MS = 1000.0
SAY_MS = 300  # the model's "let me check" before the tool call
FRAME_MS = 20
ANSWERED_AT: dict[str, float] = {}  # call_sid -> time.monotonic() when the slow tool answered


async def slow_lookup(request: dict[str, Any]) -> dict[str, str]:
    """A route tool (``handler``) that takes ``arguments.delay_s`` to answer."""
    await asyncio.sleep(float(request["arguments"]["delay_s"]))
    ANSWERED_AT[request["call_sid"]] = time.monotonic()
    return {"result": "found"}


def wav_bytes(pcm: np.ndarray, rate: int, channels: int = 1) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(np.repeat(pcm, channels).astype("<i2").tobytes())
    return out.getvalue()


@pytest.fixture
def hold_wav(tmp_path: Path) -> Path:
    """Two seconds of 300 Hz at 16 kHz, stereo: the route's hold clip (resampled and mixed down)."""
    path = tmp_path / "hold.wav"
    path.write_bytes(wav_bytes(tone(HOLD_HZ, 2000, rate=16000), 16000, channels=2))
    return path


def hold_config(
    hold_wav: Path | None, delay_s: float, reply_ms: int = 600, route: str = "desk", more_cues: str = ""
) -> str:
    cue = (
        f'{{ on_text = "entered 5", name = "lookup", arguments = {{ delay_s = {delay_s} }}, '
        f"say_ms = {SAY_MS}, reply_ms = {reply_ms}, tone_hz = {BOT_HZ} }}{more_cues}"
    )
    audio = f'hold_audio = "{hold_wav}"' if hold_wav is not None else ""
    extra = f"""
[[routes.tools]]
name = "lookup"
description = "look something up (slow)"
handler = "tests.test_hold:slow_lookup"
timeout_s = 10

[routes.waiting]
mode = "hold"
hold_after_s = {HOLD_AFTER_MS / 1000}
{audio}

[routes.dtmf]
inter_digit_timeout_ms = 200"""
    return echo_line_config(route, parrot=f"speed = 20\ntool_cues = [{cue}]", route_extra=extra)


def frames_of(call: SimulatedCall, hz: float) -> list[float]:
    """Start times (stream ms) of the 20 ms frames the caller heard whose sound is ``hz``."""
    pcm = call.heard_pcm()
    n = 8 * FRAME_MS
    starts = []
    for i in range(pcm.size // n):
        frame = pcm[i * n : (i + 1) * n]
        if rms_dbfs(frame) > -40 and abs(dominant_frequency(frame, 8000) - hz) < 60:
            starts.append(float(i * FRAME_MS))
    return starts


def call_clock_ms(call: SimulatedCall, monotonic: float) -> float:
    return call.now_ms() - (time.monotonic() - monotonic) * 1000.0


async def ask(call: SimulatedCall, key: str = "5") -> None:
    await call.pause(200)
    await call.press(key)
    await call.press("#")


# -- the clip, pure ----------------------------------------------------------------------


def test_a_wav_clip_becomes_8khz_mulaw_mono_of_the_same_length_and_pitch() -> None:
    clip = wav_to_mulaw_8k(wav_bytes(tone(HOLD_HZ, 1000, rate=44100), 44100, channels=2), max_ms=5000)
    pcm = from_mulaw(clip)
    assert pcm.size == 8000
    assert dominant_frequency(pcm, 8000) == pytest.approx(HOLD_HZ, abs=3)
    assert rms_dbfs(pcm) == pytest.approx(-12 - 3, abs=1)  # a sine's RMS is 3 dB under its peak


def test_a_clip_that_is_not_pcm_wav_or_too_long_is_refused() -> None:
    with pytest.raises(BadWav, match="not a linear PCM WAV"):
        wav_to_mulaw_8k(b"ID3\x04 an mp3", max_ms=5000)
    with pytest.raises(BadWav, match="at most 1 s"):
        wav_to_mulaw_8k(wav_bytes(tone(HOLD_HZ, 2000), 8000), max_ms=1000)


def test_the_builtin_hold_pattern_is_a_soft_chime_then_a_rest() -> None:
    pcm = from_mulaw(builtin_hold_tone())
    segments = active_segments(pcm, 8000, threshold_dbfs=-45)
    sound_ms = sum(ms for _, ms in HOLD_TONE_NOTES)
    assert len(segments) == 1 and segments[0][1] - segments[0][0] == pytest.approx(sound_ms, abs=30)
    start = 0
    for hz, ms in HOLD_TONE_NOTES:
        note = pcm[(start + 20) * 8 : (start + ms - 20) * 8]
        assert dominant_frequency(note, 8000) == pytest.approx(hz, abs=5)
        assert level_at(note, 8000, hz) == pytest.approx(HOLD_TONE_DBFS, abs=1.5)
        start += ms


# -- config ------------------------------------------------------------------------------


def test_a_route_picks_fillers_or_hold_audio_and_the_clip_is_checked_at_load(tmp_path: Path) -> None:
    base = echo_line_config("desk", route_extra="[routes.waiting]\n{}")
    assert load_config_text(base.format("")).routes[0].waiting.hold_clip(warm_transfer=False) is None  # fillers
    builtin = load_config_text(base.format('mode = "hold"')).routes[0].waiting
    assert builtin.hold_clip(warm_transfer=False) == builtin_hold_tone()
    not_wav = tmp_path / "hold.mp3"
    not_wav.write_bytes(b"ID3\x04 an mp3")
    problems = {
        f'mode = "hold"\nhold_audio = "{tmp_path / "missing.wav"}"': "cannot read",
        f'mode = "hold"\nhold_audio = "{not_wav}"': "not a linear PCM WAV",
        "hold_after_s = 2": "only applies with mode = 'hold'",
        'mode = "music"': "mode",
    }
    for lines, message in problems.items():
        with pytest.raises(ConfigError) as exc:
            load_config_text(base.format(lines))
        assert message in str(exc.value) and "routes" in str(exc.value)


# -- whole calls -------------------------------------------------------------------------


async def test_hold_audio_starts_after_hold_after_s_and_stops_at_the_tool_answer(hold_wav: Path) -> None:
    async with running_server(hold_config(hold_wav, delay_s=2.5, route="held")) as server:
        async with server.twilio().call() as call:
            bridge = await live_bridge(server, call)
            session = await echo_of(server, call)
            await ask(call)
            await call.wait_for(lambda: bool(session.tool_results), timeout=10)
            await call.wait_for(lambda: len(frames_of(call, BOT_HZ)) * FRAME_MS >= SAY_MS + 560, timeout=8)
            await call.wait_for(lambda: call.queued_ms == 0, timeout=5)
            assert bridge.last_tool_call_at is not None
            called_ms = call_clock_ms(call, bridge.last_tool_call_at)
            answered_ms = call_clock_ms(call, ANSWERED_AT[call.call_sid])
            hold = frames_of(call, HOLD_HZ)
            bot = frames_of(call, BOT_HZ)
            clears = list(call.clear_times)
        samples = await scrape(server.url)

    assert hold, "the caller heard no hold audio"
    hold_start, hold_end = hold[0], hold[-1] + FRAME_MS
    # Not before hold_after_s from the tool call (the "let me check" had played by then)...
    assert hold_start >= called_ms + HOLD_AFTER_MS - FRAME_MS
    assert hold_start <= called_ms + HOLD_AFTER_MS + 600
    assert [t for t in bot if t < hold_start][-1] < called_ms + SAY_MS
    # ...continuous until the tool answered, then cleared at once (the clear is ours).
    assert len(hold) * FRAME_MS >= 0.85 * (hold_end - hold_start)
    assert answered_ms - 2 * FRAME_MS <= hold_end <= answered_ms + 250
    assert any(answered_ms <= c <= answered_ms + 250 for c in clears)
    # The answer after the result (600 ms) was heard whole, with no hold audio under it.
    reply = [t for t in bot if t > hold_end]
    assert len(reply) * FRAME_MS == pytest.approx(600, abs=2 * FRAME_MS)
    assert all(t < reply[0] for t in hold)
    count = "voicebot_hold_duration_seconds_count"
    assert value(samples, count, route="held") == 1
    held_s = value(samples, "voicebot_hold_duration_seconds_sum", route="held")
    assert held_s == pytest.approx((answered_ms - called_ms - HOLD_AFTER_MS) / 1000, abs=0.3)


async def test_a_tool_faster_than_hold_after_s_gets_no_hold_audio(hold_wav: Path) -> None:
    async with running_server(hold_config(hold_wav, delay_s=0.4)) as server, server.twilio().call() as call:
        session = await echo_of(server, call)
        await ask(call)
        await call.wait_for(lambda: bool(session.tool_results), timeout=10)
        await call.wait_for(lambda: len(frames_of(call, BOT_HZ)) * FRAME_MS >= SAY_MS + 560, timeout=8)
        await call.pause(HOLD_AFTER_MS)
        assert frames_of(call, HOLD_HZ) == []
        assert not [e for e in call.log if e.event == "mark" and str(e.detail).startswith("h")]
        assert call.clear_times == []


async def test_caller_speech_stops_the_hold_for_the_rest_of_the_wait_and_truncates_nothing(hold_wav: Path) -> None:
    async with running_server(hold_config(hold_wav, delay_s=4.0)) as server, server.twilio().call() as call:
        session = await echo_of(server, call)
        await ask(call)
        await call.wait_for(lambda: len(frames_of(call, HOLD_HZ)) >= 20, timeout=8)  # 400 ms of hold heard
        spoke_at = call.now_ms()
        await call.say(to_mulaw(tone(450, 400)))  # "hello? are you there?"
        await call.wait_for(lambda: bool(session.tool_results), timeout=10)
        await call.wait_for(lambda: len(frames_of(call, BOT_HZ)) * FRAME_MS >= SAY_MS + 560, timeout=8)
        await call.wait_for(lambda: call.queued_ms == 0, timeout=5)
        hold = frames_of(call, HOLD_HZ)
        cleared = [c for c in call.clear_times if c >= spoke_at]
        truncations = list(session.truncations)

    # Cleared soon after the caller started speaking (their speech is detected within ~0.2 s),
    # and the hold did not come back while the tool still worked (~2.5 s more).
    assert cleared and cleared[0] <= spoke_at + 600
    assert hold[-1] < cleared[0]
    # Nothing of the bot's was playing: nothing to truncate.
    assert truncations == []


async def test_a_barge_in_into_the_answer_after_hold_truncates_by_bot_audio_only(hold_wav: Path) -> None:
    config = hold_config(hold_wav, delay_s=2.2, reply_ms=2000)
    async with running_server(config) as server, server.twilio().call() as call:
        session = await echo_of(server, call)
        await ask(call)
        await call.wait_for(lambda: bool(session.tool_results), timeout=10)
        # The answer (2 s, sent at 20x real time) is queued; the caller hears 600 ms of it...
        await call.wait_for(lambda: len(frames_of(call, BOT_HZ)) * FRAME_MS >= SAY_MS + 600, timeout=8)
        await call.say(to_mulaw(tone(450, 300)))  # ...and talks over it
        await call.wait_for(lambda: bool(session.truncations), timeout=5)
        hold = frames_of(call, HOLD_HZ)
        answer = [t for t in frames_of(call, BOT_HZ) if t > hold[-1]]
        clear_at = max(call.clear_times)
        [(item, heard_ms)] = session.truncations

    assert item.startswith("echo-reply-")
    # What the caller heard of the answer: from its first frame to the clear. The second of
    # hold audio before it counts for nothing.
    assert heard_ms == pytest.approx(clear_at - answer[0], abs=3 * FRAME_MS)
    assert len(hold) * FRAME_MS >= 800 and heard_ms < 1500


async def test_bot_audio_during_a_hold_pauses_it_and_the_hold_resumes_after(hold_wav: Path) -> None:
    # While the first lookup works (4 s), the caller keys in a second question: the model says
    # its "let me check" (900 Hz) over the hold, and calls the tool again.
    second = ', { on_text = "entered 7", name = "lookup", arguments = { delay_s = 3.0 }, say_ms = 400, tone_hz = 900 }'
    config = hold_config(hold_wav, delay_s=4.0, more_cues=second)
    async with running_server(config) as server, server.twilio().call() as call:
        session = await echo_of(server, call)
        await ask(call)
        await call.wait_for(lambda: len(frames_of(call, HOLD_HZ)) >= 20, timeout=8)
        await ask(call, "7")
        await call.wait_for(lambda: len(frames_of(call, 900.0)) * FRAME_MS >= 360, timeout=8)
        await call.wait_for(lambda: len(session.tool_results) == 2, timeout=10)
        await call.wait_for(lambda: call.queued_ms == 0, timeout=5)
        hold = frames_of(call, HOLD_HZ)
        interjection = frames_of(call, 900.0)
        # Bot audio goes out in 40 ms media messages, hold audio in 20 ms ones.
        bot_sent = [e.t_ms for e in call.log if e.event == "media" and e.direction == "out" and e.detail == 320]

    start, end = interjection[0], interjection[-1] + FRAME_MS
    # The hold audio queued at Twilio was cleared for it: it played as soon as it arrived.
    arrived = next(t for t in bot_sent if t > hold[0])
    assert start - arrived <= 3 * FRAME_MS
    assert end - start == pytest.approx(400, abs=2 * FRAME_MS)  # heard whole, nothing of it cleared
    before = [t for t in hold if t < start]
    after = [t for t in hold if t >= end]
    assert before and start - (before[-1] + FRAME_MS) <= 2 * FRAME_MS  # hold right up to the bot's audio
    assert not [t for t in hold if start <= t < end]  # none under it
    assert after and after[0] - end <= 400  # and back once it had played
