"""The ``/twilio/media`` WebSocket: signature check, stream start, then the call bridge."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.websockets import WebSocket, WebSocketState

from telephony.bridge import CallBridge, CallInfo
from telephony.local_vad import SpeechOnsetDetector
from telephony.media_stream import MediaStreamProtocol, ProtocolError, Start
from telephony.signature import external_base_url, websocket_url
from voicebot.calls.runtime import Runtime

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


async def _await_start(socket: StarletteTwilioSocket, protocol: MediaStreamProtocol) -> Start | None:
    while True:
        frame = await socket.receive()
        if frame is None:
            return None
        try:
            event = protocol.receive(frame)
        except ProtocolError as exc:
            log.warning("media stream: ignored a bad frame before 'start': %s", exc)
            continue
        if isinstance(event, Start):
            return event


async def media_stream(ws: WebSocket) -> None:
    runtime: Runtime = ws.app.state.runtime
    scheme = "https" if ws.url.scheme == "wss" else "http"
    base = external_base_url(runtime.config.server.public_url, ws.headers, scheme)
    ws_url = websocket_url(base) + ws.url.path + (f"?{ws.url.query}" if ws.url.query else "")
    if not runtime.signatures.upgrade_ok(ws_url, ws.headers.get("x-twilio-signature")):
        log.warning("media stream: rejected upgrade: bad or missing X-Twilio-Signature (checked against %s)", ws_url)
        await ws.close(code=1008)
        return
    await ws.accept()
    socket = StarletteTwilioSocket(ws)
    protocol = MediaStreamProtocol(runtime.config.server.max_message_bytes)
    try:
        start = await asyncio.wait_for(_await_start(socket, protocol), START_TIMEOUT_S)
    except TimeoutError:
        start = None
    if start is None:
        log.warning("media stream: closed before a valid 'start' frame")
        await socket.close(1008, "no start")
        return
    # Any instance may take the stream, whichever answered the webhook (Runtime.claim).
    plan = await runtime.claim(start.custom_parameters.get("token", ""), start.call_sid)
    if plan is None:
        log.warning("media stream for call %s: unknown or expired stream token; closing", start.call_sid)
        await socket.close(1008, "unknown stream token")
        return
    info = CallInfo(start.call_sid, start.stream_sid, plan.route.name, plan.caller, plan.called)
    server = plan.config.server
    bridge = CallBridge(
        socket,
        protocol,
        info,
        lambda: runtime.open_session(plan),
        outbound_chunk_ms=server.outbound_chunk_ms,
        local_barge_in=(
            SpeechOnsetDetector(server.local_barge_in_dbfs, server.local_barge_in_ms)
            if server.local_barge_in_ms
            else None
        ),
        observers=runtime.observers(plan),
        before_close=lambda summary: runtime.before_stream_close(plan, summary),
        tool_handler=plan.tools,
        dtmf_handler=plan.tools.dtmf,
    )
    runtime.active[info.call_sid] = bridge
    summary = None
    try:
        summary = await bridge.run()
    finally:
        runtime.call_ended(plan, summary or bridge.summary)
