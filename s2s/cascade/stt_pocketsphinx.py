"""``stt = { type = "pocketsphinx" }``: local speech recognition, no network, no keys.

The ``pocketsphinx`` package (PyPI) ships a US English acoustic model, language model and
dictionary. Its endpointer (a WebRTC-style voice activity detector over a sliding window)
runs on the event loop, frame by frame, because it is cheap and speech-started must reach
the bridge at once (barge-in). The decoder is CPU-heavy (0.5-2x real time on the loaded
2-core development machine) and runs in a worker thread on each whole utterance once the
endpointer has heard its end, which puts the decode time into the answer's latency.

The model expects 16 kHz audio; the bridge resamples the line's 8 kHz to that. Telephone
audio carries nothing above 4 kHz, so recognition is weaker than on wide-band speech: good
enough to hear key words, not a substitute for a cloud recogniser.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator
from typing import Any, Literal

from pydantic import Field

from s2s.cascade.parts import PartConfig, PartError, PartSpec, SpeechToText, SttEvent
from s2s.events import SpeechStarted, SpeechStopped, Transcript
from s2s.provider import SessionContext
from transcoding.formats import PCM16_16K

log = logging.getLogger(__name__)

VAD_MODES = {"loose": 0, "medium_loose": 1, "medium_strict": 2, "strict": 3}


class PocketsphinxConfig(PartConfig):
    type: Literal["pocketsphinx"] = "pocketsphinx"
    vad_mode: Literal["loose", "medium_loose", "medium_strict", "strict"] = Field(
        default="medium_loose", description="how readily a frame counts as speech"
    )
    window_s: float = Field(default=0.3, gt=0.05, le=2.0, description="endpointer window; also the end-of-turn pause")
    ratio: float = Field(default=0.9, gt=0.0, lt=1.0, description="share of the window that must agree to switch")
    # Any pocketsphinx decoder option (hmm, lm, dict, kws, ...), e.g. another language's model.
    decoder: dict[str, Any] = Field(default_factory=dict, description="extra pocketsphinx.Decoder options")


class PocketsphinxRecognizer(SpeechToText):
    input_format = PCM16_16K

    def __init__(self, decoder: Any, endpointer: Any, preroll_s: float) -> None:
        self._decoder = decoder
        self._endpointer = endpointer
        self._frame_bytes: int = endpointer.frame_bytes
        self._preroll: deque[bytes] = deque(maxlen=max(1, round(preroll_s / endpointer.frame_length)))
        self._partial = b""
        self._events: asyncio.Queue[SttEvent | None] = asyncio.Queue()
        self._utterance: list[bytes] = []
        self._utterances: asyncio.Queue[bytes] = asyncio.Queue()
        self._failure: Exception | None = None
        self._worker = asyncio.ensure_future(self._decode())
        self._closed = False

    async def send_audio(self, audio: bytes) -> None:
        if self._closed:
            return
        data = self._partial + audio
        end = len(data) - len(data) % self._frame_bytes
        self._partial = data[end:]
        for start in range(0, end, self._frame_bytes):
            frame = data[start : start + self._frame_bytes]
            was_speaking = self._endpointer.in_speech
            self._endpointer.process(frame)
            if self._endpointer.in_speech and not was_speaking:
                self._events.put_nowait(SpeechStarted())
                # The endpointer decides a window after speech began; the utterance starts
                # with the audio from before that, or its first syllables would be lost.
                self._utterance = list(self._preroll)
            if self._endpointer.in_speech or was_speaking:
                self._utterance.append(frame)
            else:
                self._preroll.append(frame)
            if was_speaking and not self._endpointer.in_speech:
                self._events.put_nowait(SpeechStopped())
                self._utterances.put_nowait(b"".join(self._utterance))
                self._utterance = []

    async def _decode(self) -> None:
        try:
            while True:
                utterance = await self._utterances.get()
                text = await asyncio.to_thread(self._recognise, utterance)
                self._events.put_nowait(Transcript("caller", text))
        except Exception as exc:  # the recogniser is lost: events() raises it
            self._failure = exc
            self._events.put_nowait(None)

    def _recognise(self, utterance: bytes) -> str:
        # The whole utterance at once (full_utt): cepstral mean normalisation is then computed
        # over it, instead of live from a start value that suits telephone audio badly (the
        # first turns of a call were mostly misheard that way).
        self._decoder.start_utt()
        self._decoder.process_raw(utterance, full_utt=True)
        self._decoder.end_utt()
        hypothesis = self._decoder.hyp()
        return hypothesis.hypstr if hypothesis is not None else ""

    async def events(self) -> AsyncIterator[SttEvent]:
        while (event := await self._events.get()) is not None:
            yield event
        if self._failure is not None:
            raise PartError(f"pocketsphinx decoder failed: {self._failure!r}")

    async def close(self) -> None:
        self._closed = True
        self._worker.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._worker
        self._events.put_nowait(None)


class PocketsphinxOpener:
    def __init__(self, config: PocketsphinxConfig) -> None:
        self.config = config

    async def open(self, ctx: SessionContext) -> PocketsphinxRecognizer:
        try:
            # Loading the model reads ~40 MB and takes ~0.3 s: not on the event loop.
            decoder, endpointer = await asyncio.to_thread(self._load)
        except ImportError as exc:
            raise PartError(f"pocketsphinx is not installed: {exc}", retryable=False) from exc
        except (RuntimeError, ValueError) as exc:
            raise PartError(f"pocketsphinx could not start: {exc}", retryable=False) from exc
        return PocketsphinxRecognizer(decoder, endpointer, preroll_s=self.config.window_s + 0.2)

    def _load(self) -> tuple[Any, Any]:
        from pocketsphinx import Decoder, Endpointer

        options = {"samprate": PCM16_16K.sample_rate, "loglevel": "FATAL", **self.config.decoder}
        endpointer = Endpointer(
            window=self.config.window_s,
            ratio=self.config.ratio,
            vad_mode=VAD_MODES[self.config.vad_mode],
            sample_rate=PCM16_16K.sample_rate,
        )
        return Decoder(**options), endpointer


PART = PartSpec("stt", PocketsphinxConfig, PocketsphinxOpener)
