"""Grok Voice Agent sessions over ``websockets`` (xAI publishes no Python realtime SDK)."""

from __future__ import annotations

from urllib.parse import urlencode

from s2s.grok.config import GrokConfig
from s2s.grok.protocol import GrokProtocol
from s2s.provider import SessionContext
from s2s.realtime_protocol import RealtimeProvider, RealtimeTransport, WebSocketTransport


class GrokProvider(RealtimeProvider):
    config: GrokConfig

    def make_protocol(self, ctx: SessionContext) -> GrokProtocol:
        return GrokProtocol(ctx, self.config)

    async def connect(self, ctx: SessionContext) -> RealtimeTransport:
        url = f"{self.config.base_url.rstrip('/')}/realtime?{urlencode({'model': self.model_for(ctx)})}"
        return await WebSocketTransport.connect(url, self.config.api_key.get_secret_value())
