"""Every error voicebot raises on purpose derives from one base, and keeps the builtin base
existing handlers catch."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

from s2s.cascade.parts import PartError, UnknownPartType
from s2s.errors import VoicebotError
from s2s.gemini_live.protocol import GeminiProtocolError
from s2s.nova_sonic.protocol import ProtocolStateError
from s2s.nova_sonic.transport import NovaStreamError
from s2s.provider import ProviderConnectError
from s2s.registry import UnknownProviderType
from s2s.resilience import IllegalSessionMove
from telephony.call_state import IllegalTransition
from telephony.media_stream import ProtocolError
from voicebot.agent.agent import EndpointFailure
from voicebot.calls.outbound import NotPlaced
from voicebot.calls.stream_token import BadStreamToken
from voicebot.config import ConfigError
from voicebot.devtools.tape.format import TapeError
from voicebot.devtools.tape.replay import ReplayError
from voicebot.devtools.twilio_sim import NoStream
from voicebot.telemetry.setup import TelemetryConfigError


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (IllegalTransition, RuntimeError),
        (IllegalSessionMove, RuntimeError),
        (ProviderConnectError, Exception),
        (UnknownProviderType, LookupError),
        (ProtocolError, ValueError),
        (BadStreamToken, ValueError),
        (TapeError, ValueError),
        (TelemetryConfigError, ValueError),
        (EndpointFailure, Exception),
        (ConfigError, Exception),
        (ReplayError, Exception),
        (NoStream, Exception),
        (GeminiProtocolError, Exception),
        (ProtocolStateError, RuntimeError),
        (NovaStreamError, Exception),
        (PartError, Exception),
        (UnknownPartType, LookupError),
        (NotPlaced, Exception),
    ],
)
def test_errors_share_one_base_and_keep_their_builtin_one(error: type[Exception], builtin: type[Exception]) -> None:
    assert issubclass(error, VoicebotError)
    assert issubclass(error, builtin)


def test_a_media_stream_protocol_error_is_caught_as_a_voicebot_error() -> None:
    from telephony.media_stream import MediaStreamProtocol

    with pytest.raises(VoicebotError):
        MediaStreamProtocol().receive("not json")


def test_every_exception_class_in_the_project_derives_from_the_one_base() -> None:
    """Not only the ones listed above: every module of every layer is imported and each
    exception class it defines is checked, so a new one cannot slip past the base."""
    strays, checked = [], 0
    for layer in ("transcoding", "s2s", "telephony", "voicebot"):
        package = importlib.import_module(layer)
        for info in pkgutil.walk_packages(package.__path__, f"{layer}."):
            module = importlib.import_module(info.name)
            for name, value in vars(module).items():
                if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == module.__name__:
                    checked += 1
                    if not issubclass(value, VoicebotError):
                        strays.append(f"{module.__name__}.{name}")
    assert checked > 15  # the modules were found and walked
    assert strays == []
