"""Graceful drain: deploy and scale down without cutting calls.

On SIGTERM (Kubernetes stopping the pod, systemd, ``docker stop``):

1. ``runtime.draining`` goes true: the voice webhook answers 503, so Twilio uses the
   number's fallback URL (another instance), and ``/readyz`` fails, so the load balancer
   stops sending new work here. Calls already in progress are untouched.
2. Calls in progress may go on for up to ``[server] drain_seconds``.
3. Calls still up at the deadline are ended politely with an apology
   (``[server] drain_message``): through Twilio's REST API when ``[twilio] account_sid``
   is set (fleet-safe, see :meth:`Drainer._end_call`), else as the TwiML Twilio fetches
   from ``/twilio/stream-ended`` once we close the media stream (telephony.webhook).
4. The server lingers briefly so those stream-ended requests are answered, then exits 0.

A second SIGTERM, or SIGINT, stops at once (uvicorn's own handling).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Callable
from types import FrameType

import uvicorn

from telephony.bridge import CallBridge
from telephony.call_state import CallOutcome
from telephony.twiml import say_and_hangup
from voicebot.calls.outbound import OutboundCalls
from voicebot.calls.runtime import Runtime

log = logging.getLogger(__name__)

# After ending calls, how long to keep answering /twilio/stream-ended for them.
LINGER_S = 5.0
# Closing a stream and the bridge tearing down (provider session close is bounded at 3 s).
HANGUP_TIMEOUT_S = 5.0

SHUTDOWN_OUTCOME = CallOutcome.SERVER_SHUTDOWN


class Drainer:
    """Settings are read from ``runtime.config`` when the drain starts, so a hot-reloaded
    ``drain_seconds``/``drain_message`` applies."""

    def __init__(self, runtime: Runtime, outbound: OutboundCalls | None = None) -> None:
        self.runtime = runtime
        self.outbound = outbound

    def _ringing(self) -> list[str]:
        return self.outbound.ringing_here() if self.outbound is not None else []

    async def _wait(self, done: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``done()`` holds or ``timeout`` passes; calls end on other tasks, which
        wake this through :class:`voicebot.calls.changes.CallChanges`."""
        return await self.runtime.changes.wait_until(done, timeout)

    async def run(self) -> None:
        runtime = self.runtime
        runtime.draining = True
        deadline_s = runtime.config.server.drain_seconds
        log.warning(
            "draining: refusing new calls (webhook 503, readyz 503, POST /calls 503); %d call(s) in progress, "
            "%d answered call(s) whose media stream has yet to come and %d outbound call(s) still ringing may go "
            "on for up to %.0f s",
            len(runtime.active),
            len(runtime.handoff.pending),
            len(self._ringing()),
            deadline_s,
        )
        # A call answered just before the signal has no stream yet: it is waited for as a call
        # in progress (its stream is accepted while draining), until it connects or its
        # reservation expires (server.stream_connect_timeout_s). So is an outbound call that
        # rings still, when its answer can only come here: once answered it is such a call.
        if await self._wait(
            lambda: not runtime.active and not runtime.handoff.pending and not self._ringing(), deadline_s
        ):
            log.info("draining: every call finished on its own")
            return
        if self.outbound is not None and (ringing := self._ringing()):
            canceled = await self.outbound.cancel_ringing()
            log.warning(
                "draining: deadline passed; %d outbound call(s) still ringing, %d canceled", len(ringing), len(canceled)
            )
        ended = list(runtime.active.items())
        waiting = runtime.withdraw_pending()
        log.warning(
            "draining: deadline passed; ending %d call(s) with an apology (%d still without a stream)",
            len(ended) + len(waiting),
            len(waiting),
        )
        via_stream = await asyncio.gather(*(self._end_call(sid, bridge) for sid, bridge in ended))
        for plan in waiting:
            # Not through REST: on a fleet its stream may be live on another instance. Its late
            # stream is refused here, and Twilio's <Redirect> fetches this from stream-ended.
            runtime.next_twiml.set(
                plan.call_sid, say_and_hangup(runtime.config.server.drain_message, plan.route.language)
            )
        if not await self._wait(lambda: not runtime.active, HANGUP_TIMEOUT_S):
            log.error("draining: %d call(s) did not tear down in %.0f s", len(runtime.active), HANGUP_TIMEOUT_S)
        sids = [sid for (sid, _), stream in zip(ended, via_stream, strict=True) if stream]
        sids += [plan.call_sid for plan in waiting]
        if not sids:
            return
        log.info("draining: lingering up to %.0f s for Twilio to fetch %d apology(ies)", LINGER_S, len(sids))
        if not await self._wait(lambda: all(sid not in runtime.next_twiml for sid in sids), LINGER_S):
            log.warning("draining: Twilio did not fetch the apology for every call within %.0f s", LINGER_S)

    async def _end_call(self, call_sid: str, bridge: CallBridge) -> bool:
        """End one call with the apology; True when Twilio still has to fetch it from us.

        With REST credentials (``[twilio] account_sid`` + ``auth_token``) the call's TwiML is
        replaced through the REST API: Twilio plays the apology whichever instance its next
        request would reach. That matters on a fleet, where a draining pod has already left
        the load balancer and ``/twilio/stream-ended`` would land on another instance that
        knows nothing of this call. Without credentials, or if the update fails, the
        apology waits here for ``/twilio/stream-ended`` (served while we linger)."""
        route = next((r for r in self.runtime.config.routes if r.name == bridge.info.route), None)
        twiml = say_and_hangup(self.runtime.config.server.drain_message, route.language if route else None)
        delivered = await self.runtime.next_twiml.deliver(self.runtime.config.twilio, call_sid, twiml)
        await bridge.hang_up(SHUTDOWN_OUTCOME)
        return not delivered


class DrainingServer(uvicorn.Server):
    """uvicorn, except that the first SIGTERM drains (see module docstring) before the
    normal shutdown, and the process then exits 0 rather than re-raising the signal."""

    def __init__(self, config: uvicorn.Config, drainer: Drainer) -> None:
        super().__init__(config)
        self.drainer = drainer
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain: asyncio.Task[None] | None = None
        self._drain_requested = False

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM and not self._drain_requested and self._loop is not None and not self.should_exit:
            self._drain_requested = True
            # A signal handler runs between bytecodes of whatever the loop was doing: only
            # schedule; the drain itself runs as a task.
            self._loop.call_soon_threadsafe(self._start_drain)
            return
        # Stopping now (a second SIGTERM, SIGINT): uvicorn closes every media stream next, which
        # a call would take for the caller hanging up. Say first why they end (a plain
        # attribute write, safe between bytecodes).
        for bridge in list(self.drainer.runtime.active.values()):
            bridge.ending(SHUTDOWN_OUTCOME)
        super().handle_exit(sig, frame)

    def _start_drain(self) -> None:
        if self._drain is None:
            self._drain = asyncio.get_running_loop().create_task(self._drain_then_exit(), name="drain")

    async def _drain_then_exit(self) -> None:
        try:
            await self.drainer.run()
        except Exception:
            log.exception("draining failed; shutting down now")
        finally:
            self.should_exit = True
