"""``voicebot dial``: a simulated caller against a running server. Any WAV is converted to the
phone line's format, the bot's answer is heard and saved, and ``--record`` writes a
caller-side tape that replays to the same result (the README's three-command loop)."""

from __future__ import annotations

import asyncio
import shutil
import struct
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from scipy.io import wavfile

from tests.support.audio import active_segments, dominant_frequency, from_mulaw, rms_dbfs
from tests.support.server import AUTH_TOKEN, running_server
from voicebot.cli import main
from voicebot.config import load_config_text
from voicebot.devtools.dial import dial, espeak_utterance, split_utterances, tone_utterance
from voicebot.devtools.tape.format import read_tape
from voicebot.devtools.tape.replay import replay_call
from voicebot.devtools.tape.wav import wav_to_mulaw


def sine(freq: float, seconds: float, rate: int) -> npt.NDArray[np.float64]:
    return 0.3 * np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)


@pytest.mark.parametrize(
    ("rate", "layout"),
    [(44100, "stereo-float32"), (16000, "mono-int16"), (22050, "mono-uint8"), (8000, "mono-int16")],
)
def test_any_wav_becomes_8khz_mulaw_of_the_same_length_and_pitch(tmp_path: Path, rate: int, layout: str) -> None:
    x = sine(700, 0.5, rate)
    if layout == "stereo-float32":
        data: npt.NDArray[np.generic] = np.stack([x, x], axis=1).astype(np.float32)
    elif layout == "mono-uint8":
        data = (x * 127 + 128).astype(np.uint8)
    else:
        data = (x * 32767).astype(np.int16)
    path = tmp_path / "in.wav"
    wavfile.write(path, rate, data)
    pcm = from_mulaw(wav_to_mulaw(path))
    assert pcm.size == pytest.approx(4000, abs=2)
    assert dominant_frequency(pcm[400:-400], 8000) == pytest.approx(700, abs=5)
    assert rms_dbfs(pcm) == pytest.approx(20 * np.log10(0.3 / np.sqrt(2)), abs=1.0)


def test_without_a_wav_the_utterance_is_espeak_or_a_loud_tone_pattern() -> None:
    spoken = espeak_utterance()
    assert (spoken is None) == (shutil.which("espeak-ng") is None)
    pattern = from_mulaw(tone_utterance())
    assert 600 < pattern.size / 8 < 1500
    assert len(active_segments(pattern, 8000, threshold_dbfs=-30)) == 3  # three 'syllables'


async def test_dial_hears_the_bot_saves_both_sides_and_records_a_replayable_tape(tmp_path: Path) -> None:
    x = sine(600, 0.8, 44100)
    wav = tmp_path / "hello.wav"
    wavfile.write(wav, 44100, np.stack([x, x], axis=1).astype(np.float32))
    tape_path = tmp_path / "call.jsonl"
    async with running_server() as server:
        result = await dial(server.url, wav_to_mulaw(wav), auth_token=AUTH_TOKEN, record=tape_path, quiet_s=0.8)

    assert result.outcome == "caller-hangup" and result.bot_audio_ms == pytest.approx(800, abs=40)
    heard = from_mulaw(result.heard_audio)
    (start, end), *_ = active_segments(heard, 8000, threshold_dbfs=-35)
    assert end - start == pytest.approx(800, abs=40)
    assert dominant_frequency(heard[int(start * 8) + 160 : int(end * 8) - 160], 8000) == pytest.approx(600, abs=5)

    tape = await asyncio.to_thread(read_tape, tape_path)
    assert tape.header.side == "caller" and tape.complete and not tape.has_provider_side()
    assert tape.end is not None and tape.end.outcome == "caller-hangup"
    text = await asyncio.to_thread(tape_path.read_text)
    assert AUTH_TOKEN not in text and '"token":"[redacted]"' in text

    # Step 3 of the README loop: replay the tape the dial wrote, against the same echo line.
    echo = load_config_text(
        '[providers.parrot]\ntype = "echo"\n[[routes]]\nname = "d"\nproviders = ["parrot"]\n'
        "[twilio]\nvalidate_signatures = false\n"
    )
    replayed = await replay_call(tape_path, live=echo)
    assert replayed.ok, replayed.report()
    assert [round(t.sent_ms) for t in replayed.turns] == [800]


async def test_dial_command_writes_the_stereo_wav(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.wav"
    async with running_server() as server:
        args = ["dial", server.url, "--out", str(out), "--auth-token", AUTH_TOKEN]
        assert await asyncio.to_thread(main, args) == 0
    printed = capsys.readouterr().out
    assert "caller-hangup" in printed and "wrote" in printed
    rate, data = await asyncio.to_thread(wavfile.read, out)
    assert rate == 8000 and data.shape[1] == 2
    caller_segments = active_segments(data[:, 0], 8000, threshold_dbfs=-30)
    bot_segments = active_segments(data[:, 1], 8000, threshold_dbfs=-30)
    assert caller_segments and bot_segments and bot_segments[0][0] > caller_segments[-1][1]


async def test_dial_reports_a_server_that_will_not_answer(capsys: pytest.CaptureFixture[str]) -> None:
    code = await asyncio.to_thread(main, ["dial", "http://127.0.0.1:9", "--max-seconds", "5", "--connect-wait", "0.5"])
    assert code == 1 and "cannot reach http://127.0.0.1:9" in capsys.readouterr().err


def g711_wav(path: Path, samples: npt.NDArray[np.int16], rate: int, tag: int, extensible: bool = False) -> None:
    """A G.711 WAV as telephony tools write them (format tag 7 mu-law / 6 A-law, 8 bits)."""
    channels = samples.shape[1] if samples.ndim == 2 else 1
    pcm = samples.astype("<i2").tobytes()
    payload = audioop_encode(pcm, tag)
    if extensible:
        guid = struct.pack("<H", tag) + bytes.fromhex("000000001000800000aa00389b71")
        fmt = struct.pack("<HHIIHHHHI", 0xFFFE, channels, rate, rate * channels, channels, 8, 22, 8, 0) + guid
    else:
        fmt = struct.pack("<HHIIHHH", tag, channels, rate, rate * channels, channels, 8, 0)
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(payload)) + payload
    path.write_bytes(b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks)


def audioop_encode(pcm: bytes, tag: int) -> bytes:
    from transcoding import mulaw

    return mulaw.audioop.lin2ulaw(pcm, 2) if tag == 7 else mulaw.audioop.lin2alaw(pcm, 2)


@pytest.mark.parametrize(
    ("tag", "rate", "channels", "extensible"),
    [(7, 8000, 1, False), (6, 8000, 1, False), (7, 16000, 2, False), (6, 8000, 1, True)],
    ids=["mulaw-8k", "alaw-8k", "mulaw-16k-stereo", "alaw-extensible"],
)
def test_g711_wavs_are_read(tmp_path: Path, tag: int, rate: int, channels: int, extensible: bool) -> None:
    x = (sine(700, 0.5, rate) * 32767).astype(np.int16)
    samples = np.stack([x] * channels, axis=1) if channels > 1 else x
    path = tmp_path / "g711.wav"
    g711_wav(path, samples, rate, tag, extensible)
    pcm = from_mulaw(wav_to_mulaw(path))
    assert pcm.size == pytest.approx(4000, abs=2)
    assert dominant_frequency(pcm[400:-400], 8000) == pytest.approx(700, abs=5)
    assert rms_dbfs(pcm) == pytest.approx(20 * np.log10(0.3 / np.sqrt(2)), abs=1.0)


def test_the_caller_audio_splits_into_utterances_at_its_pauses() -> None:
    def tone_ms(freq: float, ms: int) -> npt.NDArray[np.float64]:
        return sine(freq, ms / 1000, 8000)

    gap = np.zeros(8 * 1000)
    short_gap = np.zeros(8 * 200)  # a breath inside an utterance
    audio = np.concatenate([tone_ms(500, 400), short_gap, tone_ms(500, 300), gap, tone_ms(700, 500), gap])
    mulaw = to_mulaw_array(audio)
    pieces = split_utterances(mulaw)
    assert len(pieces) == 2
    freqs = [dominant_frequency(from_mulaw(p), 8000) for p in pieces]
    assert freqs == [pytest.approx(500, abs=10), pytest.approx(700, abs=10)]


def to_mulaw_array(x: npt.NDArray[np.float64]) -> bytes:
    from transcoding.mulaw import pcm16_to_mulaw

    return pcm16_to_mulaw((x * 32767).astype("<i2").tobytes())


async def test_dial_waits_for_the_answer_to_every_utterance(tmp_path: Path) -> None:
    """Three utterances, each answered by the echo line, the last one too (dial used to hang
    up when the WAV ended, losing the last answer)."""
    gap = np.zeros(8 * 900)
    audio = np.concatenate([sine(450, 0.5, 8000), gap, sine(650, 0.5, 8000), gap, sine(850, 0.5, 8000)])
    async with running_server() as server:
        result = await dial(server.url, to_mulaw_array(audio), auth_token=AUTH_TOKEN, quiet_s=0.8)
    assert (result.utterances, result.answered) == (3, 3)
    heard = from_mulaw(result.heard_audio)
    segments = active_segments(heard, 8000, threshold_dbfs=-35)
    answers = [dominant_frequency(heard[int(a * 8) + 80 : int(b * 8) - 80], 8000) for a, b in segments]
    assert answers == [pytest.approx(450, abs=10), pytest.approx(650, abs=10), pytest.approx(850, abs=10)]
    # Each answer played out before the caller spoke again: no barge-in, nothing cleared.
    assert result.clears == 0
    caller = active_segments(from_mulaw(result.caller_audio), 8000, threshold_dbfs=-35)
    assert len(caller) == 3
    for (_, answer_end), (next_start, _) in zip(segments, caller[1:], strict=False):
        assert next_start > answer_end
