"""A protocol-faithful stand-in for Amazon Nova Sonic's bidirectional stream.

:class:`FakeNovaModel` is one stream's worth of "model": it checks the input events against
Nova's ordering rules (AWS "sonic-input-events"; violations are recorded and answered with a
``validation`` error, as Bedrock answers with ``ValidationException``), listens to the caller
audio with a simple energy detector, and answers each caller turn the way Nova does (AWS
"sonic-output-events"): USER TEXT FINAL transcript -> optional TOOL block (waiting for the tool
result) -> ASSISTANT TEXT SPECULATIVE -> ASSISTANT AUDIO streamed faster than real time ->
ASSISTANT TEXT FINAL -> usageEvent. Caller speech while the bot's audio would still be playing
is a barge-in: audio ``contentEnd`` INTERRUPTED, then an ASSISTANT FINAL text block carrying
``{ "interrupted" : true }`` and ``contentEnd`` INTERRUPTED.

The caller "transcript" is ``tone <Hz> Hz`` (the dominant frequency of what the caller sent),
so tests can check that audio arrived at the declared rate with the right pitch. The reply
audio is a sine at ``reply_hz`` at the ``sampleRateHertz`` the client declared.

Two wire shells drive the same model: :class:`FakeNovaStream` (the in-memory
:class:`~s2s.nova_sonic.transport.NovaStream`) and :mod:`tests.fakes.nova_sonic_h2`
(HTTP/2 + AWS event-stream framing, for the real SDK).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from s2s.nova_sonic.transport import NovaStreamError
from tests.fakes import conformance

Event = dict[str, Any]
_ids = itertools.count(1)


def _new_id(prefix: str) -> str:
    return f"{prefix}-{next(_ids)}"


def sine_pcm16(freq_hz: float, ms: float, rate: int, amplitude: float = 0.5) -> bytes:
    n = int(rate * ms / 1000)
    t = np.arange(n) / rate
    return (np.sin(2 * math.pi * freq_hz * t) * amplitude * 32767).astype("<i2").tobytes()


def dominant_hz(pcm: bytes, rate: int) -> float:
    samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float64)
    if samples.size < 16:
        return 0.0
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.fft.rfftfreq(samples.size, 1 / rate)[int(np.argmax(spectrum))])


@dataclass
class ToolPlan:
    """Make the model call ``name`` with ``arguments`` on the first caller turn."""

    name: str
    arguments: dict[str, Any]
    tool_use_id: str = "tooluse-1"


@dataclass
class FakeNovaModel:
    reply_hz: float = 440.0
    reply_freqs: tuple[float, ...] = ()
    """Per-answer frequencies (answer N uses ``reply_freqs[N]``; ``reply_hz`` after them)."""
    reply_ms: float = 800.0
    speed: float = 4.0
    """How much faster than real time the audio is streamed (Nova streams ahead of playback)."""
    chunk_ms: float = 40.0
    speech_rms: float = 500.0
    end_of_turn_ms: float = 240.0
    tool: ToolPlan | None = None
    limit_s: float | None = None
    """Raise ``model_timeout`` (ModelTimeoutException) this long after the stream opened."""
    send_rate: int | None = None
    """Faults of the output format: send the bot's audio at this rate, not the one declared,
    and say so in the audio ``contentStart`` (as a service that adapts would) ..."""
    send_bytes: bytes | None = None
    """... or send these bytes (e.g. mu-law speech) although ``audioOutputConfiguration`` says
    16-bit LPCM ..."""
    odd_chunks: bool = False
    """... or cut ``audioOutput`` chunks at odd byte offsets (samples split across chunks)."""

    model_id: str = ""
    inputs: list[Event] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    history: list[tuple[str, str]] = field(default_factory=list)
    system_prompt: str = ""
    user_texts: list[str] = field(default_factory=list)
    tool_results: list[tuple[str, str]] = field(default_factory=list)
    caller_audio: bytearray = field(default_factory=bytearray)
    transcripts: list[str] = field(default_factory=list)
    interruptions: int = 0
    answers: int = 0
    audio_in_at: list[float] = field(default_factory=list)
    audio_out_at: list[float] = field(default_factory=list)
    """Monotonic times of each ``audioInput`` received / ``audioOutput`` emitted (bench)."""
    audio_in_ends: list[int] = field(default_factory=list)
    audio_out_starts: list[int] = field(default_factory=list)
    """Where each of those starts/ends in its direction's audio stream, in bytes (bench)."""
    audio_out_bytes: int = 0
    input_rate: int = 0
    output_rate: int = 0
    voice: str = ""
    tools_declared: list[Event] = field(default_factory=list)
    ended: bool = False

    def __post_init__(self) -> None:
        self.output: asyncio.Queue[Event | Exception | None] = asyncio.Queue()
        self._phase = "start"  # start -> session -> prompt -> audio -> prompt_end -> ended
        self._open: dict[str, Event] = {}  # contentName -> contentStart body (text/tool being sent)
        self._audio_name: str | None = None
        self._prompt = ""
        self._session_id = _new_id("session")
        self._speech = bytearray()
        self._speaking = False
        self._silence_ms = 0.0
        self._bot_until = 0.0
        self._responder: asyncio.Task[None] | None = None
        self._tool_result: asyncio.Future[str] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._history_done = False
        self._turns_billed = 0  # usageEvent totals grow by USAGE_PER_TURN each answer

    # ------------------------------------------------------------------ lifecycle

    def start(self, model_id: str) -> None:
        self.model_id = model_id
        if self.limit_s is not None:
            self._tasks.append(asyncio.ensure_future(self._expire(self.limit_s)))

    async def _expire(self, after: float) -> None:
        await asyncio.sleep(after)
        self._stop_responder()
        self.output.put_nowait(NovaStreamError("model_timeout", "Model has timed out in processing the request"))

    def drop(self) -> None:
        """Simulate a reset connection: the stream just ends."""
        self._stop_responder()
        self.output.put_nowait(None)

    def shutdown(self) -> None:
        self._stop_responder()
        for task in self._tasks:
            task.cancel()

    def _stop_responder(self) -> None:
        if self._responder is not None:
            self._responder.cancel()

    @property
    def nova2(self) -> bool:
        return "nova-sonic-v1" not in self.model_id

    # ------------------------------------------------------------------- input side

    def _violation(self, message: str) -> None:
        self.errors.append(message)
        self.output.put_nowait(NovaStreamError("validation", message, retryable=False))

    def feed(self, event: Event) -> None:
        self.inputs.append(event)
        problem = conformance.nova_input_event(event)
        if problem is not None:
            self._violation(problem)
            return
        if not isinstance(event, dict) or not isinstance(event.get("event"), dict) or len(event["event"]) != 1:
            self._violation(f"malformed input event {event!r:.200}")
            return
        ((name, body),) = event["event"].items()
        handler = getattr(self, f"_in_{name}", None)
        if handler is None:
            self._violation(f"unknown input event {name}")
            return
        handler(body)

    def _in_sessionStart(self, body: Event) -> None:
        if self._phase != "start":
            return self._violation("sessionStart must be the first event")
        if "inferenceConfiguration" not in body:
            return self._violation("sessionStart without inferenceConfiguration")
        if "turnDetectionConfiguration" in body and not self.nova2:
            return self._violation("turnDetectionConfiguration is Nova 2 only")
        self._phase = "session"

    def _in_promptStart(self, body: Event) -> None:
        if self._phase != "session":
            return self._violation(f"promptStart in phase {self._phase}")
        self._prompt = body["promptName"]
        audio = body["audioOutputConfiguration"]
        if audio.get("sampleRateHertz") not in (8000, 16000, 24000) or audio.get("encoding") != "base64":
            return self._violation(f"bad audioOutputConfiguration {audio}")
        self.output_rate = audio["sampleRateHertz"]
        self.voice = audio["voiceId"]
        tools = body.get("toolConfiguration", {}).get("tools", [])
        for tool in tools:
            if not isinstance(tool["toolSpec"]["inputSchema"]["json"], str):
                return self._violation("toolSpec.inputSchema.json must be a JSON string")
            json.loads(tool["toolSpec"]["inputSchema"]["json"])
        if tools and "toolUseOutputConfiguration" not in body:
            return self._violation("tools without toolUseOutputConfiguration")
        self.tools_declared = tools
        self._phase = "prompt"

    def _check_prompt(self, body: Event) -> bool:
        if body.get("promptName") != self._prompt:
            self._violation(f"promptName {body.get('promptName')!r} != {self._prompt!r}")
            return False
        return True

    def _in_contentStart(self, body: Event) -> None:
        if not self._check_prompt(body):
            return None
        if self._phase not in ("prompt", "audio"):
            return self._violation(f"contentStart in phase {self._phase}")
        name, kind, role = body["contentName"], body["type"], body["role"]
        if self._open:
            return self._violation(f"contentStart {name} while {list(self._open)} still open")
        if kind == "AUDIO":
            if self._audio_name is not None:
                return self._violation("a second AUDIO content")
            if not self.system_prompt:
                return self._violation("audio before the SYSTEM prompt")
            self.input_rate = body["audioInputConfiguration"]["sampleRateHertz"]
            if self.input_rate not in (8000, 16000, 24000):
                return self._violation(f"bad input rate {self.input_rate}")
            self._audio_name = name
            self._phase = "audio"
            return
        if kind == "TEXT":
            if self._phase == "audio":
                if role != "USER" or not body.get("interactive"):
                    return self._violation("after audio started only interactive USER text is allowed")
                if not self.nova2:
                    return self._violation("Nova Sonic v1 does not accept text input after audio started")
            else:
                if role == "SYSTEM" and (self.system_prompt or self.history):
                    return self._violation("SYSTEM prompt must come once, first")
                if role in ("USER", "ASSISTANT"):
                    if not self.system_prompt:
                        return self._violation("history before the SYSTEM prompt")
                    if not self.history and role != "USER":
                        return self._violation("history must start with a USER message")
                if body.get("interactive"):
                    return self._violation("system prompt/history must be interactive=false")
        elif kind == "TOOL":
            if self._phase != "audio" or role != "TOOL":
                return self._violation("tool results go inside the session, role TOOL")
            tool_use_id = body["toolResultInputConfiguration"]["toolUseId"]
            if self.tool is None or tool_use_id != self.tool.tool_use_id:
                return self._violation(f"tool result for unknown toolUseId {tool_use_id}")
        else:
            return self._violation(f"unknown content type {kind}")
        self._open[name] = dict(body, text="")

    def _in_textInput(self, body: Event) -> None:
        content = self._open.get(body.get("contentName", ""))
        if content is None or content["type"] != "TEXT" or not self._check_prompt(body):
            return self._violation(f"textInput for a content that is not an open TEXT: {body.get('contentName')}")
        if len(body["content"].encode()) > 1024:
            return self._violation("textInput longer than 1 KB")
        content["text"] += body["content"]

    def _in_toolResult(self, body: Event) -> None:
        content = self._open.get(body.get("contentName", ""))
        if content is None or content["type"] != "TOOL":
            return self._violation("toolResult outside a TOOL content")
        content["text"] += body["content"]

    def _in_audioInput(self, body: Event) -> None:
        if self._phase != "audio" or body.get("contentName") != self._audio_name or not self._check_prompt(body):
            return self._violation("audioInput outside the open AUDIO content")
        pcm = base64.b64decode(body["content"], validate=True)
        self.audio_in_at.append(time.monotonic())
        self.caller_audio += pcm
        self.audio_in_ends.append(len(self.caller_audio))
        self._listen(pcm)

    def _in_contentEnd(self, body: Event) -> None:
        name = body.get("contentName")
        if name == self._audio_name and self._phase == "audio":
            self._phase = "audio_closed"
            return
        content = self._open.pop(name or "", None)
        if content is None:
            return self._violation(f"contentEnd for {name}, which is not open")
        if content["type"] == "TOOL":
            tool_use_id = content["toolResultInputConfiguration"]["toolUseId"]
            self.tool_results.append((tool_use_id, content["text"]))
            if self._tool_result is not None and not self._tool_result.done():
                self._tool_result.set_result(content["text"])
            return
        role, text = content["role"], content["text"]
        if role == "SYSTEM":
            self.system_prompt = text
        elif self._phase == "prompt":
            self.history.append((role, text))
            if sum(len(t.encode()) for _, t in self.history) > 40 * 1024:
                self._violation("history over 40 KB")
        else:
            self.user_texts.append(text)
            self._caller_turn(text)

    def _in_promptEnd(self, body: Event) -> None:
        if self._phase != "audio_closed" or self._open:
            return self._violation(f"promptEnd in phase {self._phase} (audio content must be ended first)")
        self._phase = "prompt_end"

    def _in_sessionEnd(self, body: Event) -> None:
        if self._phase not in ("prompt_end", "session", "start", "prompt"):
            return self._violation(f"sessionEnd in phase {self._phase}")
        self._phase = "ended"
        self.ended = True
        self._stop_responder()
        self.output.put_nowait(None)

    # --------------------------------------------------------------- caller speech

    def _listen(self, pcm: bytes) -> None:
        if not pcm or self.input_rate == 0:
            return
        samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float64)
        rms = float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0
        ms = samples.size * 1000 / self.input_rate
        if rms >= self.speech_rms:
            if not self._speaking:
                self._speaking = True
                if time.monotonic() < self._bot_until or (self._responder and not self._responder.done()):
                    self._interrupt()
            self._speech += pcm
            self._silence_ms = 0.0
        elif self._speaking:
            self._silence_ms += ms
            if self._silence_ms >= self.end_of_turn_ms:
                self._speaking = False
                heard = f"tone {round(dominant_hz(bytes(self._speech), self.input_rate))} Hz"
                self._speech.clear()
                self._caller_turn(heard, from_audio=True)

    def _interrupt(self) -> None:
        self.interruptions += 1
        if self._responder is not None and not self._responder.done():
            self._responder.cancel()  # its handler emits the interruption signals
        elif time.monotonic() < self._bot_until:
            # All audio was sent already but is still playing at the caller's end.
            self._text_block("ASSISTANT", "FINAL", '{ "interrupted" : true }', stop="INTERRUPTED")
        self._bot_until = 0.0

    def _caller_turn(self, text: str, *, from_audio: bool = False) -> None:
        if self._responder is not None and not self._responder.done():
            self._responder.cancel()
        self._responder = asyncio.ensure_future(self._respond(text, from_audio))

    # ------------------------------------------------------------------ output side

    def _emit(self, name: str, body: Event) -> None:
        base = {"sessionId": self._session_id, "promptName": self._prompt}
        event = {"event": {name: {**base, **body}}}
        problem = conformance.nova_output_event(event)
        if problem is not None:
            self.errors.append(f"the fake sent {problem}")  # a bug in the fake
        self.output.put_nowait(event)

    def _block(self, kind: str, role: str, payload: list[tuple[str, Event]], stop: str, **start: Any) -> str:
        cid = _new_id("content")
        self._emit("contentStart", {"contentId": cid, "type": kind, "role": role, **start})
        for name, body in payload:
            self._emit(name, {"contentId": cid, **body})
        self._emit("contentEnd", {"contentId": cid, "type": kind, "stopReason": stop})
        return cid

    def _text_block(self, role: str, stage: str, text: str, stop: str = "END_TURN") -> None:
        self._block(
            "TEXT",
            role,
            [("textOutput", {"content": text, "role": role})],
            stop,
            additionalModelFields=json.dumps({"generationStage": stage}),
            textOutputConfiguration={"mediaType": "text/plain"},
        )

    async def _respond(self, heard: str, from_audio: bool) -> None:
        completion = _new_id("completion")
        self._emit("completionStart", {"completionId": completion})
        if from_audio:
            self.transcripts.append(heard)
            self._text_block("USER", "FINAL", heard)
        reply = f"You said {heard}."
        if self.tool is not None and not self.tool_results:
            loop = asyncio.get_running_loop()
            self._tool_result = loop.create_future()
            self._block(
                "TOOL",
                "TOOL",
                [
                    (
                        "toolUse",
                        {
                            "toolName": self.tool.name,
                            "toolUseId": self.tool.tool_use_id,
                            "content": json.dumps(self.tool.arguments),
                        },
                    )
                ],
                "TOOL_USE",
                toolUseOutputConfiguration={"mediaType": "application/json"},
            )
            result = await self._tool_result
            reply = f"The tool said {result}."
        self._text_block("ASSISTANT", "SPECULATIVE", reply, stop="PARTIAL_TURN")
        answer = self.answers
        self.answers += 1
        freq = self.reply_freqs[answer] if answer < len(self.reply_freqs) else self.reply_hz
        rate = self.send_rate or self.output_rate
        audio = sine_pcm16(freq, self.reply_ms, rate)
        if self.send_bytes is not None:
            audio = self.send_bytes
        cid = _new_id("content")
        self._emit(
            "contentStart",
            {
                "contentId": cid,
                "type": "AUDIO",
                "role": "ASSISTANT",
                "audioOutputConfiguration": {
                    "mediaType": "audio/lpcm",
                    "sampleRateHertz": rate,
                    "sampleSizeBits": 16,
                    "encoding": "base64",
                    "channelCount": 1,
                },
            },
        )
        self._bot_until = time.monotonic() + self.reply_ms / 1000
        chunk = int(rate * self.chunk_ms / 1000) * 2 + (1 if self.odd_chunks else 0)
        try:
            for offset in range(0, len(audio), chunk):
                piece = audio[offset : offset + chunk]
                self.audio_out_at.append(time.monotonic())
                self.audio_out_starts.append(self.audio_out_bytes)
                self.audio_out_bytes += len(piece)
                self._emit("audioOutput", {"contentId": cid, "content": base64.b64encode(piece).decode()})
                await asyncio.sleep(self.chunk_ms / 1000 / self.speed)
        except asyncio.CancelledError:
            # Barge-in: Nova stops generating and says so (AWS sonic-output-events: "interrupted").
            self._emit("contentEnd", {"contentId": cid, "type": "AUDIO", "stopReason": "INTERRUPTED"})
            self._text_block("ASSISTANT", "FINAL", '{ "interrupted" : true }', stop="INTERRUPTED")
            raise
        self._emit("contentEnd", {"contentId": cid, "type": "AUDIO", "stopReason": "END_TURN"})
        self._text_block("ASSISTANT", "FINAL", reply)
        # AWS sonic-output-events: each usageEvent has the change (delta) and the running total.
        self._turns_billed += 1
        n = self._turns_billed
        delta = {"input": {"speechTokens": 10, "textTokens": 5}, "output": {"speechTokens": 20, "textTokens": 0}}
        total = {side: {kind: count * n for kind, count in counts.items()} for side, counts in delta.items()}
        self._emit(
            "usageEvent",
            {
                "completionId": completion,
                "details": {"delta": delta, "total": total},
                "totalInputTokens": 15 * n,
                "totalOutputTokens": 20 * n,
                "totalTokens": 35 * n,
            },
        )


class FakeNovaStream:
    """The in-memory :class:`~s2s.nova_sonic.transport.NovaStream` over a :class:`FakeNovaModel`."""

    def __init__(self, model: FakeNovaModel, *, refuse: NovaStreamError | None = None, hang: bool = False) -> None:
        self.model = model
        self.refuse = refuse
        self.hang = hang
        self.closed = False

    async def open(self, model_id: str, first_events: list[Event]) -> None:
        if self.hang:
            await asyncio.Event().wait()
        if self.refuse is not None:
            raise self.refuse
        self.model.start(model_id)
        for event in first_events:
            self.model.feed(event)

    async def send(self, event: Event) -> None:
        if self.closed:
            raise NovaStreamError("transport", "send on a closed stream")
        self.model.feed(json.loads(json.dumps(event)))  # what crosses the wire is JSON

    async def receive(self) -> Event | None:
        item = await self.model.output.get()
        if isinstance(item, Exception):
            raise item
        return item

    async def close(self) -> None:
        self.closed = True
        self.model.shutdown()
        self.model.output.put_nowait(None)


@dataclass
class FakeNovaService:
    """Hands out one :class:`FakeNovaModel` per stream; tests inspect ``models``."""

    make_model: Callable[[], FakeNovaModel] = FakeNovaModel
    models: list[FakeNovaModel] = field(default_factory=list)
    streams: list[FakeNovaStream] = field(default_factory=list)
    refuse: NovaStreamError | None = None
    hang: bool = False

    def __call__(self) -> FakeNovaStream:
        model = self.make_model()
        self.models.append(model)
        stream = FakeNovaStream(model, refuse=self.refuse, hang=self.hang)
        self.streams.append(stream)
        return stream

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError("condition not met on the fake Nova service")
            await asyncio.sleep(0.01)

    def shutdown(self) -> None:
        for model in self.models:
            with contextlib.suppress(Exception):
                model.shutdown()
