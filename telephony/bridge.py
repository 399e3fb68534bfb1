"""The call bridge: moves audio between one Twilio media stream and one provider session.

Two tasks per call and no added buffering. The inbound task reads Twilio frames, decodes
them with the pure :class:`~telephony.media_stream.MediaStreamProtocol`, transcodes caller
audio and hands it to the session. The outbound task drains the session's neutral events,
transcodes bot audio and sends it to Twilio as media + mark pairs, so that the
:class:`~telephony.playout.PlayoutTracker` knows what the caller has actually heard.

Barge-in: on ``SpeechStarted`` while bot audio is queued or playing, ``clear`` goes to
Twilio first, in the same event-loop turn, before anything else is awaited; the interrupted
items' remaining audio is dropped and the provider is told how much was heard.

Full duplex: a session that declares ``playout_lead_ms`` (the model owns turn-taking and
cannot be truncated) gets its bot audio through :class:`~telephony.pacing.PacedPlayout`, a
third task that holds it back so Twilio never queues more than the lead; barge-in drops what
it holds along with Twilio's buffer.

Hold audio: a call given ``hold_audio`` has a :class:`~telephony.hold.HoldPlayer` task that a
waiting tool can start; it yields to bot audio and to the caller's speech, and its marks never
reach the bot's playout tracker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from s2s.call_context import call_sid_var, logged_text
from s2s.closing import CALL_CLOSE_TIMEOUT_S
from s2s.events import (
    AudioOut,
    Closed,
    ProviderError,
    SessionExpiring,
    SpeechStarted,
    ToolCall,
    Transcript,
    TurnDone,
)
from s2s.provider import ProviderSession, Turn
from telephony.bad_frames import BadFrames
from telephony.call_handle import CallHandle, PlayoutSignal
from telephony.call_state import CallOutcome, CallState, CallStateMachine, Direction
from telephony.hold import HoldPlayer
from telephony.local_vad import SpeechOnsetDetector
from telephony.media_stream import (
    Dtmf,
    Mark,
    Media,
    MediaStreamProtocol,
    ProtocolError,
    Stop,
    StreamFrames,
    Unknown,
)
from telephony.observer import AudioSent, CallObserver, TextSent, ToolResultSent, ToTwilio, TruncateSent
from telephony.pacing import PacedPlayout
from telephony.playout import PlayoutTracker
from telephony.transcript import CallTranscript
from transcoding.formats import MULAW_8K
from transcoding.levels import frame_dbfs, mulaw_dbfs
from transcoding.mulaw import mulaw_to_pcm16
from transcoding.pipeline import Transcoder, make_transcoder

log = logging.getLogger(__name__)

# Caller audio that arrives while the provider session is still opening is kept, up to this
# much, and sent once it is up: the caller's first words are not lost, while speech older
# than this would only confuse the provider's turn detection.
PRE_SESSION_AUDIO_MS = 2000
# Bound on deciding, before the stream closes, what Twilio does next (a REST update of the call).
BEFORE_CLOSE_TIMEOUT_S = 6.0


class TwilioSocket(Protocol):
    async def send(self, text: str) -> None: ...

    async def receive(self) -> str | bytes | None:
        """The next frame, or None once the socket is closed."""

    async def close(self, code: int = 1000, reason: str = "") -> None: ...


@dataclass(frozen=True, slots=True)
class CallInfo:
    call_sid: str
    stream_sid: str
    route: str
    caller: str = ""
    called: str = ""
    direction: Direction = "inbound"  # who placed the call: the caller, or we did (outbound)
    base_url: str = ""  # https://host as Twilio reached the stream: callbacks about the call go there


ToolHandler = Callable[[ToolCall, CallHandle], Awaitable[str]]


async def unknown_tool(call: ToolCall, call_handle: CallHandle) -> str:
    log.warning("model called tool %r, but the route has no tools", call.name)
    return json.dumps({"error": f"no tool named {call.name!r}"})


DtmfHandler = Callable[[str, CallHandle], Awaitable[None]]


async def forward_digit(digit: str, call_handle: CallHandle) -> None:
    """Default keypad hook: each key straight to the model. Routes replace it with
    the collector in voicebot.agent, which buffers a sequence first; a hook must not block."""
    await call_handle.say(f"The caller pressed {digit} on the keypad.")


@dataclass(slots=True)
class BargeIn:
    at_ms: float
    item_id: str
    heard_ms: int
    sent_ms: float
    latency_ms: float


@dataclass(slots=True)
class CallSummary:
    call_sid: str
    route: str
    outcome: CallOutcome = CallOutcome.IN_PROGRESS
    transcript: list[Turn] = field(default_factory=list)
    barge_ins: list[BargeIn] = field(default_factory=list)
    bad_frames: int = 0
    started_at: float = field(default_factory=time.monotonic)
    ended_at: float | None = None


class CallBridge:
    def __init__(
        self,
        socket: TwilioSocket,
        protocol: MediaStreamProtocol,
        info: CallInfo,
        open_session: Callable[[Sequence[Turn]], Awaitable[ProviderSession]],
        *,
        outbound_chunk_ms: int = 40,
        local_barge_in: SpeechOnsetDetector | None = None,
        observers: Sequence[CallObserver] = (),
        tool_handler: ToolHandler = unknown_tool,
        dtmf_handler: DtmfHandler = forward_digit,
        resampler: str = "polyphase",
        before_close: Callable[[CallSummary], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        barge_in_held: Callable[[], bool] | None = None,
        hold_audio: bytes | None = None,
    ) -> None:
        self.socket = socket
        self.protocol = protocol
        self.info = info
        # given the call's transcript (the one copy, appended to as the call goes on), which a
        # recovered session is reopened with
        self.open_session = open_session
        self.observers = tuple(observers)
        self.tool_handler = tool_handler
        self.dtmf_handler = dtmf_handler
        self.clock = clock
        # Runs before our side closes the stream, while Twilio still runs <Connect>: the last
        # moment a REST update of the call can replace what Twilio does next.
        self.before_close = before_close
        # True while the caller must hear the bot out (an uninterruptible greeting): barge-ins
        # are ignored, Twilio's buffer is not cleared, nothing is truncated.
        self.barge_in_held = barge_in_held
        self.state = CallStateMachine(info.call_sid)
        self.summary = CallSummary(info.call_sid, info.route)
        self._bad_frames = BadFrames(f"call {info.call_sid}")
        self.transcript = CallTranscript(self.summary.transcript)
        self._playout_signal = PlayoutSignal()
        # Bot audio of a full-duplex session goes through here (see telephony.pacing).
        self._pacer: PacedPlayout | None = None
        self.session: ProviderSession | None = None
        self._outbound_chunk = MULAW_8K.nbytes(outbound_chunk_ms)
        self._frames = StreamFrames(info.stream_sid)
        # Played while a tool waits (telephony.hold); it resumes when bot playout goes idle.
        self.hold = HoldPlayer(hold_audio, self._send, self._frames, self._bot_busy, clock) if hold_audio else None
        self.playout = PlayoutTracker(self._playout_changed)
        # What the tool and keypad hooks get of this call (not the bridge itself).
        self.handle = CallHandle(self, self._playout_signal)
        self._onset = local_barge_in
        self._barge_lock = asyncio.Lock()
        self._resampler = resampler
        self._inbound_tc: Transcoder | None = None
        self._outbound_tc: Transcoder | None = None
        self._pre_session: deque[bytes] = deque()
        self._pre_session_bytes = 0
        self._flushing = False  # sending _pre_session to the session that just opened
        self._dropped_items: set[str] = set()
        self._current_item: str | None = None
        # When the latest ToolCall reached the bridge (clock time). A tool's handler may start
        # later (a busy loop): call control counts the caller's barge-ins from here.
        self.last_tool_call_at: float | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle -----------------------------------------------------------------------

    async def run(self) -> CallSummary:
        call_sid_var.set(self.info.call_sid)
        inbound = asyncio.create_task(self._inbound(), name=f"inbound-{self.info.call_sid}")
        outbound: asyncio.Task[None] | None = None
        try:
            opener: asyncio.Future[ProviderSession] = asyncio.ensure_future(self.open_session(self.transcript.turns))
            await asyncio.wait([inbound, opener], return_when=asyncio.FIRST_COMPLETED)  # type: ignore[type-var]
            if not opener.done():  # caller hung up while the provider was connecting
                opener.cancel()
                self._end(CallOutcome.CALLER_HANGUP)
                await asyncio.gather(opener, return_exceptions=True)
                return self.summary
            try:
                self.session = opener.result()
            except Exception as exc:
                log.error(
                    "call %s: no provider session could be opened (%s); ending the stream", self.info.call_sid, exc
                )
                self._end(CallOutcome.PROVIDER_UNAVAILABLE)
                return self.summary
            for observer in self.observers:
                observer.session_opened(self.session)
            if self.state.ended:  # hung up (drain, time limit) while the session opened
                return self.summary
            self.state.to(CallState.STREAMING)
            await self._flush_pre_session_audio()
            if self.hold is not None:
                self._spawn(self.hold.run())
            outbound = asyncio.create_task(self._outbound(), name=f"outbound-{self.info.call_sid}")
            await asyncio.wait({inbound, outbound}, return_when=asyncio.FIRST_COMPLETED)
            if inbound.done():
                self._end(CallOutcome.CALLER_HANGUP)
        finally:
            await self._teardown(inbound, outbound)
        return self.summary

    def _end(self, outcome: CallOutcome) -> None:
        """The state machine decides; the first outcome is the call's."""
        if self.state.end(outcome):
            self.summary.outcome = outcome

    def ending(self, outcome: CallOutcome) -> None:
        """Say why the call is about to end, before its stream closes (e.g. the server is
        stopping): the first outcome named wins over the caller-hangup a closed stream means."""
        self._end(outcome)

    async def hang_up(self, outcome: CallOutcome) -> None:
        """End the call from our side: closing the stream makes Twilio run the TwiML after
        ``<Connect>``, which asks the server what to do next (see telephony.webhook)."""
        self._end(outcome)
        await self.socket.close(1000, outcome.value)

    async def _teardown(self, inbound: asyncio.Task[None], outbound: asyncio.Task[None] | None) -> None:
        self.state.close()
        self._bad_frames.report()
        for task in (inbound, outbound, *self._tasks):
            if task is not None and not task.done():
                task.cancel()
        await asyncio.gather(*(t for t in (inbound, outbound, *self._tasks) if t is not None), return_exceptions=True)
        if self._onset is not None:
            self._onset.reset()  # a neural VAD's model goes back to the pool
        if self.session is not None:
            try:
                await asyncio.wait_for(self.session.close(), CALL_CLOSE_TIMEOUT_S)
            except Exception as exc:
                log.warning("call %s: provider session did not close cleanly: %r", self.info.call_sid, exc)
        if self.before_close is not None:
            try:
                await asyncio.wait_for(self.before_close(self.summary), BEFORE_CLOSE_TIMEOUT_S)
            except Exception as exc:
                log.error("call %s: deciding what Twilio does next failed: %r", self.info.call_sid, exc)
        with contextlib.suppress(Exception):  # already closed by Twilio
            await self.socket.close(1000, self.summary.outcome.value)
        self.summary.ended_at = self.clock()
        turns = " | ".join(f"{t.role}: {t.text}" for t in self.summary.transcript)
        log.info(
            "%s call %s ended: %s after %.1f s; %d barge-in(s); %d transcript turn(s): %s",
            self.info.direction,
            self.info.call_sid,
            self.summary.outcome,
            self.summary.ended_at - self.summary.started_at,
            len(self.summary.barge_ins),
            len(self.summary.transcript),
            logged_text(turns) or "(none)",
        )
        for observer in self.observers:
            observer.call_ended(self.summary)

    # -- Twilio -> provider ----------------------------------------------------------------

    async def _inbound(self) -> None:
        while True:
            frame = await self.socket.receive()
            if frame is None:
                return
            try:
                event = self.protocol.receive(frame)
            except ProtocolError as exc:
                for observer in self.observers:
                    observer.twilio_in(frame, None)
                ended = self._bad_frames.note(exc)
                self.summary.bad_frames = self._bad_frames.count
                if ended:
                    self._end(CallOutcome.PROTOCOL_ERROR)
                    return
                continue
            for observer in self.observers:
                observer.twilio_in(frame, event)
            if isinstance(event, Media):
                await self._caller_audio(event.payload)
            elif isinstance(event, Mark):
                now = self.clock()
                if not self.playout.echoed(event.name, now) and self.hold is not None:
                    self.hold.echoed(event.name, now)
                if self._pacer is not None:
                    self._pacer.played()
            elif isinstance(event, Dtmf):
                await self.dtmf_handler(event.digit, self.handle)
            elif isinstance(event, Stop):
                self._end(CallOutcome.CALLER_HANGUP)
                return
            elif isinstance(event, Unknown):
                log.debug("call %s: ignoring unknown Twilio event %r", self.info.call_sid, event.event)

    async def _caller_audio(self, mulaw: bytes) -> None:
        # One decode and level measurement per caller frame, shared by the local barge-in
        # detector (and its neural VAD) and the recovery layer's watchdog (send_caller_frame).
        pcm = mulaw_to_pcm16(mulaw)
        level = frame_dbfs(pcm)
        if self._onset is not None:
            if not (self.playout.pending or (self.hold is not None and self.hold.sounding)):
                self._onset.reset()
            elif self._onset.feed(pcm, level, MULAW_8K.duration_ms(len(mulaw))):
                log.info("call %s: caller speech over bot audio detected at the phone edge", self.info.call_sid)
                await self._barge_in()
        session = self.session
        if session is None or self._flushing:
            self._pre_session.append(mulaw)
            self._pre_session_bytes += len(mulaw)
            while self._pre_session_bytes > MULAW_8K.nbytes(PRE_SESSION_AUDIO_MS):
                self._pre_session_bytes -= len(self._pre_session.popleft())
            return
        await self._forward(session, mulaw, level)

    async def _forward(self, session: ProviderSession, mulaw: bytes, level: float) -> None:
        tc = self._inbound_tc
        if tc is None or tc.dst != session.input_format:
            tc = self._inbound_tc = make_transcoder(MULAW_8K, session.input_format, self._resampler)
        audio = tc.convert(mulaw)
        if audio:
            if self.observers:
                sent = AudioSent(audio)
                for observer in self.observers:
                    observer.provider_out(sent)
            await session.send_caller_frame(audio, level)

    def drop_pre_session_audio(self) -> None:
        """Forget the caller audio kept while the session opens: an outbound call's is the
        callee's "Hello?" that answering-machine detection listened to, which the greeting
        answers; sent late it would only interrupt the greeting."""
        self._pre_session.clear()
        self._pre_session_bytes = 0

    async def _flush_pre_session_audio(self) -> None:
        """Send the kept audio in order. Frames that arrive meanwhile queue behind it: sent
        straight away they would overtake it (each send awaits), and the provider would hear
        the caller's words shuffled."""
        assert self.session is not None
        self._flushing = True
        try:
            while self._pre_session:
                mulaw = self._pre_session.popleft()
                self._pre_session_bytes -= len(mulaw)
                await self._forward(self.session, mulaw, mulaw_dbfs(mulaw))
        finally:
            self._flushing = False

    async def send_text(self, text: str) -> None:
        if self.session is not None:
            for observer in self.observers:
                observer.provider_out(TextSent(text))
            await self.session.send_text(text)

    # -- provider -> Twilio ----------------------------------------------------------------

    async def _outbound(self) -> None:
        assert self.session is not None
        async for event in self.session.events():
            for observer in self.observers:
                observer.provider_in(event)
            if isinstance(event, AudioOut):
                await self._bot_audio(event)
            elif isinstance(event, SpeechStarted):
                await self._barge_in()
            elif isinstance(event, TurnDone):
                await self._turn_done(event)
            elif isinstance(event, Transcript):
                self.transcript.add(event)
            elif isinstance(event, ToolCall):
                self.last_tool_call_at = self.clock()
                self._spawn(self._run_tool(event))
            elif isinstance(event, ProviderError):
                level = logging.ERROR if event.fatal else logging.WARNING
                log.log(level, "call %s: provider error %s: %s", self.info.call_sid, event.code, event.message)
            elif isinstance(event, SessionExpiring):
                log.info("call %s: provider session expiring (%s)", self.info.call_sid, event.reason)
            elif isinstance(event, Closed):
                if event.error:
                    log.error("call %s: provider session lost: %s", self.info.call_sid, event.reason)
                    self._end(CallOutcome.PROVIDER_LOST)
                else:
                    self._end(CallOutcome.PROVIDER_CLOSED)
                return

    async def _bot_audio(self, event: AudioOut) -> None:
        if event.item_id in self._dropped_items:
            return
        assert self.session is not None
        tc = self._outbound_tc
        if tc is None or tc.src != self.session.output_format:
            tc = self._outbound_tc = make_transcoder(self.session.output_format, MULAW_8K, self._resampler)
        if self.state.state is CallState.INTERRUPTED:
            self.state.to(CallState.STREAMING)
        self._current_item = event.item_id
        await self._send_mulaw(tc.convert(event.audio), event.item_id)

    async def _send_mulaw(self, mulaw: bytes, item_id: str) -> None:
        if self.hold is not None and self.hold.wanted:
            async with self.hold.bot_speaking():  # queued hold audio is cleared first
                await self._send_bot_mulaw(mulaw, item_id)
            return
        await self._send_bot_mulaw(mulaw, item_id)

    async def _send_bot_mulaw(self, mulaw: bytes, item_id: str) -> None:
        pacer = self._paced_playout()
        if pacer is not None:
            pacer.push(mulaw, item_id)
            return
        for start in range(0, len(mulaw), self._outbound_chunk):
            await self._send_chunk(mulaw[start : start + self._outbound_chunk], item_id)

    async def _send_chunk(self, chunk: bytes, item_id: str) -> None:
        if item_id in self._dropped_items:
            return  # a barge-in happened while this audio was going out
        mark = self.playout.sent(item_id, MULAW_8K.duration_ms(len(chunk)), self.clock())
        await self._send(ToTwilio.MEDIA, self._frames.media(chunk))
        await self._send(ToTwilio.MARK, self._frames.mark(mark))

    def _bot_busy(self) -> bool:
        """Bot audio is queued at Twilio or held by the pacer: no hold audio now."""
        return self.playout.pending or (self._pacer is not None and self._pacer.backlog_ms > 0)

    def _playout_changed(self) -> None:
        """Bot playout went queued <-> idle (or was cleared): wake the handle's waiters and
        the hold player."""
        self._playout_signal()
        if self.hold is not None:
            self.hold.wake()

    def _paced_playout(self) -> PacedPlayout | None:
        """The pacer when the session is full duplex (it declares a playout lead), else None;
        after a fallback to a half-duplex provider audio goes straight out again."""
        lead_ms = self.session.playout_lead_ms if self.session is not None else None
        if lead_ms is None:
            return None
        if self._pacer is None:
            self._pacer = PacedPlayout(self.playout, self._send_chunk, lead_ms)
            self._spawn(self._pacer.run())
        return self._pacer

    async def _turn_done(self, event: TurnDone) -> None:
        item = event.item_id or self._current_item
        if item == self._current_item:
            self._current_item = None  # finished: only its queued audio can still be cut
        if self._outbound_tc is None:
            return
        if event.interrupted or item is None or item in self._dropped_items:
            self._outbound_tc.reset()
            return
        tail = self._outbound_tc.flush()
        if tail:
            await self._send_mulaw(tail, item)

    async def _barge_in(self) -> None:
        """Runs from the outbound task (provider's signal) and the inbound task (local
        detector); the lock makes the second of two near-simultaneous triggers a no-op."""
        if self.hold is not None:
            await self.hold.caller_spoke()
        async with self._barge_lock:
            await self._barge_in_locked()

    async def _barge_in_locked(self) -> None:
        if self.session is None or (self.barge_in_held is not None and self.barge_in_held()):
            return
        started = self.clock()
        items = self.playout.pending_items()
        held = self._pacer.drop() if self._pacer is not None else {}
        if items:
            await self._send(ToTwilio.CLEAR, self._frames.clear)
        now = self.clock()
        items.extend(item for item in held if item not in items)
        current = self._current_item
        self._current_item = None
        if current is not None:
            # Audio of the answer being generated may still be in flight: it must not play.
            self._dropped_items.add(current)
            if current not in items and self.playout.sent_ms(current) > 0:
                # Twilio's buffer ran dry mid-answer (a provider streaming at about real
                # time): the caller heard all that was sent, and the provider must stop there.
                items.append(current)
        if not items:
            return
        heard = {item: self.playout.heard_ms(item, now) for item in items}
        # What the provider produced: sent to Twilio plus what the pacer held back.
        sent = {item: self.playout.sent_ms(item) + held.get(item, 0.0) for item in items}
        self.playout.clear()
        self._dropped_items.update(items)
        if self._outbound_tc is not None:
            self._outbound_tc.reset()
        if self.state.state is CallState.STREAMING:
            self.state.to(CallState.INTERRUPTED)
        latency_ms = (now - started) * 1000.0
        for item in items:
            heard_ms = int(heard[item])
            self.transcript.interrupted(item, heard[item], sent[item])
            self.summary.barge_ins.append(
                BargeIn((now - self.summary.started_at) * 1000.0, item, heard_ms, sent[item], latency_ms)
            )
            for observer in self.observers:
                observer.barge_in(item, heard[item], sent[item], latency_ms)
                observer.provider_out(TruncateSent(item, heard_ms))
            log.info(
                "call %s: barge-in; caller heard %d of %.0f ms of %s", self.info.call_sid, heard_ms, sent[item], item
            )
            await self.session.truncate(item, heard_ms)

    async def _run_tool(self, call: ToolCall) -> None:
        try:
            output = await self.tool_handler(call, self.handle)
        except Exception as exc:
            log.exception("call %s: tool %s failed", self.info.call_sid, call.name)
            output = json.dumps({"error": f"{type(exc).__name__}: {exc}"})
        if self.session is not None:
            for observer in self.observers:
                observer.provider_out(ToolResultSent(call.call_id, output))
            await self.session.send_tool_result(call.call_id, output)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, kind: ToTwilio, frame: str) -> None:
        for observer in self.observers:
            observer.twilio_out(kind, frame)
        await self.socket.send(frame)
