"""The ``[providers.NAME]`` table of ``type = "gemini_live"``."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, SecretStr, model_validator

from s2s.provider import ProviderConfig

Sensitivity = Literal["high", "low"]

DEFAULT_MODEL = "gemini-3.8-live"


class GeminiLiveConfig(ProviderConfig):
    """Gemini Live native audio, through the Gemini Developer API (``api_key``) or Vertex AI
    (``vertex_project`` + ``vertex_location``, credentials from Application Default Credentials).

    ``api_key`` may be left out: the SDK then reads ``GOOGLE_API_KEY`` / ``GEMINI_API_KEY``
    from the environment. Prefer ``api_key = "${GOOGLE_API_KEY}"`` so the config file says
    where the key comes from."""

    type: Literal["gemini_live"] = "gemini_live"
    api_key: SecretStr | None = None
    vertex_project: str | None = None
    vertex_location: str | None = None

    model: str = DEFAULT_MODEL
    voice: str = Field(default="Puck", description="prebuilt voice name (Puck, Charon, Kore, Fenrir, Aoede, ...)")
    instructions: str = Field(
        default=(
            "You are a friendly voice assistant on a phone call. Answer briefly and naturally; "
            "the caller hears you, so never use lists, markup or emojis."
        ),
        description="system instruction when the route gives none",
    )

    # Activity detection (https://ai.google.dev/api/live, ``AutomaticActivityDetection``). On,
    # the service finds the caller's turns; None leaves its defaults, which differ between the
    # Gemini API and Vertex. Off, voicebot finds them from the caller's level and sends
    # ``activityStart`` / ``activityEnd`` itself (s2s.gemini_live.activity).
    automatic_activity_detection: bool = Field(
        default=True,
        description="the service detects the caller's turns; false: voicebot's level detector does and sends "
        "activityStart/activityEnd",
    )
    start_sensitivity: Sensitivity | None = Field(default=None, description="service detector only")
    end_sensitivity: Sensitivity | None = Field(default=None, description="service detector only")
    prefix_padding_ms: int | None = Field(
        default=None, ge=0, description="speech this long starts a turn (voicebot's detector: 100 when unset)"
    )
    silence_duration_ms: int | None = Field(
        default=None, ge=0, description="quiet this long ends a turn (voicebot's detector: 500 when unset)"
    )
    activity_threshold_dbfs: float = Field(
        default=-35.0, le=0, description="voicebot's detector: caller level that counts as speech"
    )

    activity_handling: Literal["interrupts", "no_interruption"] = Field(
        default="interrupts",
        description="whether caller speech cuts the bot's answer (realtimeInputConfig.activityHandling)",
    )
    proactive_audio: bool = Field(
        default=False,
        description="let the model stay silent when speech is not meant for it (proactivity.proactiveAudio); "
        "always on for gemini-3.8-live, where nothing is sent",
    )
    input_transcription: bool = Field(default=True, description="caller transcript")
    output_transcription: bool = Field(
        default=True, description="bot transcript; also what the barge-in note quotes from"
    )

    # Connection and session limits (https://ai.google.dev/gemini-api/docs/live-session): a connection lasts ~10 min and
    # announces its end with goAway; resumption lets the next connection continue the same
    # conversation, compression lifts the 15-minute audio session cap.
    session_resumption: bool = True
    context_window_compression: bool = True
    compression_trigger_tokens: int | None = Field(default=None, gt=0)
    compression_target_tokens: int | None = Field(default=None, gt=0)

    keepalive_timeout_s: float | None = Field(
        default=60.0,
        gt=0,
        description="how long a WebSocket keepalive ping may wait for its pong (none: never give up)",
    )
    base_url: str | None = Field(default=None, description="endpoint override (proxies, tests)")
    api_version: str | None = Field(
        default=None,
        description="none = v1beta on the Gemini API, v1beta1 on Vertex AI (each backend's own Live version)",
    )
    ca_file: str | None = Field(default=None, description="PEM bundle to trust for a private endpoint")

    # How a route may tune the conversation for its own calls ([routes.provider_settings.NAME]).
    route_settings: ClassVar[frozenset[str]] = frozenset(
        {
            "automatic_activity_detection",
            "start_sensitivity",
            "end_sensitivity",
            "prefix_padding_ms",
            "silence_duration_ms",
            "activity_threshold_dbfs",
            "activity_handling",
            "proactive_audio",
            "input_transcription",
            "output_transcription",
        }
    )

    @model_validator(mode="after")
    def _one_backend(self) -> GeminiLiveConfig:
        vertex = self.vertex_project is not None or self.vertex_location is not None
        if vertex and self.api_key is not None:
            raise ValueError("set either api_key (Gemini API) or vertex_project/vertex_location, not both")
        if vertex and not (self.vertex_project and self.vertex_location):
            raise ValueError("Vertex AI needs both vertex_project and vertex_location")
        if vertex and self.api_version == "v1beta":
            raise ValueError("Vertex AI has no v1beta API; use v1beta1 or v1 (or leave api_version unset)")
        if (
            self.compression_trigger_tokens is not None
            and self.compression_target_tokens is not None
            and self.compression_target_tokens >= self.compression_trigger_tokens
        ):
            raise ValueError("compression_target_tokens must be below compression_trigger_tokens")
        if not self.automatic_activity_detection and (self.start_sensitivity or self.end_sensitivity):
            raise ValueError(
                "start_sensitivity/end_sensitivity tune the service's detector; with automatic_activity_detection "
                "= false voicebot's detector uses activity_threshold_dbfs, prefix_padding_ms and silence_duration_ms"
            )
        return self

    @property
    def vertex(self) -> bool:
        return self.vertex_project is not None

    @property
    def resolved_api_version(self) -> str:
        """The API version in the Live URL. The Gemini API serves Live on ``v1beta``
        (``google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent``,
        https://ai.google.dev/api/live); Vertex AI publishes ``v1`` and ``v1beta1``
        (``google.cloud.aiplatform.v1beta1.LlmBidiService``; google-genai's own Vertex default
        is ``v1beta1``) and refuses ``v1beta``, so one pinned value cannot serve both."""
        if self.api_version:
            return self.api_version
        return "v1beta1" if self.vertex else "v1beta"
