"""Simulated Twilio callers for ``python -m bench load``, lean enough for 150 calls in one process.

Each call is placed as Twilio places it: the voice webhook POST signed with
``twilio.request_validator`` (:class:`voicebot.devtools.twilio_sim.SimulatedTwilio`), the TwiML's
``<Stream>`` opened as a signed WebSocket, ``connected`` and ``start``, then a 20 ms mu-law
frame every 20 ms on the call's own clock: a 1 s 440 Hz tone, then silence, over and over
(one conversation turn per cycle). Bot audio is "played" at 8000 bytes/s: a ``mark`` is echoed
when the audio sent before it has played, a ``clear`` echoes every pending mark at once.

The test suite's :class:`~voicebot.devtools.twilio_sim.SimulatedCall` keeps a sample-exact record of
what was heard and runs four tasks per call; here a call is two tasks and keeps only what the
figures need, with frames built from preformatted strings, so the client process stays real
time at 150 calls on a shared 2-core machine:

- the time each caller frame left (frame k carries stream audio [20k, 20k + 20) ms);
- the time each bot ``media`` frame arrived and where its audio ends in the call's bot audio.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import time
from array import array
from collections import deque

import httpx
import numpy as np
import websockets

from bench.load_stats import LatencyRing
from transcoding.mulaw import pcm16_to_mulaw
from voicebot.devtools.twilio_sim import SimulatedTwilio, parse_stream_twiml

FRAME_S = 0.02
FRAME_BYTES = 160
TONE_S = 1.0
CYCLE_S = 5.0  # tone, then silence while the 2 s reply arrives and plays
TONE_FRAMES = round(TONE_S / FRAME_S)
CYCLE_FRAMES = round(CYCLE_S / FRAME_S)

_MEDIA = (
    '{"event":"media","sequenceNumber":"%d","streamSid":"%s",'
    '"media":{"track":"inbound","chunk":"%d","timestamp":"%d","payload":"%s"}}'
)
_MARK = '{"event":"mark","sequenceNumber":"%d","streamSid":"%s","mark":{"name":%s}}'


def _frames() -> tuple[list[str], str]:
    """The tone's 20 ms frames and the silent frame, base64 mu-law (-12 dBFS, 440 Hz)."""
    n = np.arange(round(TONE_S * 8000))
    fade = np.minimum(1.0, np.minimum(n, n[-1] - n) / 80.0)  # 10 ms ramps: no clicks
    pcm = np.rint(0.25 * 32767 * fade * np.sin(2 * np.pi * 440.0 * n / 8000)).astype("<i2").tobytes()
    mulaw = pcm16_to_mulaw(pcm)
    tone = [base64.b64encode(mulaw[i : i + FRAME_BYTES]).decode() for i in range(0, len(mulaw), FRAME_BYTES)]
    return tone, base64.b64encode(b"\xff" * FRAME_BYTES).decode()


TONE, SILENCE = _frames()


def _payload_bytes(b64: str) -> int:
    return len(b64) * 3 // 4 - (b64.endswith("=") + b64.endswith("=="))


class LoadCall:
    """One call in progress (see the module docstring). ``session`` is the index of its
    provider connection in the fake, when the harness knows it."""

    def __init__(self, ws: websockets.ClientConnection, call_sid: str, phase_frames: int, lateness: LatencyRing):
        self.ws = ws
        self.call_sid = call_sid
        self.stream_sid = "MZ" + secrets.token_hex(16)
        self.phase = phase_frames
        self.lateness = lateness
        self.session: int | None = None
        self.sent_at = array("d")
        self.media_at = array("d")
        self.media_end = array("q")  # bot audio bytes received up to and including this frame
        self.received = 0
        self.closed = False
        self._seq = 0
        self._marks: deque[tuple[float, str]] = deque()
        self._played_until = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self._media = asyncio.Event()

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    async def start(self, custom_parameters: dict[str, str]) -> None:
        await self.ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        start = {
            "streamSid": self.stream_sid,
            "accountSid": "AC" + "0" * 32,
            "callSid": self.call_sid,
            "tracks": ["inbound"],
            "customParameters": custom_parameters,
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        }
        message = {"event": "start", "sequenceNumber": str(self._next_seq()), "streamSid": self.stream_sid}
        await self.ws.send(json.dumps({**message, "start": start}))
        self._tasks = [asyncio.ensure_future(self._send_frames()), asyncio.ensure_future(self._receive())]

    async def _send_frames(self) -> None:
        t0 = time.monotonic()
        frame = 0
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                due = t0 + frame * FRAME_S
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                now = time.monotonic()
                self.lateness.add(int((now - due) * 1e9))
                while self._marks and self._marks[0][0] <= now:
                    name = json.dumps(self._marks.popleft()[1])
                    await self.ws.send(_MARK % (self._next_seq(), self.stream_sid, name))
                at = (frame + self.phase) % CYCLE_FRAMES
                payload = TONE[at] if at < TONE_FRAMES else SILENCE
                self.sent_at.append(now)
                await self.ws.send(_MEDIA % (self._next_seq(), self.stream_sid, frame + 1, frame * 20, payload))
                frame += 1

    async def _receive(self) -> None:
        try:
            async for frame in self.ws:
                now = time.monotonic()
                message = json.loads(frame)
                event = message.get("event")
                if event == "media":
                    n = _payload_bytes(message["media"]["payload"])
                    self.received += n
                    self.media_at.append(now)
                    self.media_end.append(self.received)
                    self._played_until = max(now, self._played_until) + n / 8000
                    self._media.set()
                elif event == "mark":
                    self._marks.append((self._played_until, message["mark"]["name"]))
                elif event == "clear":
                    self._marks = deque((now, name) for _, name in self._marks)
                    self._played_until = now
        except websockets.ConnectionClosed:
            pass
        finally:
            self.closed = True
            self._media.set()

    async def heard(self, nbytes: int) -> None:
        """Returns once ``nbytes`` of bot audio have arrived (or the call has ended)."""
        while self.received < nbytes and not self.closed:
            self._media.clear()
            await self._media.wait()

    async def hangup(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            stop = {"accountSid": "AC" + "0" * 32, "callSid": self.call_sid}
            await self.ws.send(json.dumps({"event": "stop", "sequenceNumber": str(self._next_seq()), "stop": stop}))
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.ws.close()


async def place_call(
    twilio: SimulatedTwilio, http: httpx.AsyncClient, phase_frames: int, lateness: LatencyRing
) -> LoadCall:
    """Signed webhook, then the signed media stream it names, then ``start``. The webhook is
    ``twilio``'s, posted with one shared HTTP client (a client per call would cost a TLS
    context each, which at 150 calls slows the client more than the server)."""
    call_sid = "CA" + secrets.token_hex(16)
    url = twilio.base_url.rstrip("/") + twilio.webhook_path
    params = {
        "CallSid": call_sid,
        "AccountSid": twilio.account_sid,
        "From": f"+1555{secrets.randbelow(10**7):07d}",
        "To": "+15550001111",
        "CallStatus": "ringing",
        "Direction": "inbound",
        "ApiVersion": "2010-04-01",
    }
    response = await http.post(url, data=params, headers={"X-Twilio-Signature": twilio.sign(url, params)})
    parsed = parse_stream_twiml(response.text) if response.status_code == 200 else None
    if parsed is None:
        raise RuntimeError(f"webhook answered {response.status_code} without a stream: {response.text[:200]}")
    url, params = parsed
    headers = {"X-Twilio-Signature": twilio.sign(url, {})}
    ws = await websockets.connect(url, additional_headers=headers, max_size=2**20, compression=None)
    call = LoadCall(ws, call_sid, phase_frames, lateness)
    await call.start(params)
    return call
