"""WAV in and out for the developer tools: any WAV to the phone line's 8 kHz mu-law, and a
call's two tracks to a stereo WAV (caller left, bot right, as the caller heard it)."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import numpy.typing as npt
from scipy.io import wavfile

from transcoding.formats import MULAW_8K
from transcoding.mulaw import alaw_to_pcm16, mulaw_to_pcm16, pcm16_to_mulaw
from transcoding.resample import make_resampler


def _to_int16(samples: npt.NDArray[np.generic]) -> npt.NDArray[np.int16]:
    if samples.dtype == np.int16:
        return samples.astype(np.int16)
    if samples.dtype == np.uint8:  # 8-bit WAV is unsigned, centred on 128
        return ((samples.astype(np.int32) - 128) << 8).astype(np.int16)
    if samples.dtype == np.int32:  # 24-bit WAVs come back as int32 too
        return (samples.astype(np.int64) >> 16).astype(np.int16)
    if np.issubdtype(samples.dtype, np.floating):
        return (np.clip(samples.astype(np.float64), -1.0, 1.0) * 32767).astype(np.int16)
    raise ValueError(f"unsupported WAV sample type {samples.dtype}")


# WAVE format tags of G.711 audio (RFC 2361): scipy reads only PCM and float WAVs.
WAVE_FORMAT_ALAW = 6
WAVE_FORMAT_MULAW = 7
WAVE_FORMAT_EXTENSIBLE = 0xFFFE


def _g711_wav(data: bytes) -> tuple[int, npt.NDArray[np.int16]] | None:
    """(rate, samples) of a mu-law or A-law WAV (plain or WAVE_FORMAT_EXTENSIBLE), else None."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    pos, tag, channels, rate, payload = 12, 0, 1, 0, b""
    while pos + 8 <= len(data):
        kind, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        body = data[pos + 8 : pos + 8 + size]
        if kind == b"fmt " and len(body) >= 16:
            tag, channels, rate = struct.unpack("<HHI", body[:8])
            if tag == WAVE_FORMAT_EXTENSIBLE and len(body) >= 26:
                tag = struct.unpack("<H", body[24:26])[0]  # the sub-format GUID starts with the tag
        elif kind == b"data":
            payload = body
        pos += 8 + size + (size & 1)
    if tag not in (WAVE_FORMAT_ALAW, WAVE_FORMAT_MULAW) or rate <= 0 or channels <= 0:
        return None
    pcm = mulaw_to_pcm16(payload) if tag == WAVE_FORMAT_MULAW else alaw_to_pcm16(payload)
    samples = np.frombuffer(pcm, dtype="<i2")
    samples = samples[: len(samples) // channels * channels]
    return rate, samples.reshape(-1, channels) if channels > 1 else samples


def wav_to_mulaw(source: str | Path | bytes) -> bytes:
    """Read a WAV (a file, or its bytes) of any rate, channel count and sample type (PCM,
    float, mu-law, A-law) as 8 kHz mono mu-law, through the same streaming resampler the call
    path uses."""
    content = source if isinstance(source, bytes) else Path(source).read_bytes()
    g711 = _g711_wav(content)
    rate, data = g711 if g711 is not None else wavfile.read(io.BytesIO(content))
    samples = np.asarray(data)
    if samples.ndim == 2:  # mix down: average the channels in float to avoid clipping
        samples = samples.astype(np.float64).mean(axis=1).astype(samples.dtype)
    pcm = _to_int16(samples).astype("<i2").tobytes()
    if rate != MULAW_8K.sample_rate:
        resampler = make_resampler(int(rate), MULAW_8K.sample_rate)
        pcm = resampler.process(pcm) + resampler.flush()
    return pcm16_to_mulaw(pcm)


def _stereo(caller_mulaw: bytes, bot_mulaw: bytes) -> npt.NDArray[np.int16]:
    left = np.frombuffer(mulaw_to_pcm16(caller_mulaw), dtype="<i2")
    right = np.frombuffer(mulaw_to_pcm16(bot_mulaw), dtype="<i2")
    stereo = np.zeros((max(left.size, right.size), 2), dtype=np.int16)
    stereo[: left.size, 0] = left
    stereo[: right.size, 1] = right
    return stereo


def call_wav_bytes(caller_mulaw: bytes, bot_mulaw: bytes) -> bytes:
    """Stereo 8 kHz PCM16 WAV file contents: caller left, bot right."""
    out = io.BytesIO()
    wavfile.write(out, MULAW_8K.sample_rate, _stereo(caller_mulaw, bot_mulaw))
    return out.getvalue()


def write_call_wav(path: str | Path, caller_mulaw: bytes, bot_mulaw: bytes) -> float:
    """Stereo 8 kHz PCM16: caller left, bot right. Returns the duration in seconds."""
    stereo = _stereo(caller_mulaw, bot_mulaw)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    wavfile.write(str(path), MULAW_8K.sample_rate, stereo)
    return len(stereo) / MULAW_8K.sample_rate


def write_tape_wav(tape_path: str | Path, path: str | Path) -> float:
    """The call on a tape as a stereo WAV (caller left, bot right as the caller heard it);
    ``voicebot tape view --wav`` and the uploads of ``[recording] upload_wav``. Raises
    :class:`~voicebot.devtools.tape.format.TapeError` for a tape that cannot be read."""
    from voicebot.devtools.tape.format import read_tape
    from voicebot.devtools.tape.view import view_of

    view = view_of(read_tape(tape_path))
    return write_call_wav(path, view.caller_audio, view.heard_audio)
