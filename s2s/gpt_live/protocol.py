"""OpenAI GPT-Live's WebSocket protocol as a plain object (sans I/O).

Same shape as :mod:`s2s.realtime_protocol`: feed server frames to :meth:`GptLiveProtocol.receive`,
collect neutral events with :meth:`events_received` and client frames with :meth:`data_to_send`.
Event names and fields are those of the installed SDK (``openai.types.live``): client events
are built as its ``*EventParam`` TypedDicts (checked by mypy, no per-frame validation cost);
the rare control events from the server are validated with its pydantic models, while the
20 ms audio and transcript deltas are read by hand.

GPT-Live is full duplex: the model decides when to speak, yield and resume, and nothing can
be cancelled or truncated. The neutral vocabulary is mapped onto that as follows.

- Bot utterances. There is no response object, so output audio is grouped into utterances
  (``item_id`` ``live-N``) by time. Each delta is placed on the session's input clock (ms of
  caller audio sent, which the session keeps continuous): it plays after the previous one or
  now, whichever is later. An utterance is over when the input clock has run
  ``BOT_QUIET_MS`` past the end of its audio: final bot ``Transcript`` + ``TurnDone``.
- Caller speech. The first ``session.input_transcript.delta`` after a quiet spell is
  ``SpeechStarted`` (the bridge's barge-in: it clears what is queued at Twilio). If the bot
  was mid-utterance, that utterance ends there (``TurnDone(interrupted=True)``); audio the
  model sends after it is a new utterance, so a model that talks on is still heard. The
  caller's turn ends ``CALLER_QUIET_MS`` after their last transcript delta (final caller
  ``Transcript`` + ``SpeechStopped``), or when the bot starts answering.
- What was heard. ``truncate(item, heard_ms)`` cannot cut the model's memory; when the
  caller heard less than the model said, it appends a silent ``session.thinking.append``
  note saying so, as the API's guidance for audio the user did not hear.
- Delegation (``session.delegation.created``). With client delegation each one becomes a
  ``ToolCall`` of the route's ``ask_agent`` with the caller's words since the previous
  delegation; the result goes back as ``session.commentary.append`` for that delegation.
  With Responses delegation the route's tools are the backend's function tools; their
  calls arrive inside ``response.event`` and are answered with ``response.item.create``
  (``function_call_output``) and, once all are in, ``response.create``.
- ``session.usage.updated`` / ``session.closed`` become :class:`~s2s.events.Usage`.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import logging
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from openai.types.live import (
    CommentaryAppendEventParam,
    DelegationCreatedEvent,
    ErrorEvent,
    FunctionToolParam,
    InitialItemParam,
    InputAudioAppendEventParam,
    ResponseCreateEventParam,
    ResponseItemCreateEventParam,
    SessionClosedEvent,
    SessionCloseEventParam,
    SessionConfigParam,
    SessionStartedEvent,
    SessionStartEventParam,
    SessionUsageUpdatedEvent,
    ThinkingAppendEventParam,
)
from openai.types.live.session_config_param import Delegation
from pydantic import ValidationError

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
from s2s.gpt_live.config import GptLiveConfig
from s2s.provider import SessionContext, Turn
from s2s.tools import ToolSpec
from transcoding.formats import MULAW_8K

log = logging.getLogger(__name__)

# μ-law 8 kHz both ways (AudioPCMU, rate 8000): Twilio's payloads pass through untouched.
AUDIO_FORMAT = MULAW_8K

BOT_QUIET_MS = 500  # no bot audio for this long (input clock) ends the utterance
CALLER_QUIET_MS = 700  # no caller transcript for this long ends the caller's turn
# A caller who missed less than this of an utterance heard it, for all the model cares.
HEARD_ALL_SLACK_MS = 200
# Appended notes are limited to 500 tokens (CommentaryAppendEvent.content); ~4 chars a token.
MAX_NOTE_CHARS = 1800
# Ended utterances kept for a late heard-note (the bridge reports within one barge-in).
KEPT_UTTERANCES = 8
# SessionConfig.input: "at most 128 messages".
MAX_HISTORY_ITEMS = 128

AGENT_TOOL = "ask_agent"
# Routes' instructions speak of tools (call control, ask_agent); GPT-Live reaches them only
# by delegating, so the frontend instructions say so (the Live prompting guide puts "when to
# delegate" in the frontend instructions).
DELEGATION_NOTE = (
    "Looking things up and taking actions on this line happen by delegating: where these "
    "instructions mention a tool, delegate the task instead, and tell the caller the result "
    "when it arrives."
)
FATAL_ERROR_TYPES = frozenset({"authentication_error", "permission_error"})
FATAL_ERROR_CODES = frozenset({"invalid_api_key", "insufficient_quota", "model_not_found", "session_expired"})
# session.closed reasons that end the call on purpose rather than lose it.
DELIBERATE_CLOSE = frozenset({"close_requested", "remote_hangup"})


class HandshakeState(Enum):
    AWAIT_STARTED = "awaiting session.started"
    READY = "ready"
    FAILED = "failed"


VALIDATED_SERVER_EVENTS = (
    SessionStartedEvent,
    DelegationCreatedEvent,
    SessionUsageUpdatedEvent,
    SessionClosedEvent,
    ErrorEvent,
)


def warm_up_models() -> None:
    """Build the SDK models' validators now (config load), not on a call's first events:
    pydantic builds them lazily, and for these nested models that took ~0.6 s on the first
    ``session.started`` of a process, which a caller would hear as a slow first answer."""
    for model in VALIDATED_SERVER_EVENTS:
        model.model_rebuild()


def initial_item(turn: Turn) -> InitialItemParam:
    """A replayed turn as a ``SessionConfig.input`` message (one text part each)."""
    if turn.role == "caller":
        return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": turn.text}]}
    return {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": turn.text}]}


def function_tools(tools: tuple[ToolSpec, ...]) -> list[FunctionToolParam]:
    return [
        {"type": "function", "name": t.name, "description": t.description, "parameters": t.parameters} for t in tools
    ]


def delegation_reply(output: str) -> str:
    """What the model should tell the caller, from a tool result (the agent's ``answer`` /
    ``say`` contract, else the JSON itself), cut to what an append accepts."""
    try:
        result = json.loads(output)
    except ValueError:
        result = None
    if isinstance(result, dict) and isinstance(result.get("answer"), str):
        text = f"Answer for the caller: {result['answer']}"
    elif isinstance(result, dict) and isinstance(result.get("say"), str):
        text = f"Say exactly this to the caller: {result['say']}"
    else:
        text = f"Result: {output}"
    return text[:MAX_NOTE_CHARS]


@dataclass
class _Utterance:
    item_id: str
    said_ms: float = 0.0
    end_ms: float = 0.0  # input-clock time at which its audio has played
    text: list[str] = field(default_factory=list)


@dataclass
class _BackendResponse:
    """One Responses-delegation response: its function calls still unanswered."""

    pending: set[str] = field(default_factory=set)
    had_calls: bool = False
    done: bool = False


class GptLiveProtocol:
    provider_name = "gpt_live"

    def __init__(self, ctx: SessionContext, config: GptLiveConfig) -> None:
        self.ctx = ctx
        self.config = config
        self.audio_format = AUDIO_FORMAT
        self.state = HandshakeState.AWAIT_STARTED
        self.failure: ProviderError | None = None
        self.session_id: str | None = None
        self.expires_at: int | None = None
        self.closed_reason: str | None = None
        self.input_ms = 0.0  # the input clock: caller audio (and padding) sent so far
        self._events: list[ProviderEvent] = []
        self._outbox: list[dict[str, Any]] = []
        self._ids = itertools.count(1)
        self._utterances = itertools.count(1)
        self._bot: _Utterance | None = None
        self._out_end_ms = 0.0
        self._said: dict[str, _Utterance] = {}  # ended utterances, for truncate
        self._caller_text: list[str] = []
        self._caller_last_ms: float | None = None  # input clock at the last caller delta
        self._asked: list[str] = []  # caller words since the previous delegation
        self._client_delegations: set[str] = set()
        self._backend: dict[str, _BackendResponse] = {}  # delegation id -> response state
        self._call_delegation: dict[str, str] = {}  # function call_id -> delegation id
        self._tool_names = {t.name for t in ctx.tools}
        unreachable = sorted(self._tool_names - {AGENT_TOOL}) if config.delegation == "client" else []
        if unreachable:
            log.warning(
                "%s: call %s offers %s, which client delegation cannot call (it answers delegations with "
                'the route\'s agent); set delegation = "responses" on the provider to use them',
                self.provider_name,
                ctx.call_sid,
                ", ".join(unreachable),
            )
        self._unknown_types: set[str] = set()

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
        return [json.dumps(m, separators=(",", ":")) for m in out]

    def _event_id(self) -> str:
        return f"vb_{next(self._ids)}"

    # ---- client side ---------------------------------------------------------------------

    def session_config(self) -> SessionConfigParam:
        cfg, ctx = self.config, self.ctx
        delegation: Delegation
        if cfg.delegation == "responses":
            delegation = {
                "type": "responses",
                "responses": {"model": cfg.responses_model, "tools": function_tools(ctx.tools)},
            }
        else:
            delegation = {"type": "client"}
        if cfg.acknowledgement_delay_ms is not None:
            delegation["acknowledgement_delay_ms"] = cfg.acknowledgement_delay_ms
        instructions = ctx.instructions or cfg.instructions
        if ctx.tools:
            instructions = f"{instructions}\n\n{DELEGATION_NOTE}"
        session: SessionConfigParam = {
            "model": ctx.model or cfg.model,
            "instructions": instructions,
            "audio": {"format": {"type": "audio/pcmu", "rate": 8000}, "output": {"voice": ctx.voice or cfg.voice}},
            "delegation": delegation,
        }
        if ctx.history:
            session["input"] = [initial_item(t) for t in ctx.history[-MAX_HISTORY_ITEMS:]]
        return session

    def start(self) -> None:
        """``session.start``: the first frame on the primary WebSocket."""
        event: SessionStartEventParam = {
            "type": "session.start",
            "session": self.session_config(),
            "event_id": self._event_id(),
        }
        self._outbox.append(dict(event))

    def send_audio(self, audio: bytes) -> None:
        """Caller audio (μ-law 8 kHz) or the session's silence padding; it drives the clock."""
        if not audio or not self.ready:
            return
        event: InputAudioAppendEventParam = {
            "type": "session.input_audio.append",
            "audio": base64.b64encode(audio).decode("ascii"),
        }
        self._outbox.append(dict(event))
        self.input_ms += AUDIO_FORMAT.duration_ms(len(audio))
        self._advance()

    def send_text(self, text: str) -> None:
        """Caller-side text (keypad entries, a note) as commentary the model speaks to."""
        self._commentary(text[:MAX_NOTE_CHARS], None)

    def close(self) -> None:
        event: SessionCloseEventParam = {"type": "session.close", "event_id": self._event_id()}
        self._outbox.append(dict(event))

    def truncate(self, item_id: str, heard_ms: int) -> None:
        """The caller heard ``heard_ms`` of utterance ``item_id``. The model's context cannot
        be cut, so it is told, silently, where the caller stopped hearing."""
        utterance = self._said.get(item_id) or (self._bot if self._bot and self._bot.item_id == item_id else None)
        if utterance is None:
            log.info("%s: heard-note for unknown utterance %s skipped", self.provider_name, item_id)
            return
        if heard_ms >= utterance.said_ms - HEARD_ALL_SLACK_MS:
            return
        words = "".join(utterance.text).split()
        heard_words = words[: round(len(words) * heard_ms / utterance.said_ms)] if utterance.said_ms else []
        heard = f' They heard only: "{" ".join(heard_words)}".' if heard_words else " They heard none of it."
        note = (
            f"The caller's phone played only the first {heard_ms / 1000:.1f} s of the "
            f"{utterance.said_ms / 1000:.1f} s you just said.{heard} Do not assume they heard the rest."
        )
        self._thinking(note[:MAX_NOTE_CHARS], None)

    def send_tool_result(self, call_id: str, output: str) -> None:
        if call_id in self._client_delegations:
            self._client_delegations.discard(call_id)
            self._commentary(delegation_reply(output), call_id)
            return
        delegation_id = self._call_delegation.pop(call_id, None)
        item_event: ResponseItemCreateEventParam = {
            "type": "response.item.create",
            "item": {"type": "function_call_output", "call_id": call_id, "output": output},
            "event_id": self._event_id(),
        }
        self._outbox.append(dict(item_event))
        if delegation_id is None:
            log.warning("%s: tool result for unknown call %s; continuing anyway", self.provider_name, call_id)
            self._continue_backend()
            return
        state = self._backend.get(delegation_id)
        if state is not None:
            state.pending.discard(call_id)
            self._maybe_continue(delegation_id, state)

    def _commentary(self, content: str, delegation_id: str | None) -> None:
        event: CommentaryAppendEventParam = {
            "type": "session.commentary.append",
            "content": content,
            "delegation_id": delegation_id,
            "event_id": self._event_id(),
        }
        self._outbox.append(dict(event))

    def _thinking(self, content: str, delegation_id: str | None) -> None:
        event: ThinkingAppendEventParam = {
            "type": "session.thinking.append",
            "content": content,
            "delegation_id": delegation_id,
            "event_id": self._event_id(),
        }
        self._outbox.append(dict(event))

    def _continue_backend(self) -> None:
        event: ResponseCreateEventParam = {"type": "response.create", "event_id": self._event_id()}
        self._outbox.append(dict(event))

    def _maybe_continue(self, delegation_id: str, state: _BackendResponse) -> None:
        if state.done and state.had_calls and not state.pending:
            del self._backend[delegation_id]
            self._continue_backend()

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
        except (KeyError, TypeError, AttributeError, ValueError, ValidationError) as exc:
            self._recoverable("bad_event", f"malformed {message['type']} event: {exc!r}")
        self._advance()

    def _recoverable(self, code: str, message: str) -> None:
        log.warning("%s protocol error (%s): %s; event skipped", self.provider_name, code, message)
        self._events.append(ProviderError(code, message))

    def _dispatch(self, kind: str, m: dict[str, Any]) -> None:
        match kind:
            case "session.output_audio.delta":
                self._on_audio(m["delta"])
            case "session.output_transcript.delta":
                if self._bot is not None:
                    self._bot.text.append(str(m["delta"]))
                    self._events.append(Transcript("bot", str(m["delta"]), final=False, item_id=self._bot.item_id))
            case "session.input_transcript.delta":
                self._on_caller_text(str(m["delta"]))
            case "session.started":
                started = SessionStartedEvent.model_validate(m)
                self.session_id, self.expires_at = started.session.id, started.session.expires_at
                if self.state is HandshakeState.AWAIT_STARTED:
                    self.state = HandshakeState.READY
                    self._on_ready()
            case "session.delegation.created":
                self._on_delegation(DelegationCreatedEvent.model_validate(m))
            case "response.event":
                self._on_backend_event(m.get("delegation_id") or "", m["event"])
            case "session.usage.updated":
                usage = SessionUsageUpdatedEvent.model_validate(m)
                self._events.append(Usage(self.session_id or "", usage.usage.seconds))
            case "session.closed":
                self._on_closed(SessionClosedEvent.model_validate(m))
            case "error":
                self._on_error(ErrorEvent.model_validate(m))
            case "info":
                log.info("%s info %s: %s", self.provider_name, m.get("code"), m.get("message"))
            case (
                "session.commentary.appended"
                | "session.thinking.appended"
                | "session.instructions.appended"
                | "session.updated"
                | "session.input_audio.muted"
                | "session.input_audio.unmuted"
            ):
                pass
            case _:
                if kind not in self._unknown_types:
                    self._unknown_types.add(kind)
                    log.debug("%s: ignoring server event %s", self.provider_name, kind)

    def _on_ready(self) -> None:
        if self.ctx.greeting:
            self._commentary(
                f"Greet the caller now by saying exactly this, and nothing else: {self.ctx.greeting}"[:MAX_NOTE_CHARS],
                None,
            )

    def _on_audio(self, delta: str) -> None:
        try:
            audio = base64.b64decode(delta, validate=True)
        except (binascii.Error, ValueError) as exc:
            self._recoverable("bad_audio", f"output audio delta is not base64: {exc}")
            return
        if not audio:
            return
        if self._bot is None:
            self._end_caller_turn()
            self._bot = _Utterance(f"live-{next(self._utterances)}")
        duration = AUDIO_FORMAT.duration_ms(len(audio))
        self._out_end_ms = max(self._out_end_ms, self.input_ms) + duration
        self._bot.said_ms += duration
        self._bot.end_ms = self._out_end_ms
        self._events.append(AudioOut(audio, self._bot.item_id))

    def _on_caller_text(self, text: str) -> None:
        if self._caller_last_ms is None:
            bot = self._bot
            self._events.append(SpeechStarted(item_id=bot.item_id if bot else None))
            if bot is not None:
                self._end_utterance(interrupted=True)
        self._caller_last_ms = self.input_ms
        if text:
            self._caller_text.append(text)
            self._asked.append(text)
            self._events.append(Transcript("caller", text, final=False))

    def _advance(self) -> None:
        """Close what the input clock says is over: a bot utterance whose audio has played
        and gone quiet, a caller turn gone quiet."""
        if self._bot is not None and self.input_ms >= self._bot.end_ms + BOT_QUIET_MS:
            self._end_utterance(interrupted=False)
        if self._caller_last_ms is not None and self.input_ms >= self._caller_last_ms + CALLER_QUIET_MS:
            self._end_caller_turn()

    def _end_utterance(self, *, interrupted: bool) -> None:
        bot, self._bot = self._bot, None
        if bot is None:
            return
        self._said[bot.item_id] = bot
        while len(self._said) > KEPT_UTTERANCES:
            self._said.pop(next(iter(self._said)))
        text = "".join(bot.text).strip()
        if text:
            self._events.append(Transcript("bot", text, final=True, item_id=bot.item_id))
        self._events.append(TurnDone(item_id=bot.item_id, interrupted=interrupted))

    def _end_caller_turn(self) -> None:
        if self._caller_last_ms is None:
            return
        self._caller_last_ms = None
        text = "".join(self._caller_text).strip()
        self._caller_text.clear()
        if text:
            self._events.append(Transcript("caller", text, final=True))
        self._events.append(SpeechStopped())

    def _on_delegation(self, event: DelegationCreatedEvent) -> None:
        delegation = event.delegation
        if delegation.target != "client":
            return  # Responses/Decisions work: its tool calls arrive as response.event
        question = "".join(self._asked).strip()
        self._asked.clear()
        if AGENT_TOOL not in self._tool_names:
            log.warning(
                "%s: the model delegated (%s) but the route has no external agent; telling it so",
                self.provider_name,
                delegation.id,
            )
            self._thinking(
                "Nothing can be looked up on this line. Answer from your instructions, or tell the caller "
                "you cannot help with that.",
                delegation.id,
            )
            return
        self._client_delegations.add(delegation.id)
        self._events.append(ToolCall(delegation.id, AGENT_TOOL, {"question": question}))

    def _on_backend_event(self, delegation_id: str, nested: dict[str, Any]) -> None:
        """A streaming Responses event of a delegation (ResponseEvent.event)."""
        kind = nested.get("type")
        if kind == "response.output_item.done":
            item = nested["item"]
            if item.get("type") != "function_call":
                return
            if item.get("status") not in (None, "completed"):
                log.info(
                    "%s: function call %s ended %s; not running it",
                    self.provider_name,
                    item.get("name"),
                    item.get("status"),
                )
                return
            state = self._backend.setdefault(delegation_id, _BackendResponse())
            call_id, name = item["call_id"], item["name"]
            try:
                arguments = json.loads(item.get("arguments") or "{}")
                if not isinstance(arguments, dict):
                    raise ValueError("arguments are not a JSON object")
            except ValueError as exc:
                self._recoverable("bad_tool_arguments", f"tool {name} call {call_id}: {exc}")
                arguments = None
            state.pending.add(call_id)
            state.had_calls = True
            self._call_delegation[call_id] = delegation_id
            if arguments is None:
                self.send_tool_result(call_id, json.dumps({"error": "invalid arguments"}))
            else:
                self._events.append(ToolCall(call_id, name, arguments))
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            finished = self._backend.get(delegation_id)
            if finished is not None:
                finished.done = True
                self._maybe_continue(delegation_id, finished)

    def _on_closed(self, event: SessionClosedEvent) -> None:
        self.closed_reason = event.reason
        self._events.append(Usage(event.session.id, event.usage.seconds, final=True))
        if event.reason not in DELIBERATE_CLOSE:
            log.warning("%s session %s closed by the server: %s", self.provider_name, event.session.id, event.reason)
            self.failure = ProviderError(
                "session_expired" if event.reason == "expired" else event.reason,
                f"session closed: {event.reason}",
                fatal=True,
            )
            self._events.append(self.failure)

    def _on_error(self, event: ErrorEvent) -> None:
        error = event.error
        about = f" (in reply to {error.client_event_id})" if error.client_event_id else ""
        if not self.ready or error.type in FATAL_ERROR_TYPES or error.code in FATAL_ERROR_CODES:
            log.error(
                "%s fatal error %s%s: %s; ending the session", self.provider_name, error.code, about, error.message
            )
            self.failure = ProviderError(error.code, error.message + about, fatal=True)
            if not self.ready:
                self.state = HandshakeState.FAILED
            self._events.append(self.failure)
            return
        log.warning("%s error %s%s: %s; session continues", self.provider_name, error.code, about, error.message)
        self._events.append(ProviderError(error.code, error.message + about))
