"""What voicebot sends Gemini Live besides audio: the setup config and the ordered
``clientContent`` turns (history replay, greeting request, barge-in note). Pure builders of
SDK types; the session sends them (reference sections 2 and 4)."""

from __future__ import annotations

import logging

from google.genai import types

from s2s.gemini_live.config import GeminiLiveConfig
from s2s.provider import SessionContext, Turn
from s2s.tools import ToolSpec
from transcoding.formats import PCM16_16K

log = logging.getLogger(__name__)

INPUT_MIME = f"audio/pcm;rate={PCM16_16K.sample_rate}"

_START = {
    "high": types.StartSensitivity.START_SENSITIVITY_HIGH,
    "low": types.StartSensitivity.START_SENSITIVITY_LOW,
}
_END = {"high": types.EndSensitivity.END_SENSITIVITY_HIGH, "low": types.EndSensitivity.END_SENSITIVITY_LOW}

# Seeded history must end with a user turn for 2.5 models (section 4). When the call is
# reopened right after the bot spoke, this closes the seed without asking for an answer.
_CONTINUE_NOTE = "[Call note: the call continues on a new connection. Wait for the caller to speak.]"


def connect_config(config: GeminiLiveConfig, ctx: SessionContext) -> types.LiveConnectConfig:
    """``LiveConnectConfig`` for one session. The route's voice/instructions override the
    provider defaults; ``ctx.resume_handle`` continues an earlier session's conversation."""
    detection = types.AutomaticActivityDetection(
        disabled=False,
        start_of_speech_sensitivity=_START[config.start_sensitivity] if config.start_sensitivity else None,
        end_of_speech_sensitivity=_END[config.end_sensitivity] if config.end_sensitivity else None,
        prefix_padding_ms=config.prefix_padding_ms,
        silence_duration_ms=config.silence_duration_ms,
    )
    compression = None
    if config.context_window_compression:
        window = None
        if config.compression_target_tokens is not None:
            window = types.SlidingWindow(target_tokens=config.compression_target_tokens)
        compression = types.ContextWindowCompressionConfig(
            trigger_tokens=config.compression_trigger_tokens, sliding_window=window or types.SlidingWindow()
        )
    return types.LiveConnectConfig(
        response_modalities=[types.Modality.AUDIO],
        speech_config=types.SpeechConfig(
            voice_config=types.VoiceConfig(
                prebuilt_voice_config=types.PrebuiltVoiceConfig(voice_name=ctx.voice or config.voice)
            )
        ),
        system_instruction=ctx.instructions or config.instructions,
        realtime_input_config=types.RealtimeInputConfig(
            automatic_activity_detection=detection,
            # Barge-in is the point of a phone bot: caller speech cuts the answer (the default,
            # stated so a service default change cannot silently turn it off).
            activity_handling=types.ActivityHandling.START_OF_ACTIVITY_INTERRUPTS,
        ),
        input_audio_transcription=types.AudioTranscriptionConfig() if config.input_transcription else None,
        output_audio_transcription=types.AudioTranscriptionConfig() if config.output_transcription else None,
        session_resumption=(
            types.SessionResumptionConfig(handle=ctx.resume_handle) if config.session_resumption else None
        ),
        context_window_compression=compression,
        tools=tool_declarations(ctx.tools),
    )


def tool_declarations(tools: tuple[ToolSpec, ...]) -> types.ToolListUnion | None:
    if not tools:
        return None
    return [types.Tool(function_declarations=[function_declaration(spec) for spec in tools])]


def function_declaration(spec: ToolSpec) -> types.FunctionDeclaration:
    """``Schema`` is the form every Live model documents; JSON Schema the SDK's ``Schema``
    cannot express (``const``, ``$defs``, type lists ...) goes as ``parametersJsonSchema``."""
    try:
        schema = types.Schema.model_validate(spec.parameters)
    except (ValueError, AttributeError, TypeError):  # the SDK's converter trips on some (e.g. type lists)
        log.info("tool %s: parameters sent as raw JSON Schema", spec.name)
        return types.FunctionDeclaration(
            name=spec.name, description=spec.description, parameters_json_schema=spec.parameters
        )
    return types.FunctionDeclaration(name=spec.name, description=spec.description, parameters=schema)


def text_turn(role: str, text: str) -> types.Content:
    return types.Content(role=role, parts=[types.Part(text=text)])


def history_turns(history: tuple[Turn, ...]) -> list[types.Content]:
    return [text_turn("user" if turn.role == "caller" else "model", turn.text) for turn in history if turn.text]


def greeting_request(greeting: str) -> types.Content:
    """Gemini has no "say this" call: the bot speaks first when a complete user turn asks it
    to. The wording keeps the model to the configured text rather than improvising."""
    return text_turn(
        "user",
        f"[Call note: the phone call has just been connected. Greet the caller now by saying: {greeting}]",
    )


def opening_turns(ctx: SessionContext) -> tuple[list[types.Content], bool]:
    """``clientContent`` to send right after setup, and its ``turnComplete`` flag.

    A resumed session already holds the conversation: nothing is replayed and no greeting is
    repeated. Otherwise the history is replayed (ending with a user turn, section 4) and the
    greeting, if any, is the last user turn, completed so the model answers it at once."""
    if ctx.resume_handle:
        return [], False
    turns = history_turns(ctx.history)
    if ctx.greeting:
        turns.append(greeting_request(ctx.greeting))
        return turns, True
    if turns and turns[-1].role != "user":
        turns.append(text_turn("user", _CONTINUE_NOTE))
    return turns, False
