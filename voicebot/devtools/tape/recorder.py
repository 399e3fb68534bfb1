"""Recording calls to tapes without touching the audio path.

:class:`TapeRecorder` is a :class:`~telephony.observer.CallObserver`. Its hooks run on the
event loop between audio frames, so each one only stamps the time and appends an immutable
record to a deque (no JSON, no base64, no disk). One process-wide :class:`TapeWriterThread`
wakes every ``flush_interval_s`` (or when a call ends), encodes whatever the recorders
collected and writes it in one ``write`` per tape. Opening the file and creating the directory
happen on that thread too.

Bounds: a tape stops growing at ``max_bytes``; later records are counted, not kept, and the
``end`` record says how many were dropped. The same flag stops the in-memory queue from
growing if the writer falls behind (a slow disk cannot eat the server's memory).
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import datetime as dt
import errno
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from s2s.events import ProviderEvent
from s2s.provider import ProviderSession, Turn
from telephony.call_state import Direction as CallDirection
from telephony.observer import AudioSent, CallObserver, SentToProvider, TextSent, ToolResultSent, ToTwilio, TruncateSent
from transcoding.formats import AudioFormat
from voicebot.devtools.tape.format import (
    KEEP_ALL,
    BargeInRecord,
    CallEnd,
    ProviderIn,
    ProviderOut,
    Record,
    SessionOpened,
    TapeHeader,
    TapePrivacy,
    TwilioFrame,
    dumps_line,
    encode_header,
    encode_record,
)

if TYPE_CHECKING:
    from telephony.bridge import CallSummary
    from telephony.media_stream import TwilioEvent
    from voicebot.config import AppConfig, RouteConfig

log = logging.getLogger(__name__)

# Records waiting for the writer, per call. At 50 caller frames/s plus bot audio this is
# minutes of backlog; past it the writer is hopelessly behind and records are dropped.
MAX_PENDING_RECORDS = 50_000
# A bad frame from Twilio's side is kept on the tape up to this much (it stays bad when cut:
# a cut JSON text is no longer JSON), so a peer cannot make the tape hold what the protocol
# refused to parse (an oversized frame, megabytes of nesting).
BAD_FRAME_TAPE_BYTES = 1024
# CallSids are shape-checked at the webhook; this bounds a file name whatever reaches here.
MAX_SID_IN_NAME = 64


def tape_filename(call_sid: str, when: dt.datetime | None = None) -> str:
    """``20260124T221530Z_CAxxxx.jsonl``: sorts by time, greps by CallSid."""
    when = when or dt.datetime.now(dt.UTC)
    safe_sid = re.sub(r"[^A-Za-z0-9_-]", "_", call_sid[:MAX_SID_IN_NAME]) or "unknown"
    return f"{when.strftime('%Y%m%dT%H%M%S')}{when.microsecond // 1000:03d}Z_{safe_sid}.jsonl"


class TapeRecorder(CallObserver):
    """Records one call. Hooks are cheap appends; :attr:`done` is set once the tape is closed."""

    def __init__(
        self,
        path: str | Path,
        header: TapeHeader,
        *,
        max_bytes: int = 20 * 1024 * 1024,
        writer: TapeWriterThread | None = None,
        clock: Callable[[], float] = time.monotonic,
        privacy: TapePrivacy = KEEP_ALL,
    ) -> None:
        self.path = Path(path)
        # what the tape leaves out is applied by the writer thread as it encodes
        self.privacy = privacy
        self.header = dataclasses.replace(header, **privacy.header_fields()) if privacy is not KEEP_ALL else header
        self.usage: Callable[[], dict[str, Any]] | None = None  # the call's cost, for the end record
        # Called on the writer thread with the tape's path once the file is closed (also one cut
        # short by a write error: what is on disk is all there will be); voicebot.recordings
        # ships it from there. It must not block: the writer serves every call's tape.
        self.on_closed: Callable[[Path], None] | None = None
        self.max_bytes = max_bytes
        self.done = threading.Event()
        self.error: str | None = None
        self.full = False  # set by the writer thread
        self.dropped = 0
        self._clock = clock
        self._t0 = clock()
        self._pending: deque[Record] = deque()
        self._session: ProviderSession | None = None
        self._formats: tuple[AudioFormat, AudioFormat, int | None] | None = None
        self._ended = False
        self._writer = writer or tape_writer()
        self._writer.add(self)

    def _now(self) -> float:
        return (self._clock() - self._t0) * 1000.0

    def _add(self, record: Record) -> None:
        if self.full or len(self._pending) >= MAX_PENDING_RECORDS:
            self.dropped += 1
            return
        self._pending.append(record)

    # -- CallObserver -------------------------------------------------------------------

    def twilio_in(self, frame: str | bytes, event: TwilioEvent | None) -> None:
        if event is None and len(frame) > BAD_FRAME_TAPE_BYTES:
            frame = frame[:BAD_FRAME_TAPE_BYTES]
        self._add(TwilioFrame(self._now(), "in", frame))

    def twilio_out(self, kind: ToTwilio, frame: str) -> None:
        self.record_out(frame)

    def record_out(self, frame: str | bytes) -> None:
        """A frame the server sent (also what a caller-side tape records as it arrives)."""
        self._add(TwilioFrame(self._now(), "out", frame))

    def session_opened(self, session: ProviderSession) -> None:
        self._session = session
        self._note_formats()

    def _note_formats(self) -> None:
        """A ``session`` record whenever the session's formats change: a recovering session
        (s2s.resilience) can move to a provider with other formats in the middle of a call."""
        session = self._session
        if session is None:
            return
        shape = (session.input_format, session.output_format, session.playout_lead_ms)
        if shape != self._formats:
            self._formats = shape
            self._add(SessionOpened(self._now(), *shape))

    def provider_in(self, event: ProviderEvent) -> None:
        self._note_formats()
        self._add(ProviderIn(self._now(), event))

    def provider_out(self, sent: SentToProvider) -> None:
        t = self._now()
        match sent:
            case AudioSent(audio):
                self._note_formats()
                self._add(ProviderOut(t, "audio", audio=audio))
            case TextSent(text):
                self._add(ProviderOut(t, "text", text=text))
            case TruncateSent(item_id, heard_ms):
                self._add(ProviderOut(t, "truncate", item_id=item_id, heard_ms=heard_ms))
            case ToolResultSent(call_id, output):
                self._add(ProviderOut(t, "tool_result", call_id=call_id, output=output))

    def barge_in(self, item_id: str, heard_ms: float, sent_ms: float, latency_ms: float) -> None:
        self._add(BargeInRecord(self._now(), item_id, heard_ms, sent_ms, latency_ms))

    def call_ended(self, summary: CallSummary) -> None:
        usage = self.usage() if self.usage is not None else None
        self.end(summary.outcome.value, tuple(summary.transcript), summary.bad_frames, usage)

    def end(
        self, outcome: str, transcript: Sequence[Turn] = (), bad_frames: int = 0, usage: dict[str, Any] | None = None
    ) -> None:
        """Close the tape (also used by the simulated caller, which has no CallSummary)."""
        if self._ended:
            return
        # The end record bypasses the size cap so a capped tape still says how the call ended.
        # It is queued before ``_ended`` is set: the writer closes a tape once it sees
        # ``ended`` and an empty queue, so the record must already be there.
        self._pending.append(CallEnd(self._now(), outcome, tuple(transcript), bad_frames, usage=usage))
        self._ended = True
        self._writer.wake()

    # -- writer side (TapeWriterThread only) --------------------------------------------

    def _drain(self) -> list[Record]:
        records: list[Record] = []
        pending = self._pending
        while pending:
            records.append(pending.popleft())
        return records

    @property
    def ended(self) -> bool:
        return self._ended


class _OpenTape:
    def __init__(self, recorder: TapeRecorder) -> None:
        self.recorder = recorder
        self.file: IO[str] | None = None
        self.written = 0
        self.failed = False
        self.input_format: AudioFormat | None = None  # the session's, as of the record being encoded


class TapeWriterThread:
    """Encodes and writes every recorder's records in batches, off the event loop."""

    def __init__(self, flush_interval_s: float = 0.25) -> None:
        self.flush_interval_s = flush_interval_s
        self._tapes: list[_OpenTape] = []
        self._lock = threading.Lock()
        self._flushing = threading.Lock()  # the thread and the exit hook never write at once
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tape-writer", daemon=True)
        self._thread.start()

    def add(self, recorder: TapeRecorder) -> None:
        with self._lock:
            self._tapes.append(_OpenTape(recorder))

    def wake(self) -> None:
        self._wake.set()

    def flush(self) -> None:
        """Write everything pending now, on the calling thread (used at exit)."""
        with self._flushing:
            with self._lock:
                tapes = list(self._tapes)
            for tape in tapes:
                self._write(tape)

    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            self.flush()

    def _write(self, tape: _OpenTape) -> None:
        recorder = tape.recorder
        ended = recorder.ended  # read before draining: the end record is then in the batch
        records = recorder._drain()
        if not tape.failed:
            try:
                self._append(tape, records)
            except OSError as exc:
                tape.failed = True
                recorder.error = f"cannot write tape {recorder.path}: {exc.strerror}"
                log.error("call %s: %s; the call goes on unrecorded", recorder.header.call_sid, recorder.error)
            except Exception as exc:  # a record that cannot be encoded ends this tape, not the writer thread
                tape.failed = True
                recorder.error = f"cannot encode a record: {exc!r}"
                log.exception("call %s: %s; the call goes on unrecorded", recorder.header.call_sid, recorder.error)
        if ended and not recorder._pending:
            if tape.file is not None:
                with contextlib.suppress(OSError):
                    tape.file.close()
                if not tape.failed:
                    log.info(
                        "call %s: tape written to %s (%d bytes)", recorder.header.call_sid, recorder.path, tape.written
                    )
                if recorder.on_closed is not None:
                    try:
                        recorder.on_closed(recorder.path)
                    except Exception:
                        log.exception(
                            "call %s: handing on the closed tape %s failed", recorder.header.call_sid, recorder.path
                        )
            with self._lock:
                if tape in self._tapes:
                    self._tapes.remove(tape)
            recorder.done.set()

    def _append(self, tape: _OpenTape, records: list[Record]) -> None:
        recorder = tape.recorder
        if tape.file is None:
            recorder.path.parent.mkdir(parents=True, exist_ok=True)
            tape.file = _create_exclusively(recorder)
            log.info("call %s: recording to %s", recorder.header.call_sid, recorder.path)
            header = dumps_line(encode_header(recorder.header))
            tape.file.write(header)
            tape.written += len(header)
        lines: list[str] = []
        for record in records:
            if isinstance(record, CallEnd):
                record = dataclasses.replace(record, dropped_records=recorder.dropped)
            elif recorder.full:
                recorder.dropped += 1
                continue
            elif isinstance(record, SessionOpened):
                tape.input_format = record.input_format
            line = dumps_line(encode_record(record, recorder.privacy, tape.input_format))
            if not isinstance(record, CallEnd) and tape.written + len(line) > recorder.max_bytes:
                recorder.full = True
                recorder.dropped += 1
                log.warning(
                    "call %s: tape %s reached its %d-byte cap; later records are dropped",
                    recorder.header.call_sid,
                    recorder.path,
                    recorder.max_bytes,
                )
                continue
            tape.written += len(line)
            lines.append(line)
        if lines:
            tape.file.write("".join(lines))
            tape.file.flush()


def _create_exclusively(recorder: TapeRecorder) -> IO[str]:
    """Open a new tape file, never an existing one: two tapes with the same name (two
    streams for one CallSid in the same millisecond) get ``-1``, ``-2``... suffixes rather
    than overwriting each other. ``recorder.path`` follows the name actually used."""
    path = recorder.path
    for n in range(1000):
        candidate = path if n == 0 else path.with_name(f"{path.stem}-{n}{path.suffix}")
        try:
            file = open(candidate, "x", encoding="utf-8")  # noqa: SIM115 - kept open for the call
        except FileExistsError:
            continue
        recorder.path = candidate
        return file
    raise FileExistsError(errno.EEXIST, "too many tapes with this name", str(path))


_writer: TapeWriterThread | None = None
_writer_lock = threading.Lock()


def tape_writer() -> TapeWriterThread:
    """The process-wide writer thread, started on first use and flushed at exit."""
    global _writer
    with _writer_lock:
        if _writer is None:
            _writer = TapeWriterThread()
            atexit.register(_writer.flush)
        return _writer


def wants_recording(config: AppConfig, route: RouteConfig) -> bool:
    return config.recording.enabled or route.recording


def tape_privacy(config: AppConfig, route: RouteConfig) -> TapePrivacy:
    """What the route's tapes leave out (README "Personal data")."""
    return TapePrivacy(
        redact=route.redactor,
        caller_audio=config.recording.caller_audio and route.record_caller_audio,
        keypad_masked=route.dtmf.sensitive,
    )


def recorder_for_call(
    config: AppConfig,
    route: RouteConfig,
    call_sid: str,
    providers: tuple[str, ...],
    direction: CallDirection = "inbound",
) -> TapeRecorder:
    header = TapeHeader(
        call_sid=call_sid,
        side="server",
        direction=direction,
        route=route.name,
        providers=tuple(f"{name}:{config.providers[name].type}" for name in providers if name in config.providers),
        recorded_at=dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
    )
    path = Path(config.recording.dir) / tape_filename(call_sid)
    return TapeRecorder(path, header, max_bytes=config.recording.max_bytes, privacy=tape_privacy(config, route))
