"""``type = "echo"``: a real local S2S line with no network.

After the caller pauses it speaks the caller's utterance back, sending audio faster than
real time in chunks as cloud providers do, and raises speech-started when the caller
talks over it, so barge-in, marks and truncation are exercised end to end. Its audio format
is configurable so the transcoding paths can be exercised too.

It has no TTS, so it "speaks" in tones. A greeting (``SessionContext.greeting``) is a short
rising three-tone chime (:data:`GREETING_TONES`) sent before anything else, like a provider
speaking first. For tests of tools it can call a tool on cue (``tool_cues``): when
caller-side text containing ``on_text`` arrives (keypad input, a note), it says a tone of
``say_ms`` (the model's "one moment" / "goodbye"), then emits the ``ToolCall``; after the
result it may say another tone of ``reply_ms``. Texts and tool results it receives are kept
in ``received_text`` / ``tool_results`` so tests can see what reached the "model".
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from s2s.echo.engine import EchoEngine, VadSettings
from s2s.events import AudioOut, SessionExpiring, ToolCall, Transcript, TurnDone
from s2s.provider import Provider, ProviderConfig, ProviderSession, QueuedSession, SessionContext
from s2s.registry import ProviderSpec
from transcoding.formats import AudioFormat
from transcoding.mulaw import pcm16_to_mulaw
from transcoding.voice_activity import NEURAL_RATES, VadKind

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


class EchoToolCue(BaseModel):
    """Test-oriented: on caller-side text containing ``on_text``, say a tone, then call a tool."""

    model_config = ConfigDict(extra="forbid")

    on_text: str = Field(min_length=1)
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    say_ms: int = Field(default=0, ge=0, description="tone spoken before the tool call")
    reply_ms: int = Field(default=0, ge=0, description="tone spoken after the tool result arrives")
    tone_hz: float = Field(default=700.0, gt=0, lt=4000)


class EchoConfig(ProviderConfig):
    type: Literal["echo"] = "echo"
    encoding: Literal["mulaw", "pcm16"] = "mulaw"
    sample_rate: Literal[8000, 16000, 24000] = 8000
    vad_threshold_dbfs: float = Field(default=-38.0, le=0)
    vad_start_ms: int = Field(default=60, ge=20)
    vad_silence_ms: int = Field(default=500, ge=100)
    vad: VadKind = Field(
        default="energy",
        description="what counts as speech above vad_threshold_dbfs: the level alone, or also a voice-activity "
        "model ('silero', 'webrtc'; 8 or 16 kHz only; pip install 'voicebot[vad]', else energy is used)",
    )
    chunk_ms: int = Field(default=100, ge=10, description="size of each audio chunk sent back")
    speed: float = Field(default=4.0, gt=0, description="how much faster than real time replies are sent")
    reply_delay_ms: int = Field(default=150, ge=0, description="'thinking' time before a reply starts")
    # For exercising the shared rotation policy (s2s.resilience) and history carry-over with no
    # cloud provider: the line announces its own expiry as Gemini's goAway / Nova's stream limit
    # do, and can "transcribe" each utterance as its duration.
    expire_after_s: float | None = Field(
        default=None, gt=0, description="emit SessionExpiring this long after the session opened"
    )
    transcribe: bool = Field(default=False, description="emit placeholder transcripts ('780 ms of speech')")
    tool_cues: list[EchoToolCue] = Field(default_factory=list, description="tests: call tools on cue")

    @model_validator(mode="after")
    def _vad_rate(self) -> EchoConfig:
        if self.vad != "energy" and self.sample_rate not in NEURAL_RATES:
            raise ValueError(f"vad {self.vad!r} takes 8000 or 16000 Hz audio, not sample_rate {self.sample_rate}")
        return self


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


def _create(name: str, config: ProviderConfig) -> Provider:
    assert isinstance(config, EchoConfig)
    return EchoProvider(name, config)


SPEC = ProviderSpec(config_model=EchoConfig, factory=_create)
