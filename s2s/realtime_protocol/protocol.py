"""The OpenAI-Realtime-style wire protocol as a plain object (sans I/O).

OpenAI Realtime GA and xAI's Grok Voice Agent speak nearly the same JSON-over-WebSocket
protocol (openai ``types/realtime``; xAI's Voice Agent API is the same event set with the
differences :mod:`s2s.grok.protocol` lists). This module holds it once:
feed it every server frame with :meth:`RealtimeProtocol.receive`, collect neutral events with
:meth:`events_received` and the client frames to send with :meth:`data_to_send` — the same
shape as python-websockets' protocol objects. It never touches a socket, so it is tested with
plain strings and a call tape replays through it unchanged.

A provider subclass supplies its ``session.update`` layout (:meth:`session_config`) and its
dialect switches (which event ends the connect handshake, whether truncate is best-effort).
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import logging
import uuid
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

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
from s2s.provider import SessionContext, Turn
from s2s.tools import ToolSpec
from s2s.usage import UsageTally
from transcoding.formats import MULAW_8K, PCM16_24K, AudioFormat
from transcoding.sniff import MIN_BYTES as SNIFF_MIN_BYTES
from transcoding.sniff import sniff_encoding

log = logging.getLogger(__name__)

_AUDIO_APPEND_HEAD = '{"type":"input_audio_buffer.append","audio":"'

# Errors after which the server ends the session (or will refuse everything that follows):
# the recovery layer must open a new one. Everything else leaves the session usable
# (openai ``types/realtime/realtime_error.py``).
FATAL_ERROR_CODES = frozenset(
    {
        "session_expired",  # "Your session hit the maximum duration of N minutes."
        "beta_api_shape_disabled",  # beta-shaped session after the beta shutdown
        "invalid_api_key",
        "insufficient_quota",
    }
)
FATAL_ERROR_TYPES = frozenset({"authentication_error", "permission_error"})
# A response.cancel that raced the end of the response: expected, not worth a warning.
BENIGN_ERROR_CODES = frozenset({"response_cancel_not_active"})

# Bot audio is sniffed in windows of this many bytes, for at most this many windows.
_SNIFF_BYTES = 4800
_SNIFF_WINDOWS = 8

# Event types this client sends with an ``event_id`` so an ``error`` naming it can be traced
# back to the request (appends are left anonymous: there are 50 of them a second).
_TRACKED_EVENT_LIMIT = 256


def _is_cancel_race(about: str | None, message: str) -> bool:
    """A ``response.cancel`` that reached the server after the response ended. OpenAI says so
    with the code ``response_cancel_not_active``; Grok answers with its own code and wording
    ("no active response", "... not active", "nothing to cancel"), so an error that names our
    cancel, or a cancel in its text, with one of those phrasings counts as the same race."""
    text = message.lower()
    if about != "response.cancel" and "cancel" not in text:
        return False
    return any(phrase in text for phrase in ("no active response", "not active", "nothing to cancel", "no response"))


def _is_json_object(text: str | None) -> bool:
    try:
        return isinstance(json.loads(text or "{}"), dict)
    except ValueError:
        return False


class HandshakeState(Enum):
    AWAIT_CREATED = "awaiting session.created"
    AWAIT_UPDATED = "awaiting session.updated"
    READY = "ready"
    FAILED = "failed"


def wire_audio_format(fmt: AudioFormat) -> dict[str, Any]:
    """``audio.{input,output}.format`` for a format; no ``rate`` on pcmu
    (openai ``types/realtime/realtime_audio_formats.py``)."""
    if fmt == MULAW_8K:
        return {"type": "audio/pcmu"}
    if fmt.encoding == "pcm16":
        return {"type": "audio/pcm", "rate": fmt.sample_rate}
    raise ValueError(f"no realtime wire format for {fmt}")


def function_tools(tools: tuple[ToolSpec, ...]) -> list[dict[str, Any]]:
    """Flat function tools: ``name`` at top level, not nested under ``function``
    (openai ``types/realtime/realtime_function_tool.py``)."""
    return [
        {"type": "function", "name": t.name, "description": t.description, "parameters": t.parameters} for t in tools
    ]


def history_item(turn: Turn) -> dict[str, Any]:
    """A replayed turn as a ``conversation.item.create`` item: callers' words as ``input_text``,
    the bot's as ``output_text`` (the GA assistant content type; the beta's ``text`` is gone)."""
    if turn.role == "caller":
        return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": turn.text}]}
    return {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": turn.text}]}


@dataclass
class _ResponseState:
    """What one model response has produced, for TurnDone and the tool round trip."""

    audio_item: str | None = None
    pending_calls: set[str] = field(default_factory=set)
    had_calls: bool = False
    done: bool = False


class RealtimeProtocol(ABC):
    """Per-session protocol state: handshake, response bookkeeping, audio sent per item.

    Audio sent per bot item is counted in bytes of the session's output format, so
    :meth:`truncate` can cap ``audio_end_ms`` at what the server produced (OpenAI rejects a
    larger value: ``conversation_item_truncate_event.py``): bytes/8 for pcmu, bytes/48 for PCM16 at 24 kHz."""

    provider_name = "realtime"
    # Server events that open the handshake; the session.update goes out on the first one.
    created_events: frozenset[str] = frozenset({"session.created"})
    # Whether an error reply to conversation.item.truncate is expected and harmless.
    truncate_best_effort = False

    def __init__(self, ctx: SessionContext, audio_format: AudioFormat) -> None:
        if audio_format not in (MULAW_8K, PCM16_24K):
            raise ValueError(f"unsupported realtime audio format {audio_format}")
        self.ctx = ctx
        self.audio_format = audio_format  # what we send, and ask the server to send
        self.output_format = audio_format  # what the server confirmed it sends
        self._format_checked = False
        self._format_sample = bytearray()
        self._format_windows = 0
        self._format_judge_at = SNIFF_MIN_BYTES  # sample size at which it is judged next
        self.state = HandshakeState.AWAIT_CREATED
        self.failure: ProviderError | None = None
        self._events: list[ProviderEvent] = []
        self._outbox: list[dict[str, Any] | str] = []  # str: a frame already serialized
        self._ids = itertools.count(1)
        self._tracked: OrderedDict[str, str] = OrderedDict()  # client event_id -> event type
        self._responses: dict[str, _ResponseState] = {}
        self._call_response: dict[str, str] = {}  # tool call_id -> response id
        self._generating: str | None = None  # id of the response between created and done
        self._response_requested = False  # response.create sent, response.created not yet seen
        self._response_wanted = False  # a response.create is due once the active one is done
        self._cancel_sent_for: str | None = None
        # tokens of every response.done so far; named by session.created's id when it has one
        self._usage = UsageTally(f"{self.provider_name}-{uuid.uuid4().hex[:12]}")
        self._sent_bytes: dict[str, int] = {}  # bot item id -> output audio bytes received
        self._last_audio_item: str | None = None
        self._truncated: set[str] = set()
        self._unknown_types: set[str] = set()
        self._calls_seen: OrderedDict[str, None] = OrderedDict()  # call_ids already run

    # ---- what the provider subclass supplies -------------------------------------------

    @abstractmethod
    def session_config(self) -> dict[str, Any]:
        """The ``session`` object of the one ``session.update`` sent during the handshake."""

    # ---- sans-I/O plumbing ---------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self.state is HandshakeState.READY

    @property
    def failed(self) -> bool:
        return self.failure is not None

    def events_received(self) -> list[ProviderEvent]:
        events, self._events = self._events, []
        return events

    def data_to_send(self) -> list[str]:
        out, self._outbox = self._outbox, []
        return [m if isinstance(m, str) else json.dumps(m, separators=(",", ":")) for m in out]

    def _send(self, event_type: str, track: bool = True, **fields: Any) -> None:
        message: dict[str, Any] = {"type": event_type, **fields}
        if track:
            event_id = f"vb_{next(self._ids)}"
            message["event_id"] = event_id
            self._tracked[event_id] = event_type
            if len(self._tracked) > _TRACKED_EVENT_LIMIT:
                self._tracked.popitem(last=False)
        self._outbox.append(message)

    # ---- client side: what the session asks for ------------------------------------------

    def send_audio(self, audio: bytes) -> None:
        """Caller audio in the session's input format. The server does not acknowledge it."""
        if audio and self.ready:
            # Every 20 ms per call: a template instead of a dict and json.dumps (base64 needs
            # no JSON escaping).
            self._outbox.append(_AUDIO_APPEND_HEAD + base64.b64encode(audio).decode("ascii") + '"}')

    def send_text(self, text: str) -> None:
        """A user text turn (DTMF digits, a note) that the model answers."""
        self._send("conversation.item.create", item=history_item(Turn("caller", text)))
        self._request_response()

    def truncate(self, item_id: str, heard_ms: int) -> None:
        """Barge-in: stop the answer if it is still being generated, then cut ``item_id`` at
        what the caller heard, capped at the audio the server produced for it (as an int).
        Later deltas of the item are dropped so they cannot reach the caller."""
        if self._generating is not None and self._cancel_sent_for != self._generating:
            # With interrupt_response the server has usually cancelled already; if it wins the
            # race we get response_cancel_not_active, which is ignored.
            self._cancel_sent_for = self._generating
            self._send("response.cancel", response_id=self._generating)
        self._truncated.add(item_id)
        sent = self._sent_bytes.get(item_id)
        if sent is None:
            log.info("%s: barge-in on item %s with no audio sent; nothing to truncate", self.provider_name, item_id)
            return
        sent_ms = int(self.output_format.duration_ms(sent))
        audio_end_ms = max(0, min(int(heard_ms), sent_ms))
        self._send("conversation.item.truncate", item_id=item_id, content_index=0, audio_end_ms=audio_end_ms)

    def send_tool_result(self, call_id: str, output: str) -> None:
        """A ``function_call_output`` item; the follow-up ``response.create`` goes out once every
        call of that response is answered and the response itself is done."""
        self._send(
            "conversation.item.create",
            item={"type": "function_call_output", "call_id": call_id, "output": output},
        )
        response_id = self._call_response.pop(call_id, None)
        state = self._responses.get(response_id) if response_id is not None else None
        if response_id is None or state is None:
            log.warning(
                "%s: tool result for unknown call %s; asking for a response anyway",
                self.provider_name,
                call_id,
            )
            self._request_response()
            return
        state.pending_calls.discard(call_id)
        self._maybe_continue_after_tools(response_id, state)

    def sent_ms(self, item_id: str) -> int:
        """Milliseconds of bot audio received for ``item_id`` (0 if none)."""
        return int(self.output_format.duration_ms(self._sent_bytes.get(item_id, 0)))

    def _request_response(self, **response: Any) -> None:
        if self._generating is not None or self._response_requested:
            # One active response at a time (conversation_already_has_active_response).
            self._response_wanted = True
            return
        self._response_requested = True
        if response:
            self._send("response.create", response=response)
        else:
            self._send("response.create")

    def _maybe_continue_after_tools(self, response_id: str, state: _ResponseState) -> None:
        if state.done and not state.pending_calls:
            self._responses.pop(response_id, None)
            self._request_response()

    def _on_ready(self) -> None:
        """Replay history, then make the bot speak first if the route has a greeting.

        The greeting is a ``response.create`` whose per-response ``instructions`` ask the model
        to say the line: the model speaks it in the session voice, and it lands in the
        conversation as a normal assistant item that the caller can interrupt."""
        for turn in self.ctx.history:
            self._send("conversation.item.create", item=history_item(turn))
        if self.ctx.greeting:
            self._request_response(
                instructions=f"Greet the caller by saying exactly this, and nothing else: {self.ctx.greeting}"
            )

    # ---- server side ---------------------------------------------------------------------

    def receive(self, data: str | bytes) -> None:
        """One server frame. Malformed frames become a recoverable ProviderError."""
        try:
            message = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            self._recoverable("bad_frame", f"server sent a frame that is not JSON: {exc}")
            return
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            self._recoverable("bad_frame", "server sent a JSON frame without a string 'type'")
            return
        try:
            self._dispatch(message["type"], message)
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            self._recoverable("bad_event", f"malformed {message['type']} event: {exc!r}")

    def _recoverable(self, code: str, message: str) -> None:
        log.warning("%s protocol error (%s): %s; event skipped", self.provider_name, code, message)
        self._events.append(ProviderError(code, message))

    def _dispatch(self, kind: str, m: dict[str, Any]) -> None:
        if kind in self.created_events:
            session_id = (m.get("session") or {}).get("id")
            if isinstance(session_id, str) and session_id:
                self._usage.total = replace(self._usage.total, session_id=session_id)
            if self.state is HandshakeState.AWAIT_CREATED:
                self._send("session.update", session=self.session_config())
                self.state = HandshakeState.AWAIT_UPDATED
            return
        match kind:
            case "session.updated":
                if self.state is HandshakeState.AWAIT_UPDATED:
                    if not self._confirm_output_format(m.get("session") or {}):
                        return
                    self.state = HandshakeState.READY
                    self._on_ready()
            case "error":
                self._on_error(m.get("error") or {})
            case "input_audio_buffer.speech_started":
                self._events.append(SpeechStarted(item_id=self._last_audio_item))
            case "input_audio_buffer.speech_stopped":
                self._events.append(SpeechStopped())
            case "conversation.item.input_audio_transcription.delta":
                self._caller_text(m.get("delta", ""), final=False, item_id=m.get("item_id"))
            case "conversation.item.input_audio_transcription.updated":
                # Grok (grok-transcribe): cumulative partial transcript.
                self._caller_text(m.get("transcript", ""), final=False, item_id=m.get("item_id"))
            case "conversation.item.input_audio_transcription.completed":
                # Grok also sends partials here with status "in_progress".
                final = m.get("status", "completed") != "in_progress"
                self._caller_text(m.get("transcript", ""), final=final, item_id=m.get("item_id"))
            case "conversation.item.input_audio_transcription.failed":
                log.info("%s: caller transcription failed: %s", self.provider_name, m.get("error"))
            case "response.created":
                self._on_response_created(m["response"]["id"])
            case "response.output_audio.delta" | "response.audio.delta":
                self._on_audio_delta(m)
            case "response.output_audio_transcript.delta" | "response.audio_transcript.delta":
                self._bot_text(m.get("delta", ""), final=False, item_id=m.get("item_id"))
            case "response.output_audio_transcript.done" | "response.audio_transcript.done":
                self._bot_text(m.get("transcript", ""), final=True, item_id=m.get("item_id"))
            case "response.output_text.delta" | "response.text.delta":
                self._bot_text(m.get("delta", ""), final=False, item_id=m.get("item_id"))
            case "response.output_text.done" | "response.text.done":
                self._bot_text(m.get("text", ""), final=True, item_id=m.get("item_id"))
            case "response.output_item.done":
                self._on_output_item_done(m.get("response_id"), m["item"])
            case "response.function_call_arguments.done":
                self._on_arguments_done(m)
            case "response.done":
                self._on_response_done(m["response"])
            case "conversation.item.truncated":
                log.debug(
                    "%s: item %s truncated at %s ms",
                    self.provider_name,
                    m.get("item_id"),
                    m.get("audio_end_ms"),
                )
            case (
                "session.created"
                | "conversation.created"
                | "ping"
                | "input_audio_buffer.committed"
                | "input_audio_buffer.cleared"
                | "input_audio_buffer.timeout_triggered"
                | "conversation.item.added"
                | "conversation.item.created"
                | "conversation.item.done"
                | "conversation.item.deleted"
                | "response.output_item.added"
                | "response.content_part.added"
                | "response.content_part.done"
                | "response.output_audio.done"
                | "response.audio.done"
                | "response.function_call_arguments.delta"
                | "rate_limits.updated"
            ):
                pass
            case _:
                if kind not in self._unknown_types and not kind.startswith("output_audio_buffer."):
                    self._unknown_types.add(kind)
                    log.debug("%s: ignoring server event %s", self.provider_name, kind)

    def _caller_text(self, text: str, *, final: bool, item_id: str | None) -> None:
        if text.strip():
            self._events.append(Transcript("caller", text.strip() if final else text, final=final, item_id=item_id))

    def _bot_text(self, text: str, *, final: bool, item_id: str | None) -> None:
        if text.strip():
            self._events.append(Transcript("bot", text.strip() if final else text, final=final, item_id=item_id))

    def _on_response_created(self, response_id: str) -> None:
        self._generating = response_id
        self._response_requested = False
        self._responses.setdefault(response_id, _ResponseState())

    def _on_audio_delta(self, m: dict[str, Any]) -> None:
        item_id = m["item_id"]
        if item_id in self._truncated:
            return  # the caller barged in on this item; its tail must not play
        try:
            audio = base64.b64decode(m["delta"], validate=True)
        except (binascii.Error, ValueError) as exc:
            self._recoverable("bad_audio", f"audio delta for item {item_id} is not base64: {exc}")
            return
        if not self._format_checked and not self._audio_fits(audio):
            return
        self._sent_bytes[item_id] = self._sent_bytes.get(item_id, 0) + len(audio)
        self._last_audio_item = item_id
        state = self._responses.get(m.get("response_id") or "")
        if state is not None:
            state.audio_item = item_id
        self._events.append(AudioOut(audio, item_id))

    def _confirm_output_format(self, session: dict[str, Any]) -> bool:
        """Take the output format ``session.updated`` confirms (``session.audio.output.format``,
        openai ``types/realtime`` ``RealtimeAudioFormats``). A supported one other than what
        we asked for is adopted before the bridge sees the session, so its transcoder is built
        for what will arrive; an unsupported one fails the handshake. None (Grok may omit it)
        leaves what we asked for, which the first audio then checks."""
        confirmed = ((session.get("audio") or {}).get("output") or {}).get("format")
        if not isinstance(confirmed, dict):
            return True
        kind, rate = confirmed.get("type"), confirmed.get("rate")
        if kind == "audio/pcmu":
            fmt = MULAW_8K
        elif kind == "audio/pcm" and rate in (None, PCM16_24K.sample_rate):
            fmt = PCM16_24K
        else:
            self._fail_format(f"the server confirmed output audio {confirmed}, which voicebot cannot play")
            return False
        if fmt != self.output_format:
            log.warning(
                "%s: asked for %s output audio, the server confirmed %s; using what it confirmed",
                self.provider_name,
                self.output_format,
                fmt,
            )
            self.output_format = fmt
        return True

    def _audio_fits(self, audio: bytes) -> bool:
        """Whether the first bot audio looks like the confirmed format (:mod:`transcoding.sniff`).
        Each delta is judged before it is passed on, on what has arrived so far, so the usual
        case (PCM16 on a mu-law session) is caught on the first delta and never played. Audio
        that clearly is the other kind ends the session loudly; checking stops at the first
        clear verdict, or after :data:`_SNIFF_WINDOWS` windows that stayed unclear.

        An unclear sample is judged again once it has doubled (the first window) or once the
        next window is full, not on every delta: a pure tone or silence stays unclear for all
        eight windows, and judging it per 40 ms delta was ~6 % of the server's CPU under load
        (``bench load``)."""
        self._format_sample += audio
        if len(self._format_sample) < self._format_judge_at:
            return True
        verdict = sniff_encoding(bytes(self._format_sample[:_SNIFF_BYTES]))
        while verdict is None and len(self._format_sample) >= _SNIFF_BYTES:
            del self._format_sample[:_SNIFF_BYTES]  # an unclear window: judge the next one
            self._format_windows += 1
            if self._format_windows >= _SNIFF_WINDOWS:
                self._format_checked = True
                self._format_sample.clear()
                return True
            if len(self._format_sample) >= _SNIFF_BYTES:
                verdict = sniff_encoding(bytes(self._format_sample[:_SNIFF_BYTES]))
        if verdict is None:
            self._format_judge_at = (
                min(2 * len(self._format_sample), _SNIFF_BYTES) if self._format_windows == 0 else _SNIFF_BYTES
            )
            return True
        self._format_checked = True
        self._format_sample.clear()
        expected = "pcm16" if self.output_format.encoding == "pcm16" else "8bit"
        if verdict == expected:
            return True
        self._fail_format(
            f"bot audio looks like {verdict} although the session declared {self.output_format}; "
            "ending the session rather than playing it"
        )
        return False

    def _fail_format(self, message: str) -> None:
        log.error("%s: %s", self.provider_name, message)
        self.failure = ProviderError("audio_format_mismatch", message, fatal=True)
        if not self.ready:
            self.state = HandshakeState.FAILED
        self._events.append(self.failure)

    def _on_output_item_done(self, response_id: str | None, item: dict[str, Any]) -> None:
        """A finished output item; a ``function_call`` one runs unless it ended early.

        OpenAI marks the item ``status: "completed"`` (openai ``types/realtime``
        ``RealtimeConversationItemFunctionCall``); xAI's docs show no ``status`` here, so a
        missing one counts as complete. Either way the call may already have run on its
        ``response.function_call_arguments.done``."""
        if item.get("type") != "function_call":
            return
        status = item.get("status", "completed")
        if status != "completed":
            if item.get("call_id") not in self._calls_seen:
                log.info("%s: function call %s ended %s; not running it", self.provider_name, item.get("name"), status)
            return
        self._start_call(response_id, item["call_id"], item["name"], item.get("arguments"))

    def _on_arguments_done(self, m: dict[str, Any]) -> None:
        """The arguments of a call are complete. xAI's Grok examples (and pipecat's Grok
        service) run tools on this event alone, so it is as good a start signal as
        ``output_item.done``; whichever comes first runs the call, once. A response we asked
        to cancel may end with cut-short arguments here, so its calls are not run from it."""
        response_id = m.get("response_id")
        if response_id is not None and response_id == self._cancel_sent_for:
            return
        name = m.get("name")
        if not name:
            return  # cannot run a call without its function name; output_item.done has it
        self._start_call(response_id, m["call_id"], name, m.get("arguments"), final=False)

    def _start_call(
        self, response_id: str | None, call_id: str, name: str, raw_arguments: str | None, *, final: bool = True
    ) -> None:
        """Run a call once. Arguments that do not parse on the early signal are left to the
        item (a response the server cut short ends with a cut-short string there too, and its
        item then says ``incomplete``); on the item they are answered with an error."""
        if call_id in self._calls_seen:
            return
        if not final and not _is_json_object(raw_arguments):
            return
        self._calls_seen[call_id] = None
        while len(self._calls_seen) > _TRACKED_EVENT_LIMIT:
            self._calls_seen.popitem(last=False)
        try:
            arguments = json.loads(raw_arguments or "{}")
            if not isinstance(arguments, dict):
                raise ValueError("arguments are not a JSON object")
        except ValueError as exc:
            # Answer the call ourselves so the model is not left waiting for an output.
            self._recoverable("bad_tool_arguments", f"tool {name} call {call_id}: {exc}")
            self._track_call(response_id, call_id)
            self.send_tool_result(call_id, json.dumps({"error": f"invalid arguments: {exc}"}))
            return
        self._track_call(response_id, call_id)
        self._events.append(ToolCall(call_id, name, arguments))

    def _track_call(self, response_id: str | None, call_id: str) -> None:
        rid = response_id or self._generating or ""
        state = self._responses.setdefault(rid, _ResponseState())
        state.pending_calls.add(call_id)
        state.had_calls = True
        self._call_response[call_id] = rid

    def _on_response_done(self, response: dict[str, Any]) -> None:
        response_id = response.get("id") or ""
        status = response.get("status")
        if self._generating == response_id or self._generating is None:
            self._generating = None
        self._response_requested = False
        state = self._responses.setdefault(response_id, _ResponseState())
        state.done = True
        if status == "failed":
            error = (response.get("status_details") or {}).get("error") or {}
            self._recoverable(error.get("code") or "response_failed", error.get("message") or "response failed")
        self._events.append(TurnDone(item_id=state.audio_item, interrupted=status == "cancelled"))
        if isinstance(response.get("usage"), dict):
            self._events.append(self._add_usage(response["usage"]))
        if state.pending_calls:
            return  # response.create follows the last tool output
        self._responses.pop(response_id, None)
        if state.had_calls:
            self._request_response()  # every tool output arrived before response.done
        elif self._response_wanted:
            self._response_wanted = False
            self._request_response()

    def _add_usage(self, usage: dict[str, Any]) -> Usage:
        """One response's tokens by modality (``openai.types.realtime.RealtimeResponseUsage``:
        ``input_token_details`` text/audio/cached, ``output_token_details`` text/audio) added
        to the session's totals. Cached tokens are a subset of the input tokens; those
        ``cached_tokens_details`` does not split by modality count as text."""
        given = usage.get("input_token_details") or {}
        made = usage.get("output_token_details") or {}
        cached_audio = int((given.get("cached_tokens_details") or {}).get("audio_tokens") or 0)
        return self._usage.add(
            text_in_tokens=int(given.get("text_tokens") or 0),
            audio_in_tokens=int(given.get("audio_tokens") or 0),
            cached_text_in_tokens=max(0, int(given.get("cached_tokens") or 0) - cached_audio),
            cached_audio_in_tokens=cached_audio,
            text_out_tokens=int(made.get("text_tokens") or 0),
            audio_out_tokens=int(made.get("audio_tokens") or 0),
        )

    def _on_error(self, error: dict[str, Any]) -> None:
        code = error.get("code") or error.get("type") or "error"
        message = error.get("message") or ""
        about = self._tracked.get(error.get("event_id") or "")
        if code in BENIGN_ERROR_CODES or _is_cancel_race(about, message):
            log.debug("%s: %s (%s)", self.provider_name, code, message)
            return
        if self.truncate_best_effort and (
            about == "conversation.item.truncate"
            or (about is None and "truncat" in f"{message} {error.get('param')}".lower())
        ):
            log.debug("%s: truncate not accepted (%s: %s); best effort, ignored", self.provider_name, code, message)
            return
        if about == "response.create":
            # No response.created will follow; without this a rejected request would hold
            # back every later one (see _request_response).
            self._response_requested = False
        context = f" (in reply to {about})" if about else ""
        if (
            self.state is not HandshakeState.READY
            or code in FATAL_ERROR_CODES
            or error.get("type") in FATAL_ERROR_TYPES
        ):
            log.error("%s fatal error %s%s: %s; ending the session", self.provider_name, code, context, message)
            self.failure = ProviderError(code, message + context, fatal=True)
            if not self.ready:
                self.state = HandshakeState.FAILED
            self._events.append(self.failure)
            return
        log.warning("%s error %s%s: %s; session continues", self.provider_name, code, context, message)
        self._events.append(ProviderError(code, message + context))
