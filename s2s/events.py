"""The one event vocabulary every provider speaks to the call bridge.

Provider protocol modules translate their wire events into these; the bridge, the
recovery layer, call tapes and metrics only ever see these. Audio is in the provider's
declared output format (``ProviderSession.output_format``); the bridge transcodes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

Role = Literal["caller", "bot"]


@dataclass(frozen=True, slots=True)
class AudioOut:
    """A chunk of bot speech. ``item_id`` names the bot utterance it belongs to; it is the
    handle ``ProviderSession.truncate`` takes after a barge-in."""

    audio: bytes
    item_id: str


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """The provider heard the caller start speaking (or says it was interrupted).

    This is the barge-in trigger: the bridge clears Twilio's buffer at once if bot audio is
    queued or playing, and tells the provider what was heard."""

    item_id: str | None = None


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    """The caller stopped speaking; a bot answer usually follows."""


@dataclass(frozen=True, slots=True)
class Transcript:
    """Text of what the caller said or the bot said. ``final`` fragments are what the
    transcript keeps; partial ones are for live display only."""

    role: Role
    text: str
    final: bool = True
    item_id: str | None = None


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The model asks to run a tool; answer with ``ProviderSession.send_tool_result``."""

    call_id: str
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TurnDone:
    """The bot finished (or abandoned) its answer. No more ``AudioOut`` for ``item_id``."""

    item_id: str | None = None
    interrupted: bool = False


@dataclass(frozen=True, slots=True)
class ProviderError:
    """An error the provider reported. ``fatal`` errors are followed by ``Closed``."""

    code: str
    message: str
    fatal: bool = False


@dataclass(frozen=True, slots=True)
class SessionExpiring:
    """The provider session will end soon (Gemini ``goAway``, Nova's stream limit, a session
    cap). The rotation policy renews it between turns; ``seconds_left`` may be unknown."""

    reason: str
    seconds_left: float | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    """Billable use the provider reported for one session, cumulative: a later report of the
    same ``session_id`` replaces the earlier one. Providers fill what they report: seconds
    (GPT-Live ``session.usage.updated``, billed by active audio time) or tokens by modality
    (OpenAI Realtime ``response.done``, Gemini ``usageMetadata``, Nova ``usageEvent``),
    summed over the session by the protocol. ``cached_*_in_tokens`` are the part of the
    input tokens served from the provider's cache, by modality. A cascade reports its parts:
    the caller audio its speech-to-text was sent (``stt_s``), its language model's text
    tokens, and what its text-to-speech synthesised (``tts_chars``, ``tts_s``). ``final``
    marks the provider's last word on the session."""

    session_id: str
    billable_s: float = 0.0
    final: bool = False
    text_in_tokens: int = 0
    audio_in_tokens: int = 0
    cached_text_in_tokens: int = 0
    cached_audio_in_tokens: int = 0
    text_out_tokens: int = 0
    audio_out_tokens: int = 0
    stt_s: float = 0.0
    tts_chars: int = 0
    tts_s: float = 0.0

    def added(self, **counts: float) -> Usage:
        """This report with ``counts`` (field name -> amount, see :data:`USAGE_COUNTS`) added."""
        return replace(self, **{name: getattr(self, name) + amount for name, amount in counts.items()})

    def plus(self, other: Usage) -> Usage:
        """Both reports' counts summed (two sessions of one provider, a call's total)."""
        return self.added(**{name: getattr(other, name) for name in USAGE_COUNTS})


USAGE_COUNTS: tuple[str, ...] = tuple(f.name for f in fields(Usage) if f.name not in ("session_id", "final"))
"""The fields of :class:`Usage` that count something (everything but its identity and ``final``)."""


@dataclass(frozen=True, slots=True)
class Closed:
    """The session ended. ``error`` is True when it was not asked to close (socket drop,
    fatal error, timeout): the recovery layer reacts to that."""

    reason: str
    error: bool = False


ProviderEvent = (
    AudioOut
    | SpeechStarted
    | SpeechStopped
    | Transcript
    | ToolCall
    | TurnDone
    | ProviderError
    | SessionExpiring
    | Usage
    | Closed
)
