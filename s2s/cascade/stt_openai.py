"""``stt = { type = "openai_realtime" }``: OpenAI's realtime transcription session.

A Realtime WebSocket opened with ``intent=transcription`` over the same SDK transport the
Realtime provider uses (``AsyncOpenAI(...).realtime.connect``, frames moved with
``send_raw``/``recv_bytes``, SDK reconnects off; see :mod:`s2s.openai_realtime.session`).
The wire protocol is :class:`TranscriptionProtocol`, a plain object: after ``session.created``
one ``session.update`` with ``session.type = "transcription"`` (SDK type
``RealtimeTranscriptionSessionCreateRequest``), then ``session.updated``; audio goes up as
``input_audio_buffer.append``; the server's VAD answers ``input_audio_buffer.speech_started``
(the barge-in trigger), ``speech_stopped``, and the turn's text in
``conversation.item.input_audio_transcription.completed`` (``...failed`` ends the turn with no
words). Audio is G.711 mu-law both ways, so the line's payloads pass through untouched.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator
from typing import Any, Literal

from openai import AsyncOpenAI
from pydantic import Field, SecretStr
from websockets.exceptions import ConnectionClosed, InvalidStatus

from s2s.cascade.parts import PartConfig, PartError, PartSpec, SpeechToText, SttEvent
from s2s.events import SpeechStarted, SpeechStopped, Transcript
from s2s.openai_realtime.config import ServerVad
from s2s.openai_realtime.session import SdkTransport
from s2s.provider import SessionContext
from s2s.realtime_protocol import RealtimeTransport
from transcoding.formats import MULAW_8K

log = logging.getLogger(__name__)

_PERMANENT_STATUSES = frozenset({400, 401, 403, 404})


class OpenAITranscriptionConfig(PartConfig):
    type: Literal["openai_realtime"] = "openai_realtime"
    api_key: SecretStr
    base_url: str = Field(default="wss://api.openai.com/v1", description="connects to {base_url}/realtime")
    model: str = Field(default="gpt-4o-mini-transcribe", description="transcription model")
    language: str | None = Field(default=None, description="ISO-639-1, e.g. 'en'; improves accuracy and latency")
    turn_detection: ServerVad = Field(default_factory=ServerVad)
    noise_reduction: Literal["near_field", "far_field"] | None = None
    connect_timeout_s: float = Field(default=5.0, gt=0)


class TranscriptionProtocol:
    """The transcription session's frames, sans I/O: JSON in, neutral events out."""

    def __init__(self, config: OpenAITranscriptionConfig) -> None:
        self.config = config
        self.ready = False
        self._outbox: list[str] = []
        self._events: list[SttEvent] = []
        self.failure: str | None = None

    def session_update(self) -> dict[str, Any]:
        transcription: dict[str, Any] = {"model": self.config.model}
        if self.config.language:
            transcription["language"] = self.config.language
        audio_input: dict[str, Any] = {
            "format": {"type": "audio/pcmu"},
            "transcription": transcription,
            "turn_detection": self.config.turn_detection.model_dump(),
        }
        if self.config.noise_reduction:
            audio_input["noise_reduction"] = {"type": self.config.noise_reduction}
        return {"type": "session.update", "session": {"type": "transcription", "audio": {"input": audio_input}}}

    def send_audio(self, audio: bytes) -> None:
        self._send({"type": "input_audio_buffer.append", "audio": base64.b64encode(audio).decode()})

    def receive(self, data: str | bytes) -> None:
        try:
            event = json.loads(data)
            kind = event["type"]
        except (ValueError, KeyError, TypeError):
            log.warning("transcription session: ignored a frame that is not an event: %.200r", data)
            return
        if kind == "session.created":
            self._send(self.session_update())
        elif kind == "session.updated":
            self.ready = True
        elif kind == "input_audio_buffer.speech_started":
            self._events.append(SpeechStarted())
        elif kind == "input_audio_buffer.speech_stopped":
            self._events.append(SpeechStopped())
        elif kind == "conversation.item.input_audio_transcription.completed":
            self._events.append(Transcript("caller", str(event.get("transcript", ""))))
        elif kind == "conversation.item.input_audio_transcription.failed":
            log.warning("transcription of a caller turn failed: %s", event.get("error"))
            self._events.append(Transcript("caller", ""))
        elif kind == "error":
            error = event.get("error") or {}
            message = f"{error.get('code') or error.get('type')}: {error.get('message')}"
            if not self.ready:
                self.failure = message
            log.warning("transcription session error: %s", message)

    def _send(self, event: dict[str, Any]) -> None:
        self._outbox.append(json.dumps(event))

    def data_to_send(self) -> list[str]:
        out, self._outbox = self._outbox, []
        return out

    def events_received(self) -> list[SttEvent]:
        out, self._events = self._events, []
        return out


class OpenAITranscription(SpeechToText):
    input_format = MULAW_8K

    def __init__(self, protocol: TranscriptionProtocol, transport: RealtimeTransport) -> None:
        self._protocol = protocol
        self._transport = transport
        self._closed = False

    async def send_audio(self, audio: bytes) -> None:
        if self._closed:
            return
        self._protocol.send_audio(audio)
        try:
            for frame in self._protocol.data_to_send():
                await self._transport.send(frame)
        except ConnectionClosed:
            pass  # events() sees the same close and reports it

    async def events(self) -> AsyncIterator[SttEvent]:
        while True:
            try:
                data = await self._transport.recv()
            except ConnectionClosed as exc:
                if self._closed:
                    return
                raise PartError(f"transcription session closed: {exc}") from exc
            self._protocol.receive(data)
            for event in self._protocol.events_received():
                yield event

    async def close(self) -> None:
        self._closed = True
        await self._transport.close()


class OpenAITranscriptionOpener:
    def __init__(self, config: OpenAITranscriptionConfig) -> None:
        self.config = config
        self._client = AsyncOpenAI(
            api_key=config.api_key.get_secret_value(), websocket_base_url=config.base_url, max_retries=0
        )

    async def open(self, ctx: SessionContext) -> OpenAITranscription:
        protocol = TranscriptionProtocol(self.config)
        transport: SdkTransport | None = None
        try:
            async with asyncio.timeout(self.config.connect_timeout_s):
                manager = self._client.realtime.connect(
                    extra_query={"intent": "transcription"},
                    max_retries=0,
                    websocket_connection_options={"max_size": 16 * 2**20, "compression": None},
                )
                transport = SdkTransport(await manager.enter())
                while not protocol.ready:
                    protocol.receive(await transport.recv())
                    protocol.events_received()
                    if protocol.failure is not None:
                        raise PartError(f"transcription session refused: {protocol.failure}", retryable=False)
                    for frame in protocol.data_to_send():
                        await transport.send(frame)
        except Exception as exc:
            if transport is not None:
                await transport.close()
            if isinstance(exc, PartError):
                raise
            if isinstance(exc, InvalidStatus):
                status = exc.response.status_code
                raise PartError(f"transcription: HTTP {status}", retryable=status not in _PERMANENT_STATUSES) from exc
            if isinstance(exc, TimeoutError):
                raise PartError(f"transcription: no session.updated within {self.config.connect_timeout_s:g}s") from exc
            raise PartError(f"transcription: {type(exc).__name__}: {exc}") from exc
        return OpenAITranscription(protocol, transport)


PART = PartSpec("stt", OpenAITranscriptionConfig, OpenAITranscriptionOpener)
