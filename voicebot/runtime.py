"""Process-wide state the HTTP and WebSocket handlers share: the loaded config and its
providers, calls between webhook and media stream, live calls, and what Twilio should do
after each stream ends."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from s2s.provider import Provider, ProviderConnectError, ProviderSession, SessionContext
from s2s.registry import build_provider
from telephony.bridge import CallBridge, CallSummary
from telephony.observer import CallObserver
from telephony.signature import SignatureChecker
from telephony.twiml import say_and_hangup
from voicebot.config import AppConfig, RouteConfig
from voicebot.telemetry.metrics import provider_connect
from voicebot.tools.registry import CallTools

log = logging.getLogger(__name__)

_REMEMBERED_OUTCOMES = 10_000


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
    # when the voice webhook request arrived (set by telephony.webhook; the call span starts here)
    received_at: float | None = None

    def session_context(self) -> SessionContext:
        """Await ``self.tools.prepare()`` first: it loads what the instructions add (memory)."""
        route = self.route
        return SessionContext(
            call_sid=self.call_sid,
            instructions=self.tools.instructions(),
            voice=route.voice,
            model=route.model,
            language=route.language,
            greeting=route.greeting,
            tools=self.tools.specs,
        )


class Runtime:
    def __init__(self, config: AppConfig) -> None:
        self.pending: dict[str, CallPlan] = {}
        self.active: dict[str, CallBridge] = {}
        self.next_twiml: OrderedDict[str, str] = OrderedDict()
        # one observer per call from each factory (voicebot.telemetry registers CallTelemetry)
        self.observer_factories: list[Callable[[CallPlan], CallObserver]] = []
        self.draining = False
        self.apply(config)

    def apply(self, config: AppConfig) -> None:
        """Use ``config`` for new calls; calls in progress keep the providers they hold."""
        self.config = config
        self.providers: dict[str, Provider] = {name: build_provider(name, c) for name, c in config.providers.items()}
        token = config.twilio.auth_token.get_secret_value() if config.twilio.auth_token else None
        self.signatures = SignatureChecker(token, config.twilio.validate_signatures)

    # -- webhook -> media stream -------------------------------------------------------

    def select_route(self, params: Mapping[str, str]) -> RouteConfig:
        return self.config.routes[0]

    def plan_call(self, params: Mapping[str, str]) -> CallPlan:
        self.expire_pending()
        route = self.select_route(params)
        call_sid, caller = params.get("CallSid", ""), params.get("From", "")
        plan = CallPlan(
            token=secrets.token_urlsafe(18),
            call_sid=call_sid,
            route=route,
            providers=[self.providers[name] for name in route.providers],
            caller=caller,
            called=params.get("To", ""),
            config=self.config,
            tools=CallTools(route, self.config, call_sid, caller, self.set_next_twiml),
        )
        self.pending[plan.token] = plan
        return plan

    def claim(self, token: str) -> CallPlan | None:
        self.expire_pending()
        return self.pending.pop(token, None)

    def expire_pending(self) -> None:
        deadline = time.monotonic() - self.config.server.stream_connect_timeout_s
        for token, plan in list(self.pending.items()):
            if plan.created_at < deadline:
                log.warning("call %s: media stream never connected; reservation released", plan.call_sid)
                del self.pending[token]

    async def open_session(self, plan: CallPlan) -> ProviderSession:
        provider = plan.providers[0]
        await plan.tools.prepare()
        try:
            with provider_connect(provider.name):
                return await asyncio.wait_for(
                    provider.open_session(plan.session_context()), provider.config.connect_timeout_s
                )
        except TimeoutError:
            raise ProviderConnectError(provider.name, "connect timed out") from None

    def observers(self, plan: CallPlan) -> list[CallObserver]:
        return [factory(plan) for factory in self.observer_factories]

    # -- after the stream ---------------------------------------------------------------

    def call_ended(self, plan: CallPlan, summary: CallSummary) -> None:
        self.active.pop(plan.call_sid, None)
        plan.tools.call_ended(summary)
        if summary.outcome in ("provider-unavailable", "provider-lost") and plan.call_sid not in self.next_twiml:
            self.set_next_twiml(
                plan.call_sid,
                say_and_hangup(
                    "Sorry, we are having technical difficulties. Please call again later.", plan.route.language
                ),
            )

    def set_next_twiml(self, call_sid: str, twiml: str) -> None:
        self.next_twiml[call_sid] = twiml
        while len(self.next_twiml) > _REMEMBERED_OUTCOMES:
            self.next_twiml.popitem(last=False)

    def take_next_twiml(self, call_sid: str) -> str | None:
        return self.next_twiml.pop(call_sid, None)
