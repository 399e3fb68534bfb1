"""Gemini Live server messages -> neutral events (pure: no sockets, no SDK session).

:class:`LiveEventMapper` takes each ``LiveServerMessage`` the SDK parsed (or a plain
camelCase dict, as on the wire) and returns the :mod:`s2s.events` it means. It also keeps
the little per-session state the provider needs later: the newest resumption handle, the
tool calls still awaiting an answer, and, per bot utterance, how much audio and transcript
arrived, which is what :meth:`LiveEventMapper.truncate` uses to write the barge-in note.

Wire facts: the Live API reference (https://ai.google.dev/api/live), the Live guides
(https://ai.google.dev/gemini-api/docs/live-guide, .../live-session) and google-genai ``types``.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from google.genai import types

from s2s.call_context import logged_text
from s2s.errors import VoicebotError
from s2s.events import (
    AudioOut,
    ProviderEvent,
    SessionExpiring,
    SpeechStarted,
    SpeechStopped,
    ToolCall,
    Transcript,
    TurnDone,
)
from s2s.gemini_live.activity import END_MS, START_MS, CallerTurns, Edge
from s2s.gemini_live.config import GeminiLiveConfig
from s2s.gemini_live.setup import INPUT_MIME, Opening, client_content_waits, text_turn, tool_result_scheduling
from s2s.provider import SessionContext
from s2s.usage import UsageTally
from transcoding.formats import PCM16_16K, PCM16_24K
from transcoding.levels import frame_dbfs

log = logging.getLogger(__name__)

OUTPUT_RATE = PCM16_24K.sample_rate
_RATE_RE = re.compile(r"rate\s*=\s*(\d+)")
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*s\s*$")
_KEPT_UTTERANCES = 4  # barge-in notes only ever concern the last utterance or two
GREETING_HOLD_MAX_MS = 15_000
"""Longest the caller's audio is held back from an uninterruptible greeting still being generated."""


@dataclass(frozen=True, slots=True)
class CallerAudio:
    """One chunk of caller audio queued for the wire (16 kHz PCM16), 50 a second per call.

    Building the SDK's pydantic ``LiveClientMessage`` for each cost ~30 us and the SDK's
    ``send_realtime_input`` (validate, convert, dict, ``json.dumps``) more again, so audio is
    queued as bytes: :meth:`wire_text` is the exact text the SDK sends for it
    (``AsyncSession.send_realtime_input(audio=Blob)``, mldev and Vertex alike; tests compare
    the two), :meth:`message` the typed form for anything that wants the SDK's types. The SDK
    encodes bytes as URL-safe base64 (``_common.encode_unserializable_types``); so does this."""

    pcm16: bytes

    def message(self) -> types.LiveClientMessage:
        audio = types.Blob(data=self.pcm16, mime_type=INPUT_MIME)
        return types.LiveClientMessage(realtime_input=types.LiveClientRealtimeInput(audio=audio))

    def wire_text(self) -> str:
        return _AUDIO_HEAD + base64.urlsafe_b64encode(self.pcm16).decode("ascii") + _AUDIO_TAIL


_AUDIO_HEAD = '{"realtime_input": {"audio": {"data": "'
_AUDIO_TAIL = '", "mime_type": ' + json.dumps(INPUT_MIME) + "}}}"

# What the protocol queues for the wire.
ClientMessage = types.LiveClientMessage | CallerAudio


class GeminiProtocolError(VoicebotError):
    """The service sent something this client cannot play or must not guess about."""


def parse_server_message(raw: types.LiveServerMessage | Mapping[str, Any]) -> types.LiveServerMessage:
    """Accept the SDK's parsed message or the wire dict (camelCase keys, base64 audio)."""
    if isinstance(raw, types.LiveServerMessage):
        return raw
    return types.LiveServerMessage.model_validate(dict(raw))


def audio_rate(mime_type: str | None) -> int:
    """Sample rate named by an ``inlineData.mimeType`` such as ``audio/pcm;rate=24000``
    (https://ai.google.dev/gemini-api/docs/live-guide, audio formats).

    Native audio models always send 24 kHz; a mime type without a rate is taken as that."""
    match = _RATE_RE.search(mime_type or "")
    return int(match.group(1)) if match else OUTPUT_RATE


def parse_duration(value: str | None) -> float | None:
    """``goAway.timeLeft`` is a protobuf Duration in its JSON form, e.g. ``"50s"`` or ``"0.5s"``."""
    if not value:
        return None
    match = _DURATION_RE.match(value)
    return float(match.group(1)) if match else None


@dataclass(slots=True)
class Utterance:
    """One bot answer as it arrived: its audio length and its output transcription."""

    item_id: str
    audio_bytes: int = 0
    text: str = ""
    interrupted: bool = False
    complete: bool = False
    heard_text: str | None = None  # set once truncate() learned what the caller heard
    transcript_final: bool = False

    @property
    def audio_ms(self) -> float:
        return PCM16_24K.duration_ms(self.audio_bytes)


@dataclass(frozen=True, slots=True)
class BargeInNote:
    """What :meth:`LiveEventMapper.truncate` concluded; ``text`` is what to tell the model."""

    item_id: str
    heard_ms: int
    total_ms: float
    heard_text: str
    text: str


def heard_prefix(text: str, heard_ms: float, total_ms: float) -> str:
    """The part of ``text`` spoken in the first ``heard_ms`` of ``total_ms`` of audio.

    An estimate: speech is taken to run at a constant rate, and the cut falls back to the
    last whole word so the note never quotes half a word the caller did not hear."""
    if total_ms <= 0 or heard_ms >= total_ms:
        return text.strip()
    if heard_ms <= 0:
        return ""
    cut = int(len(text) * heard_ms / total_ms)
    if cut < len(text) and not text[cut].isspace():
        cut = text.rfind(" ", 0, cut) + 1
    return text[:cut].strip()


def barge_in_note_text(heard_text: str, heard_ms: int, total_ms: float, has_transcript: bool) -> str:
    """The short user-role note that tells the model what the caller actually heard."""
    heard_s = heard_ms / 1000.0
    if not has_transcript:
        return (
            f"[Call note, not spoken by the caller: the caller interrupted your last answer after "
            f"{heard_s:.1f} of its {total_ms / 1000.0:.1f} seconds and did not hear the rest.]"
        )
    if not heard_text:
        return (
            "[Call note, not spoken by the caller: the caller interrupted you before hearing any of your last answer.]"
        )
    return (
        "[Call note, not spoken by the caller: the caller interrupted your last answer and heard "
        f'only: "{heard_text}". They did not hear the rest.]'
    )


@dataclass(slots=True)
class _CallerTurn:
    text: str = ""
    final: bool = True


def _by_modality(details: list[types.ModalityTokenCount] | None) -> dict[types.MediaModality, int]:
    counts: dict[types.MediaModality, int] = {}
    for detail in details or []:
        if detail.modality is not None:
            counts[detail.modality] = counts.get(detail.modality, 0) + (detail.token_count or 0)
    return counts


@dataclass(slots=True)
class Usage:
    """Running token totals of the session (``usageMetadata``, https://ai.google.dev/api/live)."""

    prompt_tokens: int = 0
    response_tokens: int = 0
    total_tokens: int = 0
    messages: int = 0


class LiveEventMapper:
    """Translates one Gemini Live session's server messages into neutral events.

    Turn model (https://ai.google.dev/api/live, ``BidiGenerateContentServerContent``):
    a bot answer is every ``modelTurn`` part up to ``turnComplete``;
    the SDK's ``receive()`` ends there too. ``interrupted`` arrives before that
    ``turnComplete`` when the caller barges in; it is the only barge-in signal Gemini gives.
    One mapper per session; ``item_prefix`` keeps item ids unique across the sessions of a
    call (renewal opens a new session whose numbering starts again)."""

    def __init__(self, item_prefix: str | None = None) -> None:
        self._prefix = item_prefix or f"gemini-{uuid.uuid4().hex[:8]}"
        self._turns = 0
        self._current: Utterance | None = None
        self._utterances: OrderedDict[str, Utterance] = OrderedDict()
        self._caller = _CallerTurn()
        self._barged_in = False  # a SpeechStarted still waiting for its SpeechStopped
        self.resume_handle: str | None = None
        self.going_away = False  # goAway received: the service will end this connection
        self.pending_tool_calls: dict[str, str] = {}  # call id -> function name
        self.usage = Usage()
        self.tokens = UsageTally(self._prefix)

    @property
    def bot_turns(self) -> int:
        """How many bot answers have started in this session."""
        return self._turns

    # -- server -> events ---------------------------------------------------------------

    def feed(self, raw: types.LiveServerMessage | Mapping[str, Any]) -> list[ProviderEvent]:
        """Events for one server message. Its fields are not mutually exclusive (3.1 bundles
        audio, transcript and ``turnComplete`` in one message), so every field is looked at,
        in the order a listener expects: caller words, barge-in, bot audio/words, turn end."""
        msg = parse_server_message(raw)
        events: list[ProviderEvent] = []
        content = msg.server_content
        if content is not None:
            self._server_content(content, events)
        if msg.tool_call is not None:
            self._tool_call(msg.tool_call, events)
        if msg.tool_call_cancellation is not None:
            self._tool_call_cancellation(msg.tool_call_cancellation)
        if msg.go_away is not None:
            self.going_away = True
            events.append(SessionExpiring("goAway", parse_duration(msg.go_away.time_left)))
        if msg.session_resumption_update is not None:
            update = msg.session_resumption_update
            if update.resumable and update.new_handle:
                self.resume_handle = update.new_handle
        if msg.usage_metadata is not None:
            events.append(self._usage(msg.usage_metadata))
        activity = msg.voice_activity
        if activity is not None and activity.voice_activity_type == types.VoiceActivityType.ACTIVITY_END:
            self._speech_stopped(events)
        return events

    def _speech_stopped(self, events: list[ProviderEvent]) -> None:
        """Pair every barge-in ``SpeechStarted`` with a ``SpeechStopped`` (the renewal policy
        waits for the caller to be quiet). Gemini has no end-of-speech event unless explicit
        VAD signals are on, so the first sign that the caller's turn ended counts: a finished
        input transcription, voice activity end, or the model starting its answer."""
        if self._barged_in:
            self._barged_in = False
            events.append(SpeechStopped())

    def _server_content(self, content: types.LiveServerContent, events: list[ProviderEvent]) -> None:
        if content.input_transcription is not None:
            self._caller_words(content.input_transcription, events)
        if content.interrupted:
            self._interrupted(events)
        if content.model_turn is not None and content.model_turn.parts:
            for part in content.model_turn.parts:
                blob = part.inline_data
                if blob is None or not blob.data:
                    continue  # text/thought parts: native audio models speak, the words come
                    # from outputTranscription
                rate = audio_rate(blob.mime_type)
                if rate != OUTPUT_RATE:
                    raise GeminiProtocolError(
                        f"model audio is {blob.mime_type!r}; this provider declares "
                        f"pcm16@{OUTPUT_RATE} and will not play it at the wrong speed"
                    )
                utterance = self._utterance(events)
                if utterance.interrupted:
                    continue  # late audio of an abandoned answer must not reach the caller
                utterance.audio_bytes += len(blob.data)
                events.append(AudioOut(blob.data, utterance.item_id))
        if content.output_transcription is not None and content.output_transcription.text:
            utterance = self._utterance(events)
            utterance.text += content.output_transcription.text
            events.append(Transcript("bot", content.output_transcription.text, final=False, item_id=utterance.item_id))
        if content.turn_complete:
            self._turn_complete(events)

    def _caller_words(self, transcription: types.Transcription, events: list[ProviderEvent]) -> None:
        if transcription.text:
            self._caller.text += transcription.text
            self._caller.final = False
            events.append(Transcript("caller", transcription.text, final=False))
        if transcription.finished:
            self._finish_caller(events)
            self._speech_stopped(events)

    def _finish_caller(self, events: list[ProviderEvent]) -> None:
        if not self._caller.final and self._caller.text.strip():
            events.append(Transcript("caller", self._caller.text.strip(), final=True))
        self._caller = _CallerTurn()

    def _utterance(self, events: list[ProviderEvent]) -> Utterance:
        """The current bot answer, started at its first audio or transcript fragment. The
        caller's words are final by then: the model only answers once their turn ended."""
        if self._current is None:
            self._speech_stopped(events)
            self._finish_caller(events)
            self._flush_pending_transcripts(events)
            self._turns += 1
            self._current = Utterance(f"{self._prefix}-{self._turns}")
            self._utterances[self._current.item_id] = self._current
            while len(self._utterances) > _KEPT_UTTERANCES:
                self._utterances.popitem(last=False)
        return self._current

    def _interrupted(self, events: list[ProviderEvent]) -> None:
        current = self._current
        if current is None:
            # python-genai #2333: 2.5 native audio may send a stray interrupted:true right
            # after a turnComplete. Nothing is being generated, so there is nothing to cut;
            # passing it on would make the bridge clear audio the caller should still hear.
            log.warning("gemini sent interrupted:true outside a bot turn (python-genai #2333); ignored")
            return
        current.interrupted = True
        self._barged_in = True
        events.append(SpeechStarted(item_id=current.item_id))

    def _turn_complete(self, events: list[ProviderEvent]) -> None:
        current = self._current
        self._current = None
        if current is None:
            self._finish_caller(events)  # a turn without audio (e.g. tool-only turn)
            return
        current.complete = True
        # The final transcript comes before TurnDone: whoever reacts to the end of a turn (the
        # renewal policy snapshots the history then) must find the turn's words already there.
        # An interrupted answer's final transcript waits for truncate() to say what the caller
        # heard; if it never comes (nothing was left to cut) the next turn flushes the full text.
        if not current.interrupted or current.heard_text is not None:
            self._final_bot_transcript(current, events)
        events.append(TurnDone(item_id=current.item_id, interrupted=current.interrupted))

    def _final_bot_transcript(self, utterance: Utterance, events: list[ProviderEvent]) -> None:
        if utterance.transcript_final:
            return
        utterance.transcript_final = True
        text = utterance.heard_text if utterance.heard_text is not None else utterance.text.strip()
        if text:
            events.append(Transcript("bot", text, final=True, item_id=utterance.item_id))

    def _flush_pending_transcripts(self, events: list[ProviderEvent]) -> None:
        for utterance in self._utterances.values():
            if utterance.complete:
                self._final_bot_transcript(utterance, events)

    def flush(self) -> list[ProviderEvent]:
        """Final transcripts still held back; the session calls this when it ends. An answer
        the connection ended in the middle of (a ``goAway`` deadline during playback: the
        service completes a turn only once it would have been played) ends here: what was
        sent of it reaches the caller, so its words go into the call's history and the next
        session (or provider) knows they were said."""
        events: list[ProviderEvent] = []
        self._finish_caller(events)
        if self._current is not None:
            self._turn_complete(events)
        self._flush_pending_transcripts(events)
        return events

    def _tool_call(self, tool_call: types.LiveServerToolCall, events: list[ProviderEvent]) -> None:
        for call in tool_call.function_calls or []:
            if not call.name:
                log.warning("gemini tool call without a function name ignored: %r", logged_text(repr(call)))
                continue
            # The Gemini API always sends an id and requires it back
            # (``FunctionResponse.id``, https://ai.google.dev/api/live); Vertex may
            # omit it, so make one up to keep the neutral call_id unique.
            call_id = call.id or f"call-{uuid.uuid4().hex[:12]}"
            self.pending_tool_calls[call_id] = call.name
            events.append(ToolCall(call_id=call_id, name=call.name, arguments=dict(call.args or {})))

    def _tool_call_cancellation(self, cancellation: types.LiveServerToolCallCancellation) -> None:
        for call_id in cancellation.ids or []:
            name = self.pending_tool_calls.pop(call_id, None)
            log.info("gemini cancelled tool call %s (%s); its result will not be sent", call_id, name)

    def _usage(self, usage: types.UsageMetadata) -> ProviderEvent:
        """Adds one ``usageMetadata`` (``google.genai.types.UsageMetadata``) to the session's
        totals and returns them as the neutral event. Tokens are split by modality from
        ``prompt_tokens_details`` / ``response_tokens_details``; what those leave uncovered
        (some prompt tokens carry no modality) and thinking tokens count as text, which is
        how they are billed."""
        prompt = _by_modality(usage.prompt_tokens_details)
        response = _by_modality(usage.response_tokens_details)
        prompt_audio = prompt.get(types.MediaModality.AUDIO, 0)
        response_audio = response.get(types.MediaModality.AUDIO, 0)
        cached_audio = _by_modality(usage.cache_tokens_details).get(types.MediaModality.AUDIO, 0)
        event = self.tokens.add(
            text_in_tokens=max(0, (usage.prompt_token_count or 0) - prompt_audio),
            audio_in_tokens=prompt_audio,
            cached_text_in_tokens=max(0, (usage.cached_content_token_count or 0) - cached_audio),
            cached_audio_in_tokens=cached_audio,
            text_out_tokens=max(0, (usage.response_token_count or 0) - response_audio)
            + (usage.thoughts_token_count or 0),
            audio_out_tokens=response_audio,
        )
        self.usage.prompt_tokens += usage.prompt_token_count or 0
        self.usage.response_tokens += usage.response_token_count or 0
        self.usage.total_tokens += usage.total_token_count or 0
        self.usage.messages += 1
        log.debug(
            "gemini usage: prompt=%s response=%s total=%s (session total %d)",
            usage.prompt_token_count,
            usage.response_token_count,
            usage.total_token_count,
            self.usage.total_tokens,
        )
        return event

    # -- barge-in ------------------------------------------------------------------------

    def truncate(
        self, item_id: str, heard_ms: int, *, has_transcript: bool = True
    ) -> tuple[BargeInNote | None, list[ProviderEvent]]:
        """Work out what the caller heard of ``item_id``: the note to send the model (None
        when they heard all of it, or the item is unknown) and any final transcript that was
        waiting for this answer."""
        events: list[ProviderEvent] = []
        utterance = self._utterances.get(item_id)
        if utterance is None or utterance.heard_text is not None:
            return None, events
        total_ms = utterance.audio_ms
        heard_ms = max(0, heard_ms)
        utterance.heard_text = heard_prefix(utterance.text, heard_ms, total_ms)
        if utterance.complete:
            self._final_bot_transcript(utterance, events)
        if heard_ms >= total_ms:
            return None, events  # the caller heard it all: nothing to correct
        note = BargeInNote(
            item_id=item_id,
            heard_ms=heard_ms,
            total_ms=total_ms,
            heard_text=utterance.heard_text,
            text=barge_in_note_text(utterance.heard_text, heard_ms, total_ms, has_transcript),
        )
        return note, events


class HeldNote:
    """A barge-in note that waits for the caller's turn to end before it is sent.

    On models whose docs do not say how realtime text is treated during caller activity
    (everything before gemini-3.8-live), a note sent while the caller talks may start an answer
    of its own over the caller. Held here, it goes out once the caller has been quiet for
    ``quiet_ms`` -- shorter than the service's end-of-speech silence, so it reaches the server
    while the caller's turn is still open and is answered together with it. If the model starts
    its next answer first, the turn has ended without it and the note is dropped: a correction
    that arrives mid-answer would start another answer."""

    def __init__(self, text: str, bot_turns: int, *, quiet_ms: float = 200.0, threshold_dbfs: float = -45.0) -> None:
        self.text = text
        self.bot_turns = bot_turns
        self.quiet_ms = quiet_ms
        self.threshold_dbfs = threshold_dbfs
        self._quiet_ms = 0.0

    def caller_audio(self, pcm16: bytes, rate: int) -> bool:
        """Feed caller audio as sent; True once the caller has been quiet long enough."""
        if frame_dbfs(pcm16) > self.threshold_dbfs:
            self._quiet_ms = 0.0
            return False
        self._quiet_ms += len(pcm16) / 2 / rate * 1000.0
        return self._quiet_ms >= self.quiet_ms


class GeminiProtocol:
    """One Gemini Live session as a plain object, in python-websockets' shape.

    Server side: :meth:`receive` each ``LiveServerMessage`` (the SDK's parse, or the wire
    dict), then :meth:`events_received`. Client side: the bridge's requests (:meth:`send_audio`,
    :meth:`send_text`, :meth:`truncate`, :meth:`send_tool_result`) queue typed
    ``google.genai.types.LiveClientMessage`` s, collected with :meth:`data_to_send`; the asyncio
    shell (:mod:`s2s.gemini_live.session`) sends each through the SDK session and touches nothing
    else. What to send, and when, is decided here, so it is tested without sockets."""

    def __init__(self, config: GeminiLiveConfig, ctx: SessionContext, item_prefix: str | None = None) -> None:
        self.config = config
        self.ctx = ctx
        self.model = ctx.model or config.model
        self.mapper = LiveEventMapper(item_prefix)
        self._events: list[ProviderEvent] = []
        self._outbox: list[ClientMessage] = []
        self._held_note: HeldNote | None = None
        # Automatic activity detection off: voicebot marks the caller's turns
        # (s2s.gemini_live.activity), and a barge-in note rides in the turn it concerns.
        self.turns: CallerTurns | None = None
        if not config.automatic_activity_detection:
            self.turns = CallerTurns(
                config.activity_threshold_dbfs,
                START_MS if config.prefix_padding_ms is None else config.prefix_padding_ms,
                END_MS if config.silence_duration_ms is None else config.silence_duration_ms,
            )
        self._turn_note: str | None = None
        # An uninterruptible greeting (ctx.greeting_uninterruptible): see :meth:`open`.
        self._greeting_held = False
        self._held_ms = 0.0
        self._held_texts: list[str] = []

    @property
    def resume_handle(self) -> str | None:
        return self.mapper.resume_handle

    # -- plumbing ---------------------------------------------------------------------------

    def receive(self, message: types.LiveServerMessage | Mapping[str, Any]) -> None:
        """One server message; raises :class:`GeminiProtocolError` for audio it must not play."""
        events = self.mapper.feed(message)
        self._events.extend(events)
        if self._greeting_held and any(isinstance(event, TurnDone) for event in events):
            self._release_greeting()

    def events_received(self) -> list[ProviderEvent]:
        events, self._events = self._events, []
        return events

    def data_to_send(self) -> list[ClientMessage]:
        out, self._outbox = self._outbox, []
        return out

    def end(self) -> None:
        """The session ended: final transcripts still held back become events."""
        self._events.extend(self.mapper.flush())

    def _realtime(self, **fields: Any) -> None:
        self._outbox.append(types.LiveClientMessage(realtime_input=types.LiveClientRealtimeInput(**fields)))

    # -- client side ------------------------------------------------------------------------

    def open(self, plan: Opening) -> None:
        """Replay history / ask for the greeting (:func:`~s2s.gemini_live.setup.opening`)."""
        if plan.seed:
            content = types.LiveClientContent(turns=plan.seed, turn_complete=plan.complete)
            self._outbox.append(types.LiveClientMessage(client_content=content))
        if plan.prompt:
            self.send_text(plan.prompt)
        # activityHandling NO_INTERRUPTION would keep the caller from cutting the greeting, but
        # it is a setup field ("sent in the first (and only in the first)" client message, for
        # the whole connection: https://ai.google.dev/api/live, BidiGenerateContentSetup), so it
        # cannot be dropped once the greeting is over. Holding the caller's input back until the
        # greeting's turn is complete has the same effect for that turn only: with nothing from
        # the caller, neither the service's activity detection nor our activityStart can
        # interrupt it. The bridge then keeps barge-ins off until the greeting has played.
        self._greeting_held = bool(
            self.ctx.greeting_uninterruptible and self.ctx.greeting and not self.ctx.resume_handle
        )

    def _release_greeting(self) -> None:
        self._greeting_held = False
        for text in self._held_texts:
            self.send_text(text)
        self._held_texts = []

    def _greeting_holds(self, pcm16: bytes) -> bool:
        """True while caller audio must be held back from an uninterruptible greeting; never
        longer than :data:`GREETING_HOLD_MAX_MS` of it (a greeting that never ends must not
        deafen the call)."""
        if not self._greeting_held:
            return False
        self._held_ms += PCM16_16K.duration_ms(len(pcm16))
        if self._held_ms < GREETING_HOLD_MAX_MS:
            return True
        log.warning(
            "gemini: %s: the greeting did not finish in %d ms; the caller is heard again",
            self.ctx.call_sid,
            GREETING_HOLD_MAX_MS,
        )
        self._release_greeting()
        return False

    def send_audio(self, pcm16: bytes, level_dbfs: float | None = None) -> None:
        """Caller audio (16 kHz PCM16); a held barge-in note goes out when the caller is quiet.
        ``level_dbfs`` is the frame's level if the caller measured it already (the bridge
        does, at the phone edge); voicebot's own turn detection uses it."""
        if not pcm16 or self._greeting_holds(pcm16):
            return
        if self.turns is not None:
            self._turn_audio(self.turns, pcm16, frame_dbfs(pcm16) if level_dbfs is None else level_dbfs)
            return
        self._outbox.append(CallerAudio(pcm16))
        held = self._held_note
        if held is None:
            return
        if self.mapper.bot_turns != held.bot_turns:
            self._held_note = None  # the model answered without it; too late now
            log.info("gemini: barge-in note for %s dropped: the model answered first", self.ctx.call_sid)
        elif held.caller_audio(pcm16, PCM16_16K.sample_rate):
            self._held_note = None
            self._realtime(text=held.text)

    def _turn_audio(self, turns: CallerTurns, pcm16: bytes, level_dbfs: float) -> None:
        """Caller audio with activity detection off: ``activityStart`` when the caller starts
        (with the speech that opened the turn), their audio, and ``activityEnd`` when they
        stop, after which the model answers. A barge-in note waiting for this turn goes
        just before its end, so the model reads it together with what the caller said."""
        edge, audio = turns.feed(pcm16, PCM16_16K.duration_ms(len(pcm16)), level_dbfs)
        if edge is Edge.START:
            self._realtime(activity_start=types.ActivityStart())
        for chunk in audio:
            self._outbox.append(CallerAudio(chunk))
        if edge is Edge.END:
            if self._turn_note is not None:
                self._realtime(text=self._turn_note)
                self._turn_note = None
            self._realtime(activity_end=types.ActivityEnd())

    def send_text(self, text: str) -> None:
        """Realtime text (DTMF digits, a note) is answered like speech, without the ordering
        and interruption semantics of ``clientContent`` (https://ai.google.dev/api/live).
        With activity detection off, text counts as a turn only inside activity signals: it
        joins the caller's open turn, or makes a turn of its own."""
        if not text:
            return
        if self._greeting_held:
            self._held_texts.append(text)  # keypad input during the greeting: after it
            return
        if self.turns is None or self.turns.speaking:
            self._realtime(text=text)
            return
        self._realtime(activity_start=types.ActivityStart())
        self._realtime(text=text)
        self._realtime(activity_end=types.ActivityEnd())

    def truncate(self, item_id: str, heard_ms: int) -> None:
        """Tell the model what the caller heard of its interrupted answer.

        Gemini has no truncate call and keeps in its context everything it *sent*, which
        streams faster than real time, so after a barge-in it believes the caller heard the
        whole answer. The correction is a one-line note quoting the heard part of the answer's
        output transcription, cut at ``heard_ms / total audio ms`` (:func:`heard_prefix`).

        The bridge calls this right after ``interrupted``, while the caller is talking, and the
        note must never start an answer over the caller:

        - gemini-3.8-live documents ``clientContent`` for the whole session, and that content
          without ``turnComplete`` waits for what follows instead of starting an answer
          (https://ai.google.dev/gemini-api/docs/models/gemini-3.8-live). The note goes at once,
          as a user turn with ``turnComplete=false``, and joins the caller's turn.
        - Earlier models: an incomplete ``clientContent`` stops answers to later realtime audio
          on 2.5 (google-gemini/live-api-web-console#60) and 3.1 closes the socket on it
          (1007); whether realtime text during caller activity starts an answer is not
          documented. So the note is held (:class:`HeldNote`) and sent as realtime text when
          the caller goes quiet, just before the service's own end of turn, or dropped if the
          model answers first.

        Caveats: the cut assumes an even speaking rate; without output transcription the note
        can only give the seconds heard."""
        note, events = self.mapper.truncate(item_id, heard_ms, has_transcript=self.config.output_transcription)
        self._events.extend(events)
        if note is None:
            return
        log.info("gemini: caller heard %d of %.0f ms of %s; telling the model", note.heard_ms, note.total_ms, item_id)
        if client_content_waits(self.model):
            content = types.LiveClientContent(turns=[text_turn("user", note.text)], turn_complete=False)
            self._outbox.append(types.LiveClientMessage(client_content=content))
            return
        if self.turns is not None:
            self._turn_note = note.text  # voicebot ends the turn: the note goes just before
            return
        quiet_ms = 200.0
        if self.config.silence_duration_ms:
            quiet_ms = min(quiet_ms, self.config.silence_duration_ms / 2)
        self._held_note = HeldNote(note.text, self.mapper.bot_turns, quiet_ms=quiet_ms)

    def send_tool_result(self, call_id: str, output: str) -> None:
        name = self.mapper.pending_tool_calls.pop(call_id, None)
        if name is None:
            log.warning("gemini: result for unknown or cancelled tool call %s dropped", call_id)
            return
        try:
            parsed = json.loads(output)
        except ValueError:
            parsed = output
        # FunctionResponse.response must be an object; the id and name tie it to the call.
        response = parsed if isinstance(parsed, dict) else {"output": parsed}
        function_response = types.FunctionResponse(
            id=call_id, name=name, response=response, scheduling=tool_result_scheduling(self.model)
        )
        tool_response = types.LiveClientToolResponse(function_responses=[function_response])
        self._outbox.append(types.LiveClientMessage(tool_response=tool_response))
