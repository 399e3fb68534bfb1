"""A simulated Twilio: places a call against a running voicebot exactly as Twilio would.

It signs the voice webhook with ``twilio.request_validator``, reads the TwiML, opens the
signed Media Stream WebSocket, sends ``connected``/``start``, streams caller audio as
real-time 20 ms mu-law frames (silence when the caller says nothing, as a phone line
does), and plays what the bot sends through a playout clock at 8000 bytes/s: marks are
echoed when the audio before them has played, ``clear`` drops the buffer and echoes every
pending mark (https://www.twilio.com/docs/voice/media-streams/websocket-messages). What
the caller heard is kept as a timeline aligned with the caller's own track, so tests and
``voicebot dial`` can look at the audio itself.

Used by the test suite and the ``dial``/``replay`` commands; it is not on the server path.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import time
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import websockets
from twilio.request_validator import RequestValidator

from s2s.errors import VoicebotError
from transcoding.mulaw import mulaw_to_pcm16
from voicebot.devtools.twiml_audio import RenderedTwiml, render_twiml

FRAME_BYTES = 160  # 20 ms of 8 kHz mu-law
FRAME_S = 0.02
# The longest the player waits, mid-answer, for bot audio whose slot passed while the
# simulator itself was not running (see SimulatedCall._await_late_audio).
LATE_AUDIO_WAIT_MS = 200.0
MULAW_SILENCE = b"\xff"

# Sees every frame of a simulated call as it crosses the socket: ("in", frame) for what the
# simulated Twilio sends, ("out", frame) for what the server sends (``voicebot dial --record``).
FrameTap = Callable[[str, str | bytes], None]


class NoStream(VoicebotError):
    """The webhook answered without ``<Connect><Stream>`` (e.g. an on-unavailable message)."""

    def __init__(self, status: int, twiml: str) -> None:
        super().__init__(f"webhook answered {status} without a stream: {twiml[:300]}")
        self.status = status
        self.twiml = twiml


@dataclass(slots=True)
class LogEntry:
    t_ms: float
    direction: str  # "in" = Twilio -> server, "out" = server -> Twilio
    event: str
    detail: Any = None


@dataclass(slots=True)
class _Queued:
    audio: bytes = b""
    mark: str | None = None
    at_ms: float = 0.0  # when it arrived (stream clock)


def parse_stream_twiml(twiml: str) -> tuple[str, dict[str, str]] | None:
    root = ET.fromstring(twiml)
    stream = root.find("./Connect/Stream")
    if stream is None:
        return None
    params = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
    return stream.get("url", ""), params


class SimulatedCall:
    """One call in progress. Times are ms since the ``start`` frame (the stream clock)."""

    def __init__(self, ws: Any, call_sid: str, stream_sid: str, speed: float, tap: FrameTap | None = None) -> None:
        self.ws = ws
        self.tap = tap
        self.call_sid = call_sid
        self.stream_sid = stream_sid
        self.speed = speed
        self.log: list[LogEntry] = []
        self.heard = bytearray()  # mu-law, one byte per 1/8 ms of stream time
        # The bot audio as it arrived, in order, without the timeline: what the server sent,
        # apart from when (a starved process plays a frame of it late, which ``heard`` shows).
        self.received = bytearray()
        self.caller_track = bytearray()  # what the caller sent, same clock
        self.clear_times: list[float] = []
        self.marks_echoed: list[str] = []
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self._outgoing: deque[bytes] = deque()
        self._drained = asyncio.Event()
        self._control: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._playout: deque[_Queued] = deque()
        self._audio_arrived = asyncio.Event()
        self._mid_answer = False  # the last frame played was bot audio, and no clear since
        self._t0 = 0.0
        self._seq = 0
        self._chunk = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = False
        self._stalled_until_ms = 0.0
        self.bad_frames_from_server = 0
        # TwiML the call was given mid-stream (run_twiml): what each verb sounded like, and
        # when it was heard, (verb, start_ms, end_ms) on the stream clock
        self.twiml: list[RenderedTwiml] = []
        self.twiml_heard: list[tuple[str, float, float]] = []
        self.twiml_done = asyncio.Event()

    # -- clock ---------------------------------------------------------------------------

    def now_ms(self) -> float:
        return (time.monotonic() - self._t0) * 1000.0 * self.speed

    async def _sleep_until(self, t_ms: float) -> None:
        delay = (t_ms - self.now_ms()) / 1000.0 / self.speed
        if delay > 0:
            await asyncio.sleep(delay)

    # -- sending -------------------------------------------------------------------------

    async def send_json(self, message: dict[str, Any]) -> None:
        await self.send_raw(json.dumps(message))

    async def send_raw(self, frame: str | bytes) -> None:
        """Send a frame as-is (tests use it for malformed input)."""
        if self.tap is not None:
            self.tap("in", frame)
        await self.ws.send(frame)

    def _next_seq(self) -> str:
        self._seq += 1
        return str(self._seq)

    async def _start(self, custom_parameters: dict[str, str], before_start: Sequence[str | bytes] = ()) -> None:
        await self.send_json({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        for frame in before_start:
            await self.send_raw(frame)
        self._t0 = time.monotonic()
        await self.send_json(
            {
                "event": "start",
                "sequenceNumber": self._next_seq(),
                "streamSid": self.stream_sid,
                "start": {
                    "streamSid": self.stream_sid,
                    "accountSid": "AC" + "0" * 32,
                    "callSid": self.call_sid,
                    "tracks": ["inbound"],
                    "customParameters": custom_parameters,
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                },
            }
        )
        self._tasks = [
            asyncio.create_task(self._sender()),
            asyncio.create_task(self._receiver()),
            asyncio.create_task(self._player()),
            asyncio.create_task(self._control_sender()),
        ]

    async def _sender(self) -> None:
        """Caller audio, one 20 ms frame per tick, silence when nothing is queued."""
        frame_no = 0
        while not self._stopped:
            await self._sleep_until(frame_no * FRAME_S * 1000.0)
            if frame_no * FRAME_S * 1000.0 < self._stalled_until_ms:
                # The stream is stalled: this frame never reaches the server (the track keeps
                # its clock, so it stays aligned with what the caller heard).
                self.caller_track += MULAW_SILENCE * FRAME_BYTES
                frame_no += 1
                continue
            payload = self._outgoing.popleft() if self._outgoing else MULAW_SILENCE * FRAME_BYTES
            if not self._outgoing:
                self._drained.set()
            self._chunk += 1
            self.caller_track += payload
            try:
                await self.send_json(
                    {
                        "event": "media",
                        "sequenceNumber": self._next_seq(),
                        "streamSid": self.stream_sid,
                        "media": {
                            "track": "inbound",
                            "chunk": str(self._chunk),
                            "timestamp": str(int(frame_no * FRAME_S * 1000)),
                            "payload": base64.b64encode(payload).decode(),
                        },
                    }
                )
            except websockets.ConnectionClosed:
                return
            frame_no += 1

    async def _receiver(self) -> None:
        try:
            async for frame in self.ws:
                if self.tap is not None:
                    self.tap("out", frame)
                self._on_server_frame(frame)
        except websockets.ConnectionClosed:
            pass
        finally:
            self.close_code = self.ws.close_code
            self.closed.set()

    def _on_server_frame(self, frame: str | bytes) -> None:
        try:
            msg = json.loads(frame)
            event = msg["event"]
        except (ValueError, KeyError, TypeError):
            self.bad_frames_from_server += 1
            return
        t = self.now_ms()
        if event == "media":
            audio = base64.b64decode(msg["media"]["payload"])
            self.log.append(LogEntry(t, "out", "media", len(audio)))
            self.received += audio
            self._playout.append(_Queued(audio=audio, at_ms=t))
            self._audio_arrived.set()
        elif event == "mark":
            name = msg["mark"]["name"]
            self.log.append(LogEntry(t, "out", "mark", name))
            self._playout.append(_Queued(mark=name))
            self._echo_ready_marks()
        elif event == "clear":
            self.log.append(LogEntry(t, "out", "clear"))
            self.clear_times.append(t)
            pending = [q.mark for q in self._playout if q.mark is not None]
            self._playout.clear()
            self._mid_answer = False
            for name in pending:
                self._echo_mark(name)
        else:
            self.log.append(LogEntry(t, "out", event, msg))

    def _echo_mark(self, name: str) -> None:
        self.marks_echoed.append(name)
        self.log.append(LogEntry(self.now_ms(), "in", "mark", name))
        self._control.put_nowait(
            {
                "event": "mark",
                "sequenceNumber": self._next_seq(),
                "streamSid": self.stream_sid,
                "mark": {"name": name},
            }
        )

    async def _control_sender(self) -> None:
        """Mark echoes go out as soon as they happen, independent of the media clock."""
        while True:
            message = await self._control.get()
            with contextlib.suppress(websockets.ConnectionClosed):
                await self.send_json(message)

    def _echo_ready_marks(self) -> None:
        while self._playout and self._playout[0].mark is not None:
            self._echo_mark(self._playout.popleft().mark or "")

    async def _player(self) -> None:
        """Plays 20 ms of queued bot audio per tick into ``heard`` (silence when idle)."""
        tick = 0
        while not self._stopped:
            slot_ms = tick * FRAME_S * 1000.0
            await self._sleep_until(slot_ms)
            if self._mid_answer and not self._playout:
                await self._await_late_audio(slot_ms)
            frame = bytearray()
            while len(frame) < FRAME_BYTES and self._playout:
                head = self._playout[0]
                if head.mark is not None:
                    self._echo_mark(self._playout.popleft().mark or "")
                    continue
                if not self._mid_answer and not frame and head.at_ms >= slot_ms + FRAME_S * 1000.0:
                    # A player catching up on slots it reached late must not play an answer
                    # in slots that had passed before the answer arrived.
                    break
                take = FRAME_BYTES - len(frame)
                frame += head.audio[:take]
                head.audio = head.audio[take:]
                if not head.audio:
                    self._playout.popleft()
            self._echo_ready_marks()
            self._mid_answer = bool(frame)
            frame += MULAW_SILENCE * (FRAME_BYTES - len(frame))
            self.heard += frame
            tick += 1

    async def _await_late_audio(self, slot_ms: float) -> None:
        """An answer's audio ran out at a slot the player reached late: the simulator's own
        process was not running (a starved machine), and neither were the fake provider and
        server beside it, whose next chunk may still be on its way. Real Twilio runs apart
        from them, so the slot is judged silent only after as long again as the simulator
        was away (bounded). On time, an empty buffer is an underrun the caller hears."""
        late_ms = self.now_ms() - slot_ms
        if late_ms <= FRAME_S * 1000.0:
            return
        self._audio_arrived.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._audio_arrived.wait(), min(late_ms, LATE_AUDIO_WAIT_MS) / 1000.0 / self.speed)

    # -- the test-facing API -------------------------------------------------------------

    async def say(self, mulaw: bytes) -> None:
        """Queue caller audio and wait until it has all been sent (real time)."""
        for start in range(0, len(mulaw), FRAME_BYTES):
            frame = mulaw[start : start + FRAME_BYTES]
            self._outgoing.append(frame + MULAW_SILENCE * (FRAME_BYTES - len(frame)))
        self._drained.clear()
        drained = asyncio.ensure_future(self._drained.wait())
        closed = asyncio.ensure_future(self.closed.wait())
        await asyncio.wait({drained, closed}, return_when=asyncio.FIRST_COMPLETED)
        drained.cancel()
        closed.cancel()

    async def stall(self, ms: float) -> None:
        """The caller's media stream stalls (a network hiccup, a held leg): no frames at all
        for ``ms``, then the line resumes; frames of the gap are lost, not sent late."""
        self._stalled_until_ms = self.now_ms() + ms
        await asyncio.sleep(ms / 1000.0 / self.speed)

    async def pause(self, ms: float) -> None:
        """Caller silence (the line keeps sending silent frames)."""
        await asyncio.sleep(ms / 1000.0 / self.speed)

    async def press(self, digit: str) -> None:
        await self.send_json(
            {
                "event": "dtmf",
                "sequenceNumber": self._next_seq(),
                "streamSid": self.stream_sid,
                "dtmf": {"track": "inbound_track", "digit": digit},
            }
        )

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError("condition not met in time")
            await asyncio.sleep(0.01)

    @property
    def queued_ms(self) -> float:
        """Bot audio received but not yet played."""
        return sum(len(q.audio) for q in self._playout) / 8.0

    def received_media_ms(self) -> float:
        return sum(e.detail for e in self.log if e.event == "media" and e.direction == "out") / 8.0

    def heard_pcm(self, start_ms: float = 0.0, end_ms: float | None = None) -> np.ndarray:
        data = bytes(self.heard[int(start_ms * 8) : None if end_ms is None else int(end_ms * 8)])
        return np.frombuffer(mulaw_to_pcm16(data), dtype="<i2")

    def received_pcm(self) -> np.ndarray:
        return np.frombuffer(mulaw_to_pcm16(bytes(self.received)), dtype="<i2")

    def caller_pcm(self) -> np.ndarray:
        return np.frombuffer(mulaw_to_pcm16(bytes(self.caller_track)), dtype="<i2")

    async def run_twiml(self, twiml: str) -> RenderedTwiml:
        """Twilio was given new TwiML for the call (a REST update): the media stream ends as at a
        hang-up (``stop``, then the socket closes) and the callee hears the TwiML's ``<Say>``,
        ``<Play>`` and ``<Pause>`` (:mod:`voicebot.devtools.twiml_audio`) in real time, on the
        clock of :attr:`heard`; then the call is over (:attr:`twiml_done`)."""
        await self.hangup()
        async with httpx.AsyncClient(timeout=10.0) as client:
            rendered = await render_twiml(twiml, client)
        self.twiml.append(rendered)
        slot = int(self.now_ms() / (FRAME_S * 1000.0))
        if len(self.heard) < slot * FRAME_BYTES:  # the line was silent since the stream ended
            self.heard += MULAW_SILENCE * (slot * FRAME_BYTES - len(self.heard))
        for segment in rendered.segments:
            start_ms = len(self.heard) / 8.0
            for offset in range(0, len(segment.mulaw), FRAME_BYTES):
                await self._sleep_until(len(self.heard) / 8.0)
                frame = segment.mulaw[offset : offset + FRAME_BYTES]
                self.heard += frame + MULAW_SILENCE * (FRAME_BYTES - len(frame))
            self.twiml_heard.append((segment.verb, start_ms, start_ms + segment.ms))
        self.twiml_done.set()
        return rendered

    async def hangup(self) -> None:
        """The caller hangs up: ``stop``, then Twilio closes the socket."""
        if self._stopped:
            return
        self._stopped = True
        with contextlib.suppress(websockets.ConnectionClosed):
            await self.send_json(
                {
                    "event": "stop",
                    "sequenceNumber": self._next_seq(),
                    "streamSid": self.stream_sid,
                    "stop": {"accountSid": "AC" + "0" * 32, "callSid": self.call_sid},
                }
            )
        await self._shutdown()

    async def _shutdown(self) -> None:
        self._stopped = True
        await self.ws.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@dataclass
class SimulatedTwilio:
    base_url: str
    auth_token: str | None = None
    speed: float = 1.0
    webhook_path: str = "/twilio/voice"
    account_sid: str = "AC" + "0" * 32
    extra_headers: dict[str, str] = field(default_factory=dict)
    tap: FrameTap | None = None
    # Open the media stream at this base URL (http://host:port) instead of the one the TwiML
    # names, as a load balancer sends it to another instance of a fleet.
    stream_base_url: str | None = None

    def sign(self, url: str, params: dict[str, str]) -> str:
        return str(RequestValidator(self.auth_token or "").compute_signature(url, params))

    async def webhook(self, to: str, from_: str, call_sid: str) -> httpx.Response:
        url = self.base_url.rstrip("/") + self.webhook_path
        params = {
            "CallSid": call_sid,
            "AccountSid": self.account_sid,
            "From": from_,
            "To": to,
            "CallStatus": "ringing",
            "Direction": "inbound",
            "ApiVersion": "2010-04-01",
        }
        headers = {"X-Twilio-Signature": self.sign(url, params), **self.extra_headers}
        async with httpx.AsyncClient(timeout=10.0) as client:
            return await client.post(url, data=params, headers=headers)

    @contextlib.asynccontextmanager
    async def call(
        self, to: str = "+15550001111", from_: str = "+15557654321", call_sid: str | None = None
    ) -> AsyncIterator[SimulatedCall]:
        call_sid = call_sid or "CA" + secrets.token_hex(16)
        response = await self.webhook(to, from_, call_sid)
        parsed = parse_stream_twiml(response.text) if response.status_code == 200 else None
        if parsed is None:
            raise NoStream(response.status_code, response.text)
        stream_url, params = parsed
        if self.stream_base_url is not None:
            path = urlsplit(stream_url).path
            stream_url = self.stream_base_url.rstrip("/").replace("http", "ws", 1) + path
        async with self.stream(stream_url, params, call_sid) as call:
            yield call

    @contextlib.asynccontextmanager
    async def stream(
        self, stream_url: str, params: dict[str, str], call_sid: str, before_start: Sequence[str | bytes] = ()
    ) -> AsyncIterator[SimulatedCall]:
        """Open a signed media stream and send ``start`` with ``params`` as its custom
        parameters, without a webhook (tests give it forged or replayed tokens), after the
        frames ``before_start`` (tests send malformed ones)."""
        headers = {"X-Twilio-Signature": self.sign(stream_url, {})}
        ws = await websockets.connect(stream_url, additional_headers=headers, max_size=2**20, compression=None)
        call = SimulatedCall(ws, call_sid, "MZ" + secrets.token_hex(16), self.speed, self.tap)
        await call._start(params, before_start)
        try:
            yield call
        finally:
            await call.hangup()
