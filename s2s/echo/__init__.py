"""``type = "echo"``: a real local S2S line with no network.

After the caller pauses it speaks the caller's utterance back, sending audio faster than
real time in chunks as cloud providers do, and raises speech-started when the caller
talks over it, so barge-in, marks and truncation are exercised end to end. Its audio format
is configurable so the transcoding paths can be exercised too.

It has no TTS, so it "speaks" in tones. A greeting (``SessionContext.greeting``) is a short
rising three-tone chime (:data:`GREETING_TONES`) sent before anything else, like a provider
speaking first. For tests of tools it can call a tool on cue (``tool_cues``): when
caller-side text containing ``on_text`` arrives (keypad input, a note), it says a tone of
``say_ms`` (the model's "one moment" / "goodbye"), then emits the ``ToolCall``; after the
result it may say another tone of ``reply_ms``. Texts and tool results it receives are kept
in ``received_text`` / ``tool_results`` so tests can see what reached the "model".

Layout as every vendor folder: ``config`` (the provider table), ``engine`` (the sans-I/O core;
the echo line has no wire protocol, so it stands where ``protocol`` stands for the others),
``session`` (the asyncio shell and the ``Provider``).
"""

from s2s.echo.config import EchoConfig, EchoToolCue
from s2s.echo.session import GREETING_TONES, EchoProvider, EchoSession, tone_audio
from s2s.provider import Provider, ProviderConfig
from s2s.registry import ProviderSpec


def _create(name: str, config: ProviderConfig) -> Provider:
    assert isinstance(config, EchoConfig)
    return EchoProvider(name, config)


SPEC = ProviderSpec(config_model=EchoConfig, factory=_create)

__all__ = ["GREETING_TONES", "SPEC", "EchoConfig", "EchoProvider", "EchoSession", "EchoToolCue", "tone_audio"]
