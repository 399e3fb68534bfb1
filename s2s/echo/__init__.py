"""``type = "echo"``: a real local S2S line with no network.

After the caller pauses it speaks the caller's utterance back, sending audio faster than
real time in chunks as cloud providers do, and raises speech-started when the caller
talks over it, so barge-in, marks and truncation are exercised end to end. Its audio format
is configurable so the transcoding paths can be exercised too.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

from pydantic import Field

from s2s.echo.engine import EchoEngine, VadSettings
from s2s.events import AudioOut, TurnDone
from s2s.provider import Provider, ProviderConfig, ProviderSession, QueuedSession, SessionContext
from s2s.registry import ProviderSpec
from transcoding.formats import AudioFormat

log = logging.getLogger(__name__)


class EchoConfig(ProviderConfig):
    type: Literal["echo"] = "echo"
    encoding: Literal["mulaw", "pcm16"] = "mulaw"
    sample_rate: Literal[8000, 16000, 24000] = 8000
    vad_threshold_dbfs: float = Field(default=-38.0, le=0)
    vad_start_ms: int = Field(default=60, ge=20)
    vad_silence_ms: int = Field(default=500, ge=100)
    chunk_ms: int = Field(default=100, ge=10, description="size of each audio chunk sent back")
    speed: float = Field(default=4.0, gt=0, description="how much faster than real time replies are sent")
    reply_delay_ms: int = Field(default=150, ge=0, description="'thinking' time before a reply starts")


class EchoSession(QueuedSession):
    def __init__(self, config: EchoConfig, ctx: SessionContext) -> None:
        super().__init__("echo")
        fmt = AudioFormat(config.encoding, config.sample_rate)
        self.input_format = self.output_format = fmt
        self.config = config
        self.ctx = ctx
        self.engine = EchoEngine(
            fmt,
            VadSettings(config.vad_threshold_dbfs, config.vad_start_ms, config.vad_silence_ms),
        )
        self.received_text: list[str] = []
        self.truncations: list[tuple[str, int]] = []
        self._wake = asyncio.Event()
        self.start_reader(self._speak())

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

    async def truncate(self, item_id: str, heard_ms: int) -> None:
        self.truncations.append((item_id, heard_ms))
        log.info("echo: caller heard %d ms of %s", heard_ms, item_id)

    async def send_tool_result(self, call_id: str, output: str) -> None:
        log.info("echo: tool result for %s ignored", call_id)

    async def _speak(self) -> None:
        fmt = self.input_format
        chunk_bytes = fmt.nbytes(self.config.chunk_ms)
        pace_s = self.config.chunk_ms / 1000.0 / self.config.speed
        while True:
            await self._wake.wait()
            self._wake.clear()
            while (reply := self.engine.take_reply()) is not None:
                item_id, audio = reply
                await asyncio.sleep(self.config.reply_delay_ms / 1000.0)
                for start in range(0, len(audio), chunk_bytes):
                    if self.engine.replying_item != item_id:
                        break  # the caller talked over it: the engine already said TurnDone
                    self.emit(AudioOut(audio[start : start + chunk_bytes], item_id))
                    await asyncio.sleep(pace_s)
                if self.engine.reply_finished(item_id):
                    self.emit(TurnDone(item_id))

    async def _close_transport(self) -> None:
        return None


class EchoProvider(Provider):
    config: EchoConfig

    async def open_session(self, ctx: SessionContext) -> ProviderSession:
        return EchoSession(self.config, ctx)


def _create(name: str, config: ProviderConfig) -> Provider:
    assert isinstance(config, EchoConfig)
    return EchoProvider(name, config)


SPEC = ProviderSpec(config_model=EchoConfig, factory=_create)
