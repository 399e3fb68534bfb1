"""Nova Sonic's bidirectional-stream events, sans I/O.

:class:`NovaProtocol` builds the input events (plain dicts, each ``{"event": {NAME: {...}}}``)
in the order the model requires and turns output events into the neutral vocabulary of
:mod:`s2s.events`. It never touches a stream: :mod:`s2s.nova_sonic.session` moves the dicts.

Input order (AWS, https://docs.aws.amazon.com/nova/latest/nova2-userguide/sonic-input-events.html):
``sessionStart`` -> ``promptStart`` ->
SYSTEM text content -> history contents -> the one interactive USER AUDIO content, fed by
``audioInput`` for the whole call; while it is open, TOOL result contents and (Nova 2 only)
interactive USER TEXT contents may be interleaved; the close is ``contentEnd`` (audio) ->
``promptEnd`` -> ``sessionEnd``.

Output (AWS, https://docs.aws.amazon.com/nova/latest/nova2-userguide/sonic-output-events.html):
every block is ``contentStart`` / payload /
``contentEnd`` keyed by ``contentId``. A bot answer is: USER TEXT FINAL (the caller's ASR
transcript), ASSISTANT TEXT SPECULATIVE (planned speech), ASSISTANT AUDIO (``audioOutput``
chunks, faster than real time), ASSISTANT TEXT FINAL (what was actually spoken). ``audioOutput``
and ``textOutput`` carry only the ``contentId``, so role/type/stage come from the block's
``contentStart``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from s2s.errors import VoicebotError
from s2s.events import (
    AudioOut,
    ProviderError,
    ProviderEvent,
    SpeechStarted,
    SpeechStopped,
    ToolCall,
    Transcript,
    TurnDone,
    Usage,
)
from s2s.nova_sonic.history import MAX_TEXT_INPUT_BYTES, HistoryMessage, split_utf8
from s2s.tools import ToolSpec
from transcoding.formats import AudioFormat
from transcoding.sniff import EncodingCheck, implausible_pcm16

log = logging.getLogger(__name__)

# The output rates Nova offers (``audioOutputConfiguration.sampleRateHertz``), all playable here.
OUTPUT_RATES = (8000, 16000, 24000)

Event = dict[str, Any]
TextRole = Literal["SYSTEM", "USER", "ASSISTANT"]


class ProtocolStateError(VoicebotError, RuntimeError):
    """An input event was requested in a state where Nova would reject it (h11 style: names
    the state and the event rather than letting the service answer with a ValidationException)."""


@dataclass(frozen=True, slots=True)
class PromptSettings:
    """What ``sessionStart``/``promptStart`` and the audio content declare."""

    instructions: str
    voice: str
    input_sample_rate: int
    output_sample_rate: int
    tools: tuple[ToolSpec, ...] = ()
    max_tokens: int = 1024
    temperature: float = 0.7
    top_p: float = 0.9
    endpointing_sensitivity: str | None = None
    nova2: bool = True


@dataclass(slots=True)
class _Content:
    type: str
    role: str
    stage: str | None
    text: list[str] = field(default_factory=list)
    tool_use: Event | None = None


def _ev(name: str, body: Event) -> Event:
    return {"event": {name: body}}


def is_interruption_marker(text: str) -> bool:
    """Nova signals barge-in with an ASSISTANT ``textOutput`` whose content is the JSON
    ``{ "interrupted" : true }`` (spacing varies, so parse rather than compare)."""
    stripped = text.strip()
    if not (stripped.startswith("{") and stripped.endswith("}")):
        return False
    try:
        value = json.loads(stripped)
    except ValueError:
        return False
    return isinstance(value, dict) and value.get("interrupted") is True


class NovaProtocol:
    """One stream's worth of Nova protocol state (a new stream gets a new instance), in
    python-websockets' shape: requests (:meth:`open`, :meth:`send_audio`, :meth:`send_text`,
    :meth:`send_tool_result`, :meth:`end`) queue input events for :meth:`data_to_send`; output
    events go in with :meth:`receive` and come out as neutral events from
    :meth:`events_received`. The session shell only moves them to and from the stream."""

    def __init__(self, settings: PromptSettings, *, new_id: Callable[[], str] | None = None) -> None:
        self.settings = settings
        self._new_id = new_id or (lambda: str(uuid.uuid4()))
        self.prompt_name = self._new_id()
        self.audio_content_name = self._new_id()
        self.state: Literal["new", "streaming", "closed"] = "new"
        self.usage: Event = {}
        self._usage_session = f"nova-{uuid.uuid4().hex[:12]}"  # when usageEvent names none
        self._contents: dict[str, _Content] = {}
        self._bot_item: str | None = None  # contentId of the latest ASSISTANT AUDIO block
        self._responding = False  # bot audio started and no TurnDone yet
        self._interrupted = False  # SpeechStarted already emitted for the current answer
        self._caller_speaking = False  # between a SpeechStarted and its SpeechStopped
        # SPECULATIVE text of the answer in progress: Nova's FINAL text of an interrupted answer
        # is only the interruption marker, so this is the only record of what it was saying.
        self._planned: list[str] = []
        self._outbox: list[Event] = []
        self._events: list[ProviderEvent] = []
        # Output format guard: what the bot's audio is, per the service's own word (each
        # ASSISTANT AUDIO contentStart's audioOutputConfiguration) and per its bytes.
        self.output_format = AudioFormat("pcm16", settings.output_sample_rate)
        self.format_failure: ProviderError | None = None
        self._format_check = EncodingCheck("pcm16")
        self._odd_byte = b""  # a sample split across audioOutput chunks
        self._unchecked: list[AudioOut] = []  # held until the byte check has a verdict

    def data_to_send(self) -> list[Event]:
        out, self._outbox = self._outbox, []
        return out

    def events_received(self) -> list[ProviderEvent]:
        events, self._events = self._events, []
        return events

    # ----------------------------------------------------------------- input events

    def open(self, history: Iterable[HistoryMessage] = ()) -> None:
        """Everything up to and including the audio ``contentStart``; after these the
        stream accepts ``audioInput``."""
        if self.state != "new":
            raise ProtocolStateError(f"opening events requested in state {self.state!r}")
        s = self.settings
        session_start: Event = {
            "inferenceConfiguration": {
                "maxTokens": s.max_tokens,
                "topP": s.top_p,
                "temperature": s.temperature,
            }
        }
        if s.nova2 and s.endpointing_sensitivity:
            session_start["turnDetectionConfiguration"] = {"endpointingSensitivity": s.endpointing_sensitivity}
        prompt_start: Event = {
            "promptName": self.prompt_name,
            "textOutputConfiguration": {"mediaType": "text/plain"},
            "audioOutputConfiguration": {
                "mediaType": "audio/lpcm",
                "sampleRateHertz": s.output_sample_rate,
                "sampleSizeBits": 16,
                "channelCount": 1,
                "voiceId": s.voice,
                "encoding": "base64",
                "audioType": "SPEECH",
            },
        }
        if s.tools:
            prompt_start["toolUseOutputConfiguration"] = {"mediaType": "application/json"}
            prompt_start["toolConfiguration"] = {"tools": [tool_spec(t) for t in s.tools]}
        events = [_ev("sessionStart", session_start), _ev("promptStart", prompt_start)]
        events += self._text_content("SYSTEM", split_utf8(s.instructions, MAX_TEXT_INPUT_BYTES), interactive=False)
        for message in history:
            events += self._text_content(message.role, message.chunks, interactive=False)
        events.append(
            _ev(
                "contentStart",
                {
                    "promptName": self.prompt_name,
                    "contentName": self.audio_content_name,
                    "type": "AUDIO",
                    "interactive": True,
                    "role": "USER",
                    "audioInputConfiguration": {
                        "mediaType": "audio/lpcm",
                        "sampleRateHertz": s.input_sample_rate,
                        "sampleSizeBits": 16,
                        "channelCount": 1,
                        "audioType": "SPEECH",
                        "encoding": "base64",
                    },
                },
            )
        )
        self.state = "streaming"
        self._outbox += events

    def send_audio(self, pcm: bytes) -> None:
        self._require_streaming("audioInput")
        self._outbox.append(
            _ev(
                "audioInput",
                {
                    "promptName": self.prompt_name,
                    "contentName": self.audio_content_name,
                    "content": base64.b64encode(pcm).decode("ascii"),
                },
            )
        )

    def send_text(self, text: str) -> None:
        """A caller-side text turn the model answers (Nova 2 cross-modal input: an interactive
        USER TEXT content while the audio content stays open)."""
        self._require_streaming("user text")
        if not self.settings.nova2:
            raise ProtocolStateError("Nova Sonic v1 accepts no text input once audio has started")
        self._outbox += self._text_content("USER", split_utf8(text, MAX_TEXT_INPUT_BYTES), interactive=True)

    def send_tool_result(self, tool_use_id: str, output: str) -> None:
        self._require_streaming("toolResult")
        name = self._new_id()
        self._outbox += [
            _ev(
                "contentStart",
                {
                    "promptName": self.prompt_name,
                    "contentName": name,
                    "type": "TOOL",
                    "interactive": False,
                    "role": "TOOL",
                    "toolResultInputConfiguration": {
                        "toolUseId": tool_use_id,
                        "type": "TEXT",
                        "textInputConfiguration": {"mediaType": "text/plain"},
                    },
                },
            ),
            _ev("toolResult", {"promptName": self.prompt_name, "contentName": name, "content": output}),
            _ev("contentEnd", {"promptName": self.prompt_name, "contentName": name}),
        ]

    def end(self) -> None:
        """The goodbye AWS asks for even after errors (it frees server resources)."""
        if self.state == "closed":
            return
        events: list[Event] = []
        if self.state == "streaming":
            events.append(_ev("contentEnd", {"promptName": self.prompt_name, "contentName": self.audio_content_name}))
            events.append(_ev("promptEnd", {"promptName": self.prompt_name}))
        events.append(_ev("sessionEnd", {}))
        self.state = "closed"
        self._outbox += events

    def _text_content(self, role: TextRole, chunks: Iterable[str], *, interactive: bool) -> list[Event]:
        name = self._new_id()
        events = [
            _ev(
                "contentStart",
                {
                    "promptName": self.prompt_name,
                    "contentName": name,
                    "type": "TEXT",
                    "interactive": interactive,
                    "role": role,
                    "textInputConfiguration": {"mediaType": "text/plain"},
                },
            )
        ]
        events += [
            _ev("textInput", {"promptName": self.prompt_name, "contentName": name, "content": chunk})
            for chunk in chunks
        ]
        events.append(_ev("contentEnd", {"promptName": self.prompt_name, "contentName": name}))
        return events

    def _require_streaming(self, what: str) -> None:
        if self.state != "streaming":
            raise ProtocolStateError(f"{what} requested in state {self.state!r}")

    # ---------------------------------------------------------------- output events

    def receive(self, message: object) -> None:
        """Take one output event; what it means comes out of :meth:`events_received`."""
        self._events += self._translate(message)

    def _translate(self, message: object) -> list[ProviderEvent]:
        """Translate one output event. Malformed input yields a non-fatal ProviderError; unknown
        event names are ignored (Nova adds fields and events over time)."""
        if not isinstance(message, dict) or not isinstance(message.get("event"), dict) or not message["event"]:
            return [ProviderError("bad_event", f"not a Nova output event: {str(message)[:200]}")]
        name, body = next(iter(message["event"].items()))
        if not isinstance(body, dict):
            return [ProviderError("bad_event", f"{name} body is not an object")]
        handler = self._handlers.get(name)
        if handler is None:
            log.debug("nova: ignoring output event %s", name)
            return []
        try:
            return handler(self, body)
        except (KeyError, TypeError, ValueError) as exc:
            return [ProviderError("bad_event", f"malformed {name}: {exc!r}")]

    def _on_content_start(self, body: Event) -> list[ProviderEvent]:
        stage = None
        fields = body.get("additionalModelFields")
        if isinstance(fields, str) and fields:
            # A JSON *string* inside the JSON event, e.g. "{\"generationStage\":\"FINAL\"}".
            stage = json.loads(fields).get("generationStage")
        content = _Content(type=body["type"], role=body["role"], stage=stage)
        self._contents[body["contentId"]] = content
        out: list[ProviderEvent] = []
        if content.role == "ASSISTANT" and content.type == "AUDIO":
            self._confirm_output_format(body.get("audioOutputConfiguration"))
            self._odd_byte = b""
            self._bot_item = body["contentId"]
            if not self._responding:
                self._responding = True
                self._interrupted = False
            out += self._caller_done()  # Nova answers only once it decided the caller finished
        return out

    def _on_text_output(self, body: Event) -> list[ProviderEvent]:
        text = body["content"]
        content = self._contents.get(body.get("contentId", ""))
        role = content.role if content else body.get("role")
        if role == "ASSISTANT" and is_interruption_marker(text):
            return self._barge_in()
        if content is not None:
            content.text.append(text)
        return []

    def _on_audio_output(self, body: Event) -> list[ProviderEvent]:
        if self.format_failure is not None:
            return []  # never play what the guard refused
        try:
            audio = base64.b64decode(body["content"], validate=True)
        except (binascii.Error, ValueError) as exc:
            return [ProviderError("bad_audio", f"undecodable audioOutput: {exc}")]
        audio = self._odd_byte + audio
        if len(audio) % 2:
            # 16-bit samples split across chunks: hold the odd byte for the next chunk, so every
            # sample keeps its two bytes in order (played shifted by a byte, PCM is loud noise).
            audio, self._odd_byte = audio[:-1], audio[-1:]
        else:
            self._odd_byte = b""
        if not audio:
            return []
        out = AudioOut(audio, item_id=body["contentId"])
        check = self._format_check
        if check.done:
            return [out]
        verdict = check.feed(audio)
        if verdict is not None:
            self._unchecked.clear()
            return self._fail_format(
                f"bot audio looks like {verdict} although Nova declared {self.output_format}; "
                "ending the session rather than playing it"
            )
        if not check.done and (self._unchecked or implausible_pcm16(audio)):
            # Louder than any voice and no verdict yet: likely 8-bit codes, which would play as
            # noise. Hold it (and what follows) until the sniffer decides.
            self._unchecked.append(out)
            return []
        held, self._unchecked = self._unchecked, []
        return [*held, out]

    def _confirm_output_format(self, config: object) -> None:
        """Take the format Nova says its audio block is in (``audioOutputConfiguration`` of
        the ASSISTANT AUDIO ``contentStart``: ``audio/lpcm``, ``sampleRateHertz``, 16 bits,
        mono, base64; https://docs.aws.amazon.com/nova/latest/nova2-userguide/sonic-output-events.html).
        Another offered rate than the one asked for is adopted, so the bridge resamples from
        what arrives; anything else (another encoding, sample size, channel count or rate)
        cannot be played and ends the session loudly. A block that states nothing keeps the
        format asked for, which the bytes are then checked against."""
        if not isinstance(config, dict) or self.format_failure is not None:
            return
        rate = config.get("sampleRateHertz")
        playable = (
            config.get("mediaType", "audio/lpcm") == "audio/lpcm"
            and config.get("sampleSizeBits", 16) == 16
            and config.get("channelCount", 1) == 1
            and config.get("encoding", "base64") == "base64"
            and (rate is None or rate in OUTPUT_RATES)
        )
        if not playable:
            self._events += self._fail_format(f"Nova announced output audio {config}, which voicebot cannot play")
            return
        if rate is not None and rate != self.output_format.sample_rate:
            log.warning(
                "nova: asked for %s output audio, the service sends %s Hz; using what it sends",
                self.output_format,
                rate,
            )
            self.output_format = AudioFormat("pcm16", rate)

    def _fail_format(self, message: str) -> list[ProviderEvent]:
        log.error("nova: %s", message)
        self.format_failure = ProviderError("audio_format_mismatch", message, fatal=True)
        return [self.format_failure]

    def _on_tool_use(self, body: Event) -> list[ProviderEvent]:
        content = self._contents.get(body.get("contentId", ""))
        if content is None:  # tool use outside a TOOL block: keep it anyway, keyed by its own id
            content = self._contents.setdefault(body["toolUseId"], _Content("TOOL", "TOOL", None))
        content.tool_use = body
        return []

    def _on_content_end(self, body: Event) -> list[ProviderEvent]:
        content_id = body.get("contentId", "")
        content = self._contents.pop(content_id, None)
        stop = body.get("stopReason")
        out: list[ProviderEvent] = []
        if content is None:
            return out
        if stop == "INTERRUPTED" and content.role == "ASSISTANT":
            out += self._barge_in()
        if content.type == "TEXT":
            text = "".join(content.text).strip()
            if content.role == "USER" and content.stage == "FINAL":
                # The ASR final is Nova's end-of-turn decision: the caller stopped speaking.
                self._caller_speaking = True
                out += self._caller_done()
                if text:
                    out.append(Transcript("caller", text, final=True))
            elif content.role == "ASSISTANT" and text:
                # SPECULATIVE text precedes its audio block, so it has no item yet.
                final = content.stage == "FINAL"
                if not final:
                    self._planned.append(text)
                out.append(Transcript("bot", text, final=final, item_id=self._bot_item if final else None))
            if stop == "INTERRUPTED" and content.role == "ASSISTANT":
                out += self._turn_done()
        elif content.type == "AUDIO" and content.role == "ASSISTANT":
            # PARTIAL_TURN: more audio blocks of the same answer follow.
            if stop in ("END_TURN", "INTERRUPTED"):
                out += self._turn_done()
        elif content.type == "TOOL" and content.tool_use is not None:
            out += self._tool_call(content.tool_use)
        return out

    def _on_completion_end(self, body: Event) -> list[ProviderEvent]:
        return self._turn_done()

    def _on_usage(self, body: Event) -> list[ProviderEvent]:
        """``usageEvent`` carries the session's running totals in ``details.total``
        (``input``/``output`` ``speechTokens``/``textTokens``; the ``delta`` beside it is the
        change), https://docs.aws.amazon.com/nova/latest/nova2-userguide/sonic-output-events.html"""
        details = body.get("details")
        if not (isinstance(details, dict) and isinstance(details.get("total"), dict)):
            return []
        self.usage = details["total"]
        given, made = self.usage.get("input") or {}, self.usage.get("output") or {}
        return [
            Usage(
                str(body.get("sessionId") or self._usage_session),
                text_in_tokens=int(given.get("textTokens") or 0),
                audio_in_tokens=int(given.get("speechTokens") or 0),
                text_out_tokens=int(made.get("textTokens") or 0),
                audio_out_tokens=int(made.get("speechTokens") or 0),
            )
        ]

    def _barge_in(self) -> list[ProviderEvent]:
        if self._interrupted:
            return []
        self._interrupted = True
        self._caller_speaking = True
        out: list[ProviderEvent] = []
        if self._planned and self._bot_item is not None:
            # The planned words, as the transcript of the interrupted answer: the bridge keeps
            # only the part the caller heard (telephony.transcript), so renewal and recovery
            # history include half-heard answers.
            out.append(Transcript("bot", " ".join(self._planned), final=True, item_id=self._bot_item))
            self._planned.clear()
        return [*out, SpeechStarted(item_id=self._bot_item)]

    def _caller_done(self) -> list[ProviderEvent]:
        """Nova has no end-of-speech event; without a SpeechStopped after each SpeechStarted
        the rotation policy would think the caller never stopped and never renew."""
        if not self._caller_speaking:
            return []
        self._caller_speaking = False
        return [SpeechStopped()]

    def _turn_done(self) -> list[ProviderEvent]:
        if not self._responding:
            return []
        self._responding = False
        self._planned.clear()
        return [TurnDone(item_id=self._bot_item, interrupted=self._interrupted)]

    def _tool_call(self, tool_use: Event) -> list[ProviderEvent]:
        raw = tool_use.get("content") or "{}"
        out: list[ProviderEvent] = []
        try:
            arguments = json.loads(raw)
        except ValueError:
            arguments = None
        if not isinstance(arguments, dict):
            out.append(ProviderError("bad_tool_arguments", f"{tool_use.get('toolName')}: {raw[:200]!r}"))
            arguments = {}
        out.append(ToolCall(call_id=tool_use["toolUseId"], name=tool_use["toolName"], arguments=arguments))
        return out

    _handlers: dict[str, Callable[[NovaProtocol, Event], list[ProviderEvent]]] = {
        "contentStart": _on_content_start,
        "textOutput": _on_text_output,
        "audioOutput": _on_audio_output,
        "toolUse": _on_tool_use,
        "contentEnd": _on_content_end,
        "completionEnd": _on_completion_end,
        "usageEvent": _on_usage,
    }


def tool_spec(tool: ToolSpec) -> Event:
    """Nova's ``toolSpec``: the JSON Schema goes in as a *string* (``inputSchema.json``)."""
    return {
        "toolSpec": {
            "name": tool.name,
            "description": tool.description,
            "inputSchema": {"json": json.dumps(tool.parameters)},
        }
    }
