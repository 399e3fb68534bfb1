"""The echo line's session: the engine (:mod:`s2s.echo.engine`, sans I/O) behind a
:class:`~s2s.provider.QueuedSession` that speaks its replies in chunks, faster than real
time, as cloud providers do; and the scripted utterances (greeting, tool cues)."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque

import numpy as np

from s2s.echo.config import EchoConfig, EchoToolCue
from s2s.echo.engine import EchoEngine, VadSettings
from s2s.events import AudioOut, SessionExpiring, ToolCall, Transcript, TurnDone
from s2s.provider import Provider, ProviderSession, QueuedSession, SessionContext
from transcoding.formats import AudioFormat
from transcoding.mulaw import pcm16_to_mulaw

log = logging.getLogger(__name__)

GREETING_TONES: tuple[tuple[float, int], ...] = ((660.0, 150), (880.0, 150), (990.0, 200))
"""The echo line's greeting: (frequency Hz, duration ms) in order."""


def tone_audio(fmt: AudioFormat, parts: tuple[tuple[float, int], ...], dbfs: float = -12.0) -> bytes:
    """Sine tones back to back, in ``fmt``."""
    amplitude = 32767 * 10 ** (dbfs / 20)
    pcm = np.concatenate(
        [
            amplitude * np.sin(2 * np.pi * hz * np.arange(fmt.sample_rate * ms // 1000) / fmt.sample_rate)
            for hz, ms in parts
        ]
    )
    data = pcm.astype("<i2").tobytes()
    return pcm16_to_mulaw(data) if fmt.encoding == "mulaw" else data


class EchoSession(QueuedSession):
    def __init__(self, config: EchoConfig, ctx: SessionContext) -> None:
        super().__init__("echo")
        fmt = AudioFormat(config.encoding, config.sample_rate)
        self.input_format = self.output_format = fmt
        self.config = config
        self.ctx = ctx
        self.engine = EchoEngine(
            fmt,
            VadSettings(config.vad_threshold_dbfs, config.vad_start_ms, config.vad_silence_ms, kind=config.vad),
        )
        self.received_text: list[str] = []
        self.tool_results: list[tuple[str, str]] = []
        self.truncations: list[tuple[str, int]] = []
        # Scripted utterances (greeting, cue tones) go before echoes: (item, audio, then call).
        self._script: deque[tuple[str, bytes, ToolCall | None]] = deque()
        self._ids = itertools.count(1)
        self._cue_of_call: dict[str, EchoToolCue] = {}
        self._wake = asyncio.Event()
        if ctx.greeting and not ctx.history:
            self._say("echo-greeting", tone_audio(fmt, GREETING_TONES))
        self.start_reader(self._speak())
        if config.expire_after_s is not None:
            asyncio.get_running_loop().call_later(
                config.expire_after_s, lambda: self.emit(SessionExpiring("echo test limit", seconds_left=30.0))
            )

    def _say(self, item_id: str, audio: bytes, then: ToolCall | None = None) -> None:
        self._script.append((item_id, audio, then))
        self._wake.set()

    async def send_audio(self, audio: bytes) -> None:
        if self.closed:
            return
        for event in self.engine.feed(audio):
            self.emit(event)
        if self.engine.has_reply:
            self._wake.set()

    async def send_text(self, text: str) -> None:
        # The echo line has no language model: it records text so tests can see what reached it.
        self.received_text.append(text)
        for cue in self.config.tool_cues:
            if cue.on_text in text:
                n = next(self._ids)
                call = ToolCall(f"echo-call-{n}", cue.name, dict(cue.arguments))
                self._cue_of_call[call.call_id] = cue
                self._say(f"echo-say-{n}", tone_audio(self.output_format, ((cue.tone_hz, cue.say_ms),)), call)

    async def truncate(self, item_id: str, heard_ms: int) -> None:
        self.truncations.append((item_id, heard_ms))
        log.info("echo: caller heard %d ms of %s", heard_ms, item_id)

    async def send_tool_result(self, call_id: str, output: str) -> None:
        self.tool_results.append((call_id, output))
        cue = self._cue_of_call.pop(call_id, None)
        if cue is not None and cue.reply_ms:
            audio = tone_audio(self.output_format, ((cue.tone_hz, cue.reply_ms),))
            self._say(f"echo-reply-{next(self._ids)}", audio)

    async def _speak(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._script:
                item_id, audio, then = self._script.popleft()
                if audio:
                    self.engine.replying_item = item_id  # so the caller can talk over it too
                    await self._play(item_id, audio)
                if then is not None:
                    self.emit(then)
            while (reply := self.engine.take_reply()) is not None:
                if self.config.transcribe:
                    self._transcribe(*reply)
                await asyncio.sleep(self.config.reply_delay_ms / 1000.0)
                await self._play(*reply)

    async def _play(self, item_id: str, audio: bytes) -> None:
        chunk_bytes = self.output_format.nbytes(self.config.chunk_ms)
        pace_s = self.config.chunk_ms / 1000.0 / self.config.speed
        for start in range(0, len(audio), chunk_bytes):
            if self.engine.replying_item != item_id:
                break  # the caller talked over it: the engine already said TurnDone
            self.emit(AudioOut(audio[start : start + chunk_bytes], item_id))
            await asyncio.sleep(pace_s)
        if self.engine.reply_finished(item_id):
            self.emit(TurnDone(item_id))

    def _transcribe(self, item_id: str, audio: bytes) -> None:
        spoken_ms = round(self.input_format.duration_ms(len(audio)))
        self.emit(Transcript("caller", f"{spoken_ms} ms of speech"))
        self.emit(Transcript("bot", f"echo of {spoken_ms} ms", item_id=item_id))

    async def _close_transport(self) -> None:
        self.engine.close()


class EchoProvider(Provider):
    config: EchoConfig

    async def open_session(self, ctx: SessionContext) -> ProviderSession:
        return EchoSession(self.config, ctx)
