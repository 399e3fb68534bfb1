"""The OpenAI-Realtime-style protocol shared by ``openai_realtime`` and ``grok``: the sans-I/O
protocol object, the asyncio session shell, and the config fields both providers have."""

from s2s.realtime_protocol.config import AUDIO_FORMATS, DEFAULT_INSTRUCTIONS, RealtimeProviderConfig
from s2s.realtime_protocol.protocol import RealtimeProtocol, function_tools, history_item, wire_audio_format
from s2s.realtime_protocol.session import RealtimeProvider, RealtimeSession
from s2s.realtime_protocol.transport import RealtimeTransport, WebSocketTransport

__all__ = [
    "AUDIO_FORMATS",
    "DEFAULT_INSTRUCTIONS",
    "RealtimeProtocol",
    "RealtimeProvider",
    "RealtimeProviderConfig",
    "RealtimeSession",
    "RealtimeTransport",
    "WebSocketTransport",
    "function_tools",
    "history_item",
    "wire_audio_format",
]
