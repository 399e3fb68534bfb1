"""The call tape line format, version 1 (documented in docs/call-tape.md).

A tape is JSON Lines: a header object on line 1, then one record per line, each with ``t``
(ms since the media stream started, monotonic clock) and ``k`` (the record kind). Records are
typed here and nowhere else: :func:`encode_record` / :func:`decode_record` are the only code
that knows the JSON layout, so the recorder, the replay provider and the comparison all work
on the dataclasses below.

Reading is strict and names the line: a cut-off last line, a line that is not JSON, an unknown
record kind, bad base64 or a wrong version all raise :class:`TapeError` with ``path:line``.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from s2s import events as ev
from s2s.errors import VoicebotError
from s2s.events import ProviderEvent
from s2s.provider import Turn
from telephony.call_state import Direction as CallDirection
from transcoding.formats import AudioFormat
from voicebot.privacy.redaction import NO_REDACTION, Redactor, redact_json

TAPE_MAGIC = "voicebot-call-tape"
TAPE_VERSION = 1
REDACTED = "[redacted]"
# customParameters of a Media Streams 'start' frame that must never reach disk: the stream
# token is a one-time credential for the media WebSocket (telephony.webhook).
SECRET_STREAM_PARAMETERS = frozenset({"token"})

Side = Literal["server", "caller"]
Direction = Literal["in", "out"]  # seen from the server: in = Twilio -> voicebot


class TapeError(VoicebotError, ValueError):
    """A tape that cannot be read; the message names the file and line."""

    def __init__(self, path: str | Path, line: int, problem: str) -> None:
        super().__init__(f"{path}:{line}: {problem}")
        self.path = str(path)
        self.line = line
        self.problem = problem


@dataclass(frozen=True, slots=True)
class TapeHeader:
    call_sid: str
    side: Side = "server"
    direction: CallDirection = "inbound"
    route: str = ""
    providers: tuple[str, ...] = ()
    recorded_at: str = ""
    version: int = TAPE_VERSION
    # What the recorder left out (TapePrivacy): the kinds of personal data masked in text,
    # whether the caller's audio was kept (else silence of the same length stands in),
    # whether keypad digits were masked. Absent from the header when nothing was.
    redacted: tuple[str, ...] = ()
    caller_audio: bool = True
    keypad_masked: bool = False


# A masked keypad digit on a tape: not a key a phone has, so it cannot be mistaken for one.
MASKED_DIGIT = "X"
_SECRET_KEYS = frozenset("0123456789ABCDabcd")
_SILENCE_BYTE = {"mulaw": b"\xff", "pcm16": b"\x00"}


@dataclass(frozen=True, slots=True)
class TapePrivacy:
    """What a tape must not hold, applied by :func:`encode_record` (on the writer thread, so
    the call's audio path pays nothing): text masked by the route's redactor, the caller's
    audio replaced by silence of the same length (timing and amounts stay, so a replay
    still serves the provider side in step), keypad digits masked."""

    redact: Redactor = NO_REDACTION
    caller_audio: bool = True
    keypad_masked: bool = False

    def header_fields(self) -> dict[str, Any]:
        return {"redacted": self.redact.names, "caller_audio": self.caller_audio, "keypad_masked": self.keypad_masked}


KEEP_ALL = TapePrivacy()


def left_out(header: TapeHeader) -> list[str]:
    """What the recorder kept off this tape, in words (``tape view``, ``replay``, the call page)."""
    notes = []
    if not header.caller_audio:
        notes.append("the caller's audio (silence of the same length stands in)")
    if header.keypad_masked:
        notes.append(f"keypad digits (shown as {MASKED_DIGIT})")
    if header.redacted:
        notes.append("personal data in text: " + ", ".join(header.redacted))
    return notes


def silence_like(audio: bytes, fmt: AudioFormat | None) -> bytes:
    """Silence as long as ``audio`` in ``fmt`` (mu-law when unknown)."""
    return _SILENCE_BYTE.get(fmt.encoding if fmt is not None else "mulaw", b"\xff") * len(audio)


@dataclass(frozen=True, slots=True)
class TwilioFrame:
    """A Media Streams frame, ``in`` (Twilio -> voicebot) or ``out``. ``frame`` is the text
    as sent; a frame that was not a JSON object (bad input) is kept verbatim."""

    t: float
    direction: Direction
    frame: str | bytes

    def message(self) -> dict[str, Any] | None:
        try:
            msg = json.loads(self.frame)
        except (ValueError, UnicodeDecodeError, RecursionError):  # bad input is kept verbatim
            return None
        return msg if isinstance(msg, dict) else None


@dataclass(frozen=True, slots=True)
class SessionOpened:
    t: float
    input_format: AudioFormat
    output_format: AudioFormat
    playout_lead_ms: int | None = None  # a full-duplex session's paced playout (ProviderSession)


@dataclass(frozen=True, slots=True)
class ProviderIn:
    t: float
    event: ProviderEvent


ProviderOutKind = Literal["audio", "text", "truncate", "tool_result"]


@dataclass(frozen=True, slots=True)
class ProviderOut:
    """What the bridge sent the provider; which fields matter depends on ``kind``."""

    t: float
    kind: ProviderOutKind
    audio: bytes = b""
    text: str = ""
    item_id: str = ""
    heard_ms: int = 0
    call_id: str = ""
    output: str = ""


@dataclass(frozen=True, slots=True)
class BargeInRecord:
    t: float
    item_id: str
    heard_ms: float
    sent_ms: float
    latency_ms: float


@dataclass(frozen=True, slots=True)
class CallEnd:
    t: float
    outcome: str
    transcript: tuple[Turn, ...] = ()
    bad_frames: int = 0
    dropped_records: int = 0
    # what the call's providers were used for and what it cost (voicebot.calls.cost); a
    # tape from before cost accounting, or from the simulated caller, has none
    usage: dict[str, Any] | None = None


Record = TwilioFrame | SessionOpened | ProviderIn | ProviderOut | BargeInRecord | CallEnd


@dataclass(slots=True)
class Tape:
    path: str
    header: TapeHeader
    records: list[Record] = field(default_factory=list)

    @property
    def end(self) -> CallEnd | None:
        last = self.records[-1] if self.records else None
        return last if isinstance(last, CallEnd) else None

    @property
    def complete(self) -> bool:
        """The call's end was recorded (a tape cut by a crash has no ``end`` record)."""
        return self.end is not None

    @property
    def duration_ms(self) -> float:
        return self.records[-1].t if self.records else 0.0

    def has_provider_side(self) -> bool:
        return any(isinstance(r, SessionOpened | ProviderIn) for r in self.records)


# -- encoding -----------------------------------------------------------------------------

_EVENT_TYPES: dict[str, type[Any]] = {
    cls.__name__: cls
    for cls in (
        ev.AudioOut,
        ev.SpeechStarted,
        ev.SpeechStopped,
        ev.Transcript,
        ev.ToolCall,
        ev.TurnDone,
        ev.ProviderError,
        ev.SessionExpiring,
        ev.Usage,
        ev.Closed,
    )
}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def format_name(fmt: AudioFormat) -> str:
    return f"{fmt.encoding}@{fmt.sample_rate}"


def parse_format(name: str) -> AudioFormat:
    encoding, _, rate = name.partition("@")
    if encoding not in ("mulaw", "pcm16") or not rate.isdigit():
        raise ValueError(f"bad audio format {name!r} (want e.g. 'pcm16@24000')")
    return AudioFormat(encoding, int(rate))  # type: ignore[arg-type]


def _private_twilio_message(msg: dict[str, Any], privacy: TapePrivacy) -> dict[str, Any]:
    """A frame from Twilio as the tape may keep it: the caller's audio as silence, keypad
    digits masked."""
    event = msg.get("event")
    if event == "media" and not privacy.caller_audio and isinstance(msg.get("media"), dict):
        media = dict(msg["media"])
        try:
            length = len(base64.b64decode(str(media.get("payload", "")), validate=True))
        except binascii.Error:
            length = 0
        media["payload"] = _b64(b"\xff" * length)
        return {**msg, "media": media}
    if event == "dtmf" and privacy.keypad_masked and isinstance(msg.get("dtmf"), dict):
        dtmf = dict(msg["dtmf"])
        if str(dtmf.get("digit", "")) in _SECRET_KEYS:
            dtmf["digit"] = MASKED_DIGIT
        return {**msg, "dtmf": dtmf}
    return msg


def _private_json_text(text: str, redact: Redactor) -> str:
    """A JSON document held as text (a tool's output), masked field by field when it parses."""
    if not redact:
        return text
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return redact(text)
    return json.dumps(redact_json(value, redact), ensure_ascii=False)


def _private_event(event: ProviderEvent, redact: Redactor) -> ProviderEvent:
    """What of a provider event may quote the call's words, masked."""
    if not redact:
        return event
    if isinstance(event, ev.Transcript):
        # A partial transcript is a piece (a delta): a number split across pieces cannot be
        # masked piece by piece, so pieces are written empty; the final one carries the whole
        # text, masked. Nothing reads a piece back (the bridge and the view use finals).
        return dataclasses.replace(event, text=redact(event.text) if event.final else "")
    if isinstance(event, ev.ToolCall):
        return dataclasses.replace(event, arguments=redact_json(event.arguments, redact))
    if isinstance(event, ev.ProviderError):
        return dataclasses.replace(event, message=redact(event.message))
    if isinstance(event, ev.Closed):
        return dataclasses.replace(event, reason=redact(event.reason))
    return event


def redact_twilio_message(msg: dict[str, Any]) -> dict[str, Any]:
    """Drop credentials from a Twilio frame before it is written."""
    if msg.get("event") != "start" or not isinstance(msg.get("start"), dict):
        return msg
    start = dict(msg["start"])
    params = start.get("customParameters")
    if isinstance(params, dict):
        start["customParameters"] = {k: (REDACTED if k in SECRET_STREAM_PARAMETERS else v) for k, v in params.items()}
    return {**msg, "start": start}


def encode_header(header: TapeHeader) -> dict[str, Any]:
    out: dict[str, Any] = {
        "tape": TAPE_MAGIC,
        "version": header.version,
        "side": header.side,
        "direction": header.direction,
        "call_sid": header.call_sid,
        "route": header.route,
        "providers": list(header.providers),
        "recorded_at": header.recorded_at,
    }
    if header.redacted:
        out["redacted"] = list(header.redacted)
    if not header.caller_audio:
        out["caller_audio"] = False
    if header.keypad_masked:
        out["keypad_masked"] = True
    return out


def encode_record(
    record: Record, privacy: TapePrivacy = KEEP_ALL, input_format: AudioFormat | None = None
) -> dict[str, Any]:
    """``record`` as its JSON object, with what ``privacy`` keeps off the tape left out;
    ``input_format``: the session's input format when ``record`` was made (for silence)."""
    out: dict[str, Any] = {"t": round(record.t, 1)}
    if isinstance(record, TwilioFrame):
        out["k"] = f"twilio_{record.direction}"
        msg = record.message()
        if msg is not None:
            msg = redact_twilio_message(msg)
            out["msg"] = _private_twilio_message(msg, privacy) if record.direction == "in" else msg
        elif isinstance(record.frame, bytes):
            out["raw_b64"] = _b64(record.frame)
        else:
            out["raw"] = privacy.redact(record.frame)
    elif isinstance(record, SessionOpened):
        out.update(k="session", input=format_name(record.input_format), output=format_name(record.output_format))
        if record.playout_lead_ms is not None:
            out["lead_ms"] = record.playout_lead_ms
    elif isinstance(record, ProviderIn):
        out["k"] = "provider_in"
        event = _private_event(record.event, privacy.redact)
        out["event"] = type(event).__name__
        for f in dataclasses.fields(event):
            value = getattr(event, f.name)
            out[f.name] = _b64(value) if isinstance(value, bytes) else value
    elif isinstance(record, ProviderOut):
        out.update(k="provider_out", kind=record.kind)
        if record.kind == "audio":
            audio = record.audio if privacy.caller_audio else silence_like(record.audio, input_format)
            out["audio"] = _b64(audio)
        elif record.kind == "text":
            out["text"] = privacy.redact(record.text)
        elif record.kind == "truncate":
            out.update(item_id=record.item_id, heard_ms=record.heard_ms)
        else:
            out.update(call_id=record.call_id, output=_private_json_text(record.output, privacy.redact))
    elif isinstance(record, BargeInRecord):
        out.update(
            k="barge_in",
            item_id=record.item_id,
            heard_ms=round(record.heard_ms, 1),
            sent_ms=round(record.sent_ms, 1),
            latency_ms=round(record.latency_ms, 2),
        )
    else:
        out.update(
            k="end",
            outcome=record.outcome,
            transcript=[[turn.role, privacy.redact(turn.text)] for turn in record.transcript],
            bad_frames=record.bad_frames,
            dropped_records=record.dropped_records,
        )
        if record.usage is not None:
            out["usage"] = record.usage
    return out


def dumps_line(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n"


# -- decoding -----------------------------------------------------------------------------


class _Bad(VoicebotError):
    """A problem inside one record; :func:`read_tape` adds the file and line."""


def _get[T](obj: dict[str, Any], key: str, kind: type[T]) -> T:
    value = obj.get(key)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)  # type: ignore[return-value]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise _Bad(f"field {key!r} must be {kind.__name__}, got {value!r:.60}")
    return value


def _unb64(obj: dict[str, Any], key: str) -> bytes:
    try:
        return base64.b64decode(_get(obj, key, str), validate=True)
    except binascii.Error as exc:
        raise _Bad(f"field {key!r} is not valid base64 ({exc})") from None


def decode_header(obj: Any) -> TapeHeader:
    if not isinstance(obj, dict) or obj.get("tape") != TAPE_MAGIC:
        raise _Bad(f'not a voicebot call tape (line 1 must be a header with "tape": "{TAPE_MAGIC}")')
    version = obj.get("version")
    if version != TAPE_VERSION:
        raise _Bad(f"tape format version {version!r} is not supported (this voicebot reads version {TAPE_VERSION})")
    side = obj.get("side", "server")
    if side not in ("server", "caller"):
        raise _Bad(f"header 'side' must be 'server' or 'caller', got {side!r}")
    direction = obj.get("direction", "inbound")  # absent on tapes older than the field: inbound
    if direction not in ("inbound", "outbound"):
        raise _Bad(f"header 'direction' must be 'inbound' or 'outbound', got {direction!r}")
    providers = obj.get("providers", [])
    redacted = obj.get("redacted", [])
    return TapeHeader(
        call_sid=_get(obj, "call_sid", str),
        side=side,
        direction=direction,
        route=str(obj.get("route", "")),
        providers=tuple(str(p) for p in providers) if isinstance(providers, list) else (),
        recorded_at=str(obj.get("recorded_at", "")),
        redacted=tuple(str(r) for r in redacted) if isinstance(redacted, list) else (),
        caller_audio=obj.get("caller_audio", True) is not False,
        keypad_masked=obj.get("keypad_masked", False) is True,
    )


def _decode_event(obj: dict[str, Any]) -> ProviderEvent:
    name = _get(obj, "event", str)
    cls = _EVENT_TYPES.get(name)
    if cls is None:
        raise _Bad(f"unknown provider event {name!r}")
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in obj:
            continue
        kwargs[f.name] = _unb64(obj, f.name) if f.type == "bytes" else obj[f.name]
    try:
        event: ProviderEvent = cls(**kwargs)
    except TypeError as exc:
        raise _Bad(f"{name} record: {exc}") from None
    return event


def decode_record(obj: Any) -> Record:
    if not isinstance(obj, dict):
        raise _Bad("record is not a JSON object")
    t = _get(obj, "t", float)
    kind = _get(obj, "k", str)
    if kind in ("twilio_in", "twilio_out"):
        direction: Direction = "in" if kind == "twilio_in" else "out"
        if "msg" in obj:
            return TwilioFrame(t, direction, json.dumps(_get(obj, "msg", dict)))
        if "raw_b64" in obj:
            return TwilioFrame(t, direction, _unb64(obj, "raw_b64"))
        return TwilioFrame(t, direction, _get(obj, "raw", str))
    if kind == "session":
        try:
            lead = obj.get("lead_ms")
            if lead is not None and (not isinstance(lead, int) or isinstance(lead, bool)):
                raise _Bad("session record: 'lead_ms' is not an integer")
            return SessionOpened(t, parse_format(_get(obj, "input", str)), parse_format(_get(obj, "output", str)), lead)
        except ValueError as exc:
            raise _Bad(str(exc)) from None
    if kind == "provider_in":
        return ProviderIn(t, _decode_event(obj))
    if kind == "provider_out":
        out_kind = _get(obj, "kind", str)
        if out_kind == "audio":
            return ProviderOut(t, "audio", audio=_unb64(obj, "audio"))
        if out_kind == "text":
            return ProviderOut(t, "text", text=_get(obj, "text", str))
        if out_kind == "truncate":
            return ProviderOut(t, "truncate", item_id=_get(obj, "item_id", str), heard_ms=_get(obj, "heard_ms", int))
        if out_kind == "tool_result":
            return ProviderOut(t, "tool_result", call_id=_get(obj, "call_id", str), output=_get(obj, "output", str))
        raise _Bad(f"unknown provider_out kind {out_kind!r}")
    if kind == "barge_in":
        return BargeInRecord(
            t,
            _get(obj, "item_id", str),
            _get(obj, "heard_ms", float),
            _get(obj, "sent_ms", float),
            _get(obj, "latency_ms", float),
        )
    if kind == "end":
        turns = obj.get("transcript", [])
        if not isinstance(turns, list) or not all(
            isinstance(x, list) and len(x) == 2 and x[0] in ("caller", "bot") and isinstance(x[1], str) for x in turns
        ):
            raise _Bad("'transcript' must be a list of [role, text] pairs")
        return CallEnd(
            t,
            _get(obj, "outcome", str),
            tuple(Turn(role, text) for role, text in turns),
            int(obj.get("bad_frames", 0)),
            int(obj.get("dropped_records", 0)),
            obj["usage"] if isinstance(obj.get("usage"), dict) else None,
        )
    raise _Bad(f"unknown record kind {kind!r}")


def iter_lines(path: str | Path) -> Iterator[tuple[int, str, bool]]:
    """(line number, text, ends with newline) for each line of the file."""
    with open(path, encoding="utf-8", newline="\n") as f:
        for number, line in enumerate(f, start=1):
            yield number, line, line.endswith("\n")


def read_tape(path: str | Path) -> Tape:
    """Read and validate a whole tape; raises :class:`TapeError` naming the first bad line."""
    tape: Tape | None = None
    last_t = 0.0
    try:
        lines = list(iter_lines(path))
    except OSError as exc:
        raise TapeError(path, 0, f"cannot read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise TapeError(path, 0, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    if not lines:
        raise TapeError(path, 1, "empty file (no tape header)")
    for number, line, complete in lines:
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            if not complete and number == len(lines):
                raise TapeError(path, number, f"record is cut off (file truncated?): {exc}") from None
            raise TapeError(path, number, f"not valid JSON (corrupted?): {exc}") from None
        try:
            if tape is None:
                tape = Tape(str(path), decode_header(obj))
                continue
            record = decode_record(obj)
        except _Bad as exc:
            raise TapeError(path, number, str(exc)) from None
        if record.t < last_t - 0.05:
            raise TapeError(path, number, f"timestamp {record.t} ms goes back in time (previous {last_t} ms)")
        if tape.complete:
            raise TapeError(path, number, "record after the 'end' record")
        last_t = max(last_t, record.t)
        tape.records.append(record)
    assert tape is not None
    return tape


def write_tape(path: str | Path, header: TapeHeader, records: Iterable[Record]) -> None:
    """Write a whole tape at once (tests, tools); the recorder streams instead."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(dumps_line(encode_header(header)))
        for record in records:
            f.write(dumps_line(encode_record(record)))
