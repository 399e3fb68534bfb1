"""``stt = { type = "pocketsphinx" }``: local speech recognition, no network, no keys.

The ``pocketsphinx`` package (PyPI) ships a US English acoustic model, language model and
dictionary. Its endpointer (a WebRTC-style voice activity detector over a sliding window)
runs on the event loop, frame by frame, because it is cheap and speech-started must reach
the bridge at once (barge-in); the decoder is CPU-heavy (about half of real time on one core
of the development machine), so it runs in a worker thread, fed as speech arrives, and only
``end_utt`` is left for the end of the turn.

The model expects 16 kHz audio; the bridge resamples the line's 8 kHz to that. Telephone
audio carries nothing above 4 kHz, so recognition is weaker than on wide-band speech: good
enough to hear key words, not a substitute for a cloud recogniser.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
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

    def __init__(self, decoder: Any, endpointer: Any) -> None:
        self._decoder = decoder
        self._endpointer = endpointer
        self._frame_bytes: int = endpointer.frame_bytes
        self._partial = b""
        self._events: asyncio.Queue[SttEvent | None] = asyncio.Queue()
        # Decoder work in order: speech frames, then None to end the utterance.
        self._work: asyncio.Queue[bytes | None] = asyncio.Queue()
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
            was_speaking = self._endpointer.in_speech
            speech = self._endpointer.process(data[start : start + self._frame_bytes])
            if speech is None:
                continue
            if not was_speaking:
                self._events.put_nowait(SpeechStarted())
            self._work.put_nowait(speech)
            if not self._endpointer.in_speech:
                self._events.put_nowait(SpeechStopped())
                self._work.put_nowait(None)

    async def _decode(self) -> None:
        try:
            await self._decode_utterances()
        except Exception as exc:  # the recogniser is lost: events() raises it
            self._failure = exc
            self._events.put_nowait(None)

    async def _decode_utterances(self) -> None:
        started = False
        while True:
            item: bytes | None = await self._work.get()
            batch: list[bytes] = []
            while item is not None:  # take whatever speech is queued, up to an utterance end
                batch.append(item)
                if self._work.empty():
                    break
                item = self._work.get_nowait()
            if batch:
                if not started:
                    await asyncio.to_thread(self._decoder.start_utt)
                    started = True
                await asyncio.to_thread(self._decoder.process_raw, b"".join(batch))
            if item is None and started:
                text = await asyncio.to_thread(self._end_utterance)
                started = False
                self._events.put_nowait(Transcript("caller", text))

    def _end_utterance(self) -> str:
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
        return PocketsphinxRecognizer(decoder, endpointer)

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
