"""Reaching a running call's server-side objects from a test: the bridge serving a simulated
call, and the echo line's session behind it (what the model received, which tool results came
back), plus when the caller last heard bot audio."""

from __future__ import annotations

from s2s.echo import EchoSession
from telephony.bridge import CallBridge
from tests.support.server import RunningServer
from voicebot.devtools.twilio_sim import SimulatedCall


async def live_bridge(server: RunningServer, call: SimulatedCall) -> CallBridge:
    await call.wait_for(lambda: call.call_sid in server.runtime.active, timeout=5)
    return server.runtime.active[call.call_sid]


def echo_session(bridge: CallBridge) -> EchoSession:
    """The echo line's own session (under the recovery layer's wrapper, when there is one)."""
    session = getattr(bridge.session, "current", bridge.session)
    assert isinstance(session, EchoSession)
    return session


async def echo_of(server: RunningServer, call: SimulatedCall) -> EchoSession:
    """The echo session of ``call`` once the bridge has opened it."""
    bridge = await live_bridge(server, call)
    await call.wait_for(lambda: bridge.session is not None, timeout=5)
    return echo_session(bridge)


def last_heard_ms(call: SimulatedCall) -> float:
    """When the last bot audio finished playing for the caller: the last echoed mark."""
    return max(e.t_ms for e in call.log if e.direction == "in" and e.event == "mark")
