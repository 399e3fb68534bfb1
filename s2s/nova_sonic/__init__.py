"""Amazon Nova Sonic / Nova 2 Sonic over Bedrock's bidirectional stream.

Modules: :mod:`.config` (the provider table), :mod:`.protocol` (sans-I/O events),
:mod:`.history` (history replay shaping), :mod:`.transport` (the stream seam),
:mod:`.sdk_stream` (the seam over aws-sdk-bedrock-runtime, imported lazily),
:mod:`.session` (the asyncio shell).
"""

from s2s.nova_sonic.config import NovaSonicConfig
from s2s.nova_sonic.session import NovaSonicProvider, NovaSonicSession
from s2s.registry import ProviderSpec

SPEC = ProviderSpec(config_model=NovaSonicConfig, factory=NovaSonicProvider)

__all__ = ["SPEC", "NovaSonicConfig", "NovaSonicProvider", "NovaSonicSession"]
