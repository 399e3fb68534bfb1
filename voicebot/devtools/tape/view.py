"""What a call sounded like, derived from a tape: turns, barge-ins, the mark/clear sequence,
transcripts and the two audio tracks.

The bot track is rebuilt the way Twilio plays it
(https://www.twilio.com/docs/voice/media-streams/websocket-messages#mark-message): media
frames queue and play back to back in real time from when they arrive, and ``clear`` drops
whatever has not played yet. That makes the same view computable from a server-side tape and
from a caller-side one, so a replay can be compared with its original either way.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from dataclasses import dataclass, field

from s2s.events import AudioOut, Transcript, TurnDone
from s2s.provider import Turn
from voicebot.devtools.tape.format import BargeInRecord, CallEnd, ProviderIn, ProviderOut, Tape, TwilioFrame

MULAW_SILENCE = b"\xff"
BYTES_PER_MS = 8  # 8 kHz mu-law
# On a caller-side tape there are no item ids: bot audio that arrives after Twilio's buffer
# has been empty this long starts a new turn. Providers stream answers faster than real time,
# so a gap inside one answer is far shorter than the caller's turn between two answers.
TURN_GAP_MS = 250.0


@dataclass(slots=True)
class TurnView:
    """One bot answer as the caller got it. ``start_ms`` is when it began to play."""

    start_ms: float
    sent_ms: float = 0.0
    heard_ms: float = 0.0
    interrupted: bool = False
    item_id: str | None = None


@dataclass(frozen=True, slots=True)
class BargeInView:
    at_ms: float
    heard_ms: float
    sent_ms: float
    item_id: str | None = None


@dataclass(slots=True)
class CallView:
    side: str
    turns: list[TurnView] = field(default_factory=list)
    barge_ins: list[BargeInView] = field(default_factory=list)
    control: list[tuple[str, int]] = field(default_factory=list)
    """Runs of the server's control frames: ``("marks", n)`` and ``("clear", 1)``."""
    transcript: list[Turn] = field(default_factory=list)
    provider_text: list[str] = field(default_factory=list)
    dtmf: list[str] = field(default_factory=list)
    outcome: str | None = None
    bad_frames: int = 0
    """frames from Twilio the server could not parse"""
    caller_audio: bytes = b""
    heard_audio: bytes = b""
    duration_ms: float = 0.0

    @property
    def clears(self) -> int:
        return sum(n for kind, n in self.control if kind == "clear")


def _place(track: bytearray, at_ms: float, audio: bytes) -> None:
    offset = round(at_ms * BYTES_PER_MS)
    if len(track) < offset:
        track += MULAW_SILENCE * (offset - len(track))
    track[offset : offset + len(audio)] = audio


def media_payload(msg: dict[str, object]) -> bytes | None:
    """The audio of a ``media`` frame; None if the frame is malformed."""
    media = msg.get("media")
    payload = media.get("payload") if isinstance(media, dict) else None
    if not isinstance(payload, str):
        return None
    try:
        return base64.b64decode(payload, validate=True)
    except binascii.Error:
        return None


def _payload(msg: dict[str, object]) -> bytes:
    return media_payload(msg) or b""


class _Playout:
    """Twilio's outbound buffer, replayed from the frames' arrival times."""

    def __init__(self, by_item: bool) -> None:
        self.by_item = by_item
        self.track = bytearray()
        self.play_end = 0.0
        self.turns: list[TurnView] = []
        self.current: TurnView | None = None
        self.item: str | None = None

    def media(self, t: float, audio: bytes) -> None:
        start = max(t, self.play_end)
        new_turn = self.current is None or (
            self.item != self.current.item_id if self.by_item else t > self.play_end + TURN_GAP_MS
        )
        if new_turn:
            self.current = TurnView(start_ms=start, item_id=self.item if self.by_item else None)
            self.turns.append(self.current)
        assert self.current is not None
        ms = len(audio) / BYTES_PER_MS
        _place(self.track, start, audio)
        self.play_end = start + ms
        self.current.sent_ms += ms
        self.current.heard_ms += ms

    def cut(self, t: float) -> float:
        """Stop playback at ``t`` (a clear or the end of the call); returns the ms dropped."""
        unplayed = max(0.0, self.play_end - t)
        if unplayed and self.current is not None:
            self.current.heard_ms = max(0.0, self.current.heard_ms - unplayed)
            del self.track[round(t * BYTES_PER_MS) :]
        self.play_end = min(self.play_end, t)
        return unplayed


def view_of(tape: Tape, by_item: bool | None = None, time_scale: float = 1.0) -> CallView:
    """Build the view. ``by_item`` splits turns by the provider's item ids (server tapes);
    by default it is used whenever the tape has the provider side. ``time_scale`` maps the
    tape's clock to the stream clock: a tape recorded during a replay at ``--speed 4`` ran
    four times faster than the audio it carries."""
    if by_item is None:
        by_item = tape.has_provider_side()
    view = CallView(side=tape.header.side, duration_ms=tape.duration_ms * time_scale)
    playout = _Playout(by_item)
    caller = bytearray()
    server_barge_ins: list[BargeInView] = []
    transcript: list[Turn] = []
    for original in tape.records:
        record = dataclasses.replace(original, t=original.t * time_scale) if time_scale != 1.0 else original
        if isinstance(record, TwilioFrame):
            msg = record.message()
            event = msg.get("event") if msg else None
            if msg is None:
                continue
            if record.direction == "in":
                if event == "media":
                    media = msg.get("media")
                    stamp = media.get("timestamp") if isinstance(media, dict) else None
                    at = float(stamp) if isinstance(stamp, str | int | float) and str(stamp).isdigit() else record.t
                    _place(caller, at, _payload(msg))
                elif event == "dtmf":
                    dtmf = msg.get("dtmf")
                    view.dtmf.append(str(dtmf.get("digit", "")) if isinstance(dtmf, dict) else "")
            elif event == "media":
                playout.media(record.t, _payload(msg))
            elif event == "mark":
                if view.control and view.control[-1][0] == "marks":
                    view.control[-1] = ("marks", view.control[-1][1] + 1)
                else:
                    view.control.append(("marks", 1))
            elif event == "clear":
                view.control.append(("clear", 1))
                turn = playout.current
                playout.cut(record.t)
                if turn is not None:
                    turn.interrupted = True
                    if not tape.has_provider_side():
                        view.barge_ins.append(BargeInView(record.t, turn.heard_ms, turn.sent_ms))
                playout.current = None
        elif isinstance(record, ProviderIn):
            event_in = record.event
            if isinstance(event_in, AudioOut | TurnDone) and event_in.item_id:
                playout.item = event_in.item_id
            elif isinstance(event_in, Transcript) and event_in.final and event_in.text.strip():
                transcript.append(Turn(event_in.role, event_in.text.strip()))
        elif isinstance(record, ProviderOut) and record.kind == "text":
            view.provider_text.append(record.text)
        elif isinstance(record, BargeInRecord):
            server_barge_ins.append(BargeInView(record.t, record.heard_ms, record.sent_ms, record.item_id))
        elif isinstance(record, CallEnd):
            view.outcome = record.outcome
            view.bad_frames = record.bad_frames
            if record.transcript:
                transcript = list(record.transcript)
    playout.cut(view.duration_ms)
    if server_barge_ins:
        view.barge_ins = server_barge_ins
    view.turns = playout.turns
    view.transcript = transcript
    view.caller_audio = bytes(caller)
    view.heard_audio = bytes(playout.track)
    return view
