"""What the voice webhook decided for a call (:class:`CallPlan`), and the pieces of the
decision that depend only on config: the recovery policy and the TwiML for a call the route
cannot take."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from s2s.provider import Provider, SessionContext
from s2s.resilience import RecoveryPolicy, ResilientSession
from telephony.call_state import Direction
from telephony.twiml import dial, say_and_hangup
from voicebot.agent.registry import CallTools
from voicebot.calls.admission import SlotLease
from voicebot.calls.cost import CallCost
from voicebot.config import AppConfig, OnUnavailable, RouteConfig

NO_ROUTE_MESSAGE = "Sorry, this number cannot take calls right now. Goodbye."


def unavailable_twiml(action: OnUnavailable, message: str | None = None) -> str:
    """A polite message, then a transfer to a human when the route names one, else hang up."""
    text = message or action.say
    return dial(action.dial, text) if action.dial else say_and_hangup(text, action.language)


def recovery_policy(config: AppConfig, route: RouteConfig) -> RecoveryPolicy:
    r = config.resilience
    return RecoveryPolicy(
        budget_s=route.retry_budget_s,
        attempts=r.connect_attempts,
        backoff_s=r.backoff_s,
        watchdog_s=r.watchdog_s,
        buffer_ms=r.recovery_audio_ms,
        close_timeout_s=r.rotation_close_timeout_s,
    )


@dataclass(slots=True)
class CallPlan:
    """What the webhook decided for a call, waiting for (then held by) its media stream."""

    token: str
    call_sid: str
    route: RouteConfig
    providers: list[Provider]
    caller: str
    called: str
    config: AppConfig
    tools: CallTools
    created_at: float = field(default_factory=time.monotonic)
    # the provider slot the call holds (voicebot.calls.admission) and its session once open
    lease: SlotLease | None = None
    session: ResilientSession | None = None
    # the route's max_call_seconds timer, armed once the session is open; it belongs to this
    # plan, so nothing done to another plan of the same CallSid can cancel it
    time_limit: asyncio.TimerHandle | None = None
    time_warning: asyncio.TimerHandle | None = None  # time_warning_s before time_limit
    # when the voice webhook request arrived (the call span starts here)
    received_at: float | None = None
    # awaited before the provider session opens (voicebot.calls.outbound: the AMD verdict)
    before_session: Callable[[], Awaitable[None]] | None = None
    direction: Direction = "inbound"
    # told where the call's tape is written, once its stream starts recording (an outbound
    # call's GET /calls/{sid} and campaign results name it)
    on_tape: Callable[[Path], None] | None = None
    # the call's provider usage and cost (voicebot.calls.cost), from its stream on
    cost: CallCost | None = None

    def session_context(self) -> SessionContext:
        """Await ``self.tools.prepare()`` first: it loads what the instructions add (memory)."""
        route = self.route
        by_name = {provider.name: provider for provider in self.providers}
        return SessionContext(
            call_sid=self.call_sid,
            instructions=self.tools.instructions(),
            voice=route.voice,
            model=route.model,
            language=route.language,
            greeting=route.greeting,
            greeting_uninterruptible=route.greeting_uninterruptible,
            tools=self.tools.specs,
            provider_configs={
                name: by_name[name].config.for_route(settings)
                for name, settings in route.provider_settings.items()
                if name in by_name
            },
        )
