"""``tts = { type = "espeak" }``: local speech synthesis with espeak-ng, no network, no keys.

espeak-ng (Debian package ``espeak-ng``) runs once per sentence; the text goes in on stdin
(never as an argument, so a sentence starting with "-" cannot become an option) and a WAV
comes out on stdout at the voice's rate (22050 Hz). It is resampled here, once per sentence,
straight to the line's 8 kHz mu-law, so the bridge passes it through untouched. Stopping an
answer kills the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import struct
from collections.abc import AsyncGenerator
from math import gcd
from typing import Literal

import numpy as np
from pydantic import Field
from scipy.signal import resample_poly

from s2s.cascade.parts import PartConfig, PartError, PartSpec, TextToSpeech
from s2s.provider import SessionContext
from transcoding.formats import MULAW_8K
from transcoding.mulaw import pcm16_to_mulaw


class EspeakConfig(PartConfig):
    type: Literal["espeak"] = "espeak"
    voice: str = Field(default="en-us", description="espeak-ng voice (-v), e.g. en-us, en-gb, en-us+f3")
    words_per_minute: int = Field(default=165, ge=80, le=450)
    pitch: int = Field(default=50, ge=0, le=99)
    chunk_ms: int = Field(default=100, ge=20, description="size of the audio chunks handed to the call")
    executable: str = "espeak-ng"


def wav_pcm16(wav: bytes) -> tuple[bytes, int]:
    """The samples and rate of a mono 16-bit WAV. espeak-ng writing to a pipe cannot seek back
    to fill in sizes, so the data chunk runs to the end whatever its header says."""
    if wav[:4] != b"RIFF" or wav[8:12] != b"WAVE":
        raise ValueError("not a WAV stream")
    pos, rate = 12, 0
    while pos + 8 <= len(wav):
        chunk_id, size = wav[pos : pos + 4], struct.unpack_from("<I", wav, pos + 4)[0]
        if chunk_id == b"fmt ":
            channels, rate, _, _, bits = struct.unpack_from("<HIIHH", wav, pos + 10)
            if channels != 1 or bits != 16:
                raise ValueError(f"expected mono 16-bit audio, got {channels} channel(s) of {bits} bits")
        elif chunk_id == b"data":
            data = wav[pos + 8 :]
            return data[: len(data) // 2 * 2], rate
        pos += 8 + size
    raise ValueError("WAV stream without a data chunk")


def to_line_audio(pcm: bytes, rate: int) -> bytes:
    """PCM16 at ``rate`` -> 8 kHz mu-law (polyphase resampling of the whole sentence)."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    if rate != MULAW_8K.sample_rate:
        g = gcd(MULAW_8K.sample_rate, rate)
        samples = resample_poly(samples, MULAW_8K.sample_rate // g, rate // g)
    return pcm16_to_mulaw(np.clip(np.round(samples), -32768, 32767).astype("<i2").tobytes())


class EspeakSpeech(TextToSpeech):
    output_format = MULAW_8K

    def __init__(self, config: EspeakConfig, executable: str) -> None:
        self.config = config
        self._executable = executable

    async def speak(self, text: str) -> AsyncGenerator[bytes, None]:
        process = await asyncio.create_subprocess_exec(
            self._executable,
            "--stdin",
            "--stdout",
            "-v",
            self.config.voice,
            "-s",
            str(self.config.words_per_minute),
            "-p",
            str(self.config.pitch),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            wav, err = await process.communicate(text.encode())
        finally:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if process.returncode != 0:
            raise PartError(f"espeak-ng exited with {process.returncode}: {err.decode(errors='replace').strip()}")
        audio = to_line_audio(*wav_pcm16(wav))
        step = self.output_format.nbytes(self.config.chunk_ms)
        for start in range(0, len(audio), step):
            yield audio[start : start + step]


class EspeakOpener:
    def __init__(self, config: EspeakConfig) -> None:
        self.config = config

    async def open(self, ctx: SessionContext) -> EspeakSpeech:
        executable = shutil.which(self.config.executable)
        if executable is None:
            raise PartError(
                f"{self.config.executable} not found; install the espeak-ng package (apt-get install espeak-ng)",
                retryable=False,
            )
        return EspeakSpeech(self.config, executable)


PART = PartSpec("tts", EspeakConfig, EspeakOpener)
