"""The ``/twilio/media`` WebSocket: signature check, stream start, then the call bridge the
application builds for it (:meth:`telephony.application.CallApplication.adopt_stream`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.websockets import WebSocket, WebSocketState

from telephony.application import CallApplication
from telephony.bad_frames import BadFrames
from telephony.media_stream import MediaStreamProtocol, ProtocolError, Start
from telephony.sids import CALL_PREFIX, STREAM_PREFIX, is_sid
from telephony.signature import external_base_url, websocket_url

log = logging.getLogger(__name__)

START_TIMEOUT_S = 10.0


class StarletteTwilioSocket:
    """Adapts Starlette's WebSocket to the bridge's TwilioSocket. Sends after the peer
    left are dropped: the inbound side sees the close and ends the call."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self.open = True

    async def send(self, text: str) -> None:
        if not self.open:
            return
        try:
            await self.ws.send_text(text)
        except Exception as exc:
            self.open = False
            log.debug("send to Twilio failed, socket closed: %r", exc)

    async def receive(self) -> str | bytes | None:
        if not self.open:
            return None
        try:
            message = await self.ws.receive()
        except Exception:
            self.open = False
            return None
        if message["type"] == "websocket.disconnect":
            self.open = False
            return None
        text = message.get("text")
        return text if text is not None else message.get("bytes") or b""

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.open and self.ws.application_state is WebSocketState.CONNECTED:
            self.open = False
            with contextlib.suppress(Exception):
                await self.ws.close(code, reason[:120])


async def _await_start(
    socket: StarletteTwilioSocket, protocol: MediaStreamProtocol, bad_frames: BadFrames
) -> Start | None:
    """The ``start`` frame, or None when the peer left or sent ``bad_frames.limit`` bad
    frames first (the same cap as during a call: a connection holding only an upgrade
    signature must not get to send garbage for free)."""
    while True:
        frame = await socket.receive()
        if frame is None:
            return None
        try:
            event = protocol.receive(frame)
        except ProtocolError as exc:
            if bad_frames.note(exc):
                return None
            continue
        if isinstance(event, Start):
            return event


async def media_stream(ws: WebSocket) -> None:
    """The endpoint. Nothing a peer sends may raise out of it into the ASGI server (a
    traceback per hostile connection): what :func:`_serve_stream` did not foresee is logged
    once, with the call's CallSid when known, and the stream closed with 1011."""
    try:
        await _serve_stream(ws)
    except Exception:
        log.exception("media stream: unexpected error; closing the stream")
        if ws.application_state is WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await ws.close(1011)


async def _serve_stream(ws: WebSocket) -> None:
    app: CallApplication = ws.app.state.calls
    scheme = "https" if ws.url.scheme == "wss" else "http"
    base = external_base_url(app.limits.public_url, ws.headers, scheme)
    ws_url = websocket_url(base) + ws.url.path + (f"?{ws.url.query}" if ws.url.query else "")
    if not app.signatures.upgrade_ok(ws_url, ws.headers.get("x-twilio-signature")):
        log.warning("media stream: rejected upgrade: bad or missing X-Twilio-Signature (checked against %s)", ws_url)
        app.webhook_rejected("stream-signature")
        await ws.close(code=1008)
        return
    await ws.accept()
    socket = StarletteTwilioSocket(ws)
    protocol = MediaStreamProtocol(app.limits.max_message_bytes)
    bad_frames = BadFrames("media stream (before 'start')")
    try:
        start = await asyncio.wait_for(_await_start(socket, protocol, bad_frames), START_TIMEOUT_S)
    except TimeoutError:
        start = None
    bad_frames.report()
    if bad_frames.count:
        # Before the call exists; a call counts its own bad frames when it ends (telemetry).
        app.bad_frames_before_start(bad_frames.count)
    if start is None:
        log.warning("media stream: closed before a valid 'start' frame")
        await socket.close(1008, "no start")
        return
    if not (is_sid(start.call_sid, CALL_PREFIX) and is_sid(start.stream_sid, STREAM_PREFIX)):
        log.warning(
            "media stream: 'start' names call %.40r, stream %.40r: not Twilio SIDs", start.call_sid, start.stream_sid
        )
        await socket.close(1008, "malformed start")
        return
    # Any instance may take the stream, whichever answered the webhook.
    bridge = await app.adopt_stream(start.custom_parameters.get("token", ""), start, socket, protocol, base)
    if bridge is None:
        log.warning("media stream for call %s: unknown or expired stream token; closing", start.call_sid)
        await socket.close(1008, "unknown stream token")
        return
    summary = None
    try:
        summary = await bridge.run()
    finally:
        app.call_ended(bridge, summary or bridge.summary)
