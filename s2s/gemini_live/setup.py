"""What voicebot sends Gemini Live besides audio: the setup config and the opening (history
replay as ``clientContent``, greeting request). Pure builders of SDK types; the session sends
them (https://ai.google.dev/api/live: ``BidiGenerateContentSetup``, ``BidiGenerateContentClientContent``)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

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

# The greeting request, barge-in note and reconnect note reach the model as user-role text;
# this tells it whose words they are, so it acts on them instead of reading them out.
CALL_NOTES = (
    "Text in square brackets that starts with 'Call note' comes from the phone system, not from the "
    "caller. Follow it without mentioning it and never read it aloud."
)

# Seeded history must end with a user turn for 2.5 models
# (https://ai.google.dev/gemini-api/docs/live-guide, incremental content updates). When the call is
# reopened right after the bot spoke, this closes the seed.
_CONTINUE_NOTE = (
    "[Call note: the call continues on a new connection. If your last answer was cut off, finish it "
    "in a few words; otherwise let the caller speak.]"
)


def connect_config(config: GeminiLiveConfig, ctx: SessionContext, plan: Opening) -> types.LiveConnectConfig:
    """``LiveConnectConfig`` for one session. The route's voice/instructions override the
    provider defaults; ``ctx.resume_handle`` continues an earlier session's conversation."""
    if config.automatic_activity_detection:
        detection = types.AutomaticActivityDetection(
            disabled=False,
            start_of_speech_sensitivity=_START[config.start_sensitivity] if config.start_sensitivity else None,
            end_of_speech_sensitivity=_END[config.end_sensitivity] if config.end_sensitivity else None,
            prefix_padding_ms=config.prefix_padding_ms,
            silence_duration_ms=config.silence_duration_ms,
        )
    else:
        # voicebot marks the caller's turns itself (s2s.gemini_live.activity); the timings
        # configure its detector, not the service's.
        detection = types.AutomaticActivityDetection(disabled=True)
    model = ctx.model or config.model
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
        system_instruction="\n\n".join(
            part for part in (ctx.instructions or config.instructions, CALL_NOTES, plan.history_in_instruction) if part
        ),
        realtime_input_config=types.RealtimeInputConfig(
            automatic_activity_detection=detection,
            # Barge-in is the point of a phone bot: caller speech cuts the answer (the default,
            # stated so a service default change cannot silently turn it off). A route that must
            # not be interrupted (a legal notice) sets "no_interruption" in its provider_settings.
            activity_handling=_ACTIVITY_HANDLING[config.activity_handling],
        ),
        input_audio_transcription=types.AudioTranscriptionConfig() if config.input_transcription else None,
        output_audio_transcription=types.AudioTranscriptionConfig() if config.output_transcription else None,
        session_resumption=(
            types.SessionResumptionConfig(handle=ctx.resume_handle) if config.session_resumption else None
        ),
        context_window_compression=compression,
        tools=tool_declarations(ctx.tools),
        history_config=(types.HistoryConfig(initial_history_in_client_content=True) if plan.declare_history else None),
        proactivity=proactivity(config, model),
    )


def proactivity(config: GeminiLiveConfig, model: str) -> types.ProactivityConfig | None:
    """Proactive audio is opt-in on 2.5 native audio (``proactivity.proactiveAudio``,
    https://cloud.google.com/vertex-ai/generative-ai/docs/live-api/proactive-audio) and always on
    for gemini-3.8-live, which refuses the field set to false: only ever send ``true``, and only
    to models that take it."""
    if not config.proactive_audio or model_version(model) >= (3, 8):
        return None
    return types.ProactivityConfig(proactive_audio=True)


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


def greeting_text(greeting: str) -> str:
    """Gemini has no "say this" call: the bot speaks first when a user turn asks it to. The
    wording keeps the model to the configured text rather than improvising."""
    return f"[Call note: the phone call has just been connected. Greet the caller now by saying: {greeting}]"


_VERSION_RE = re.compile(r"gemini-(\d+)(?:\.(\d+))?")


def model_version(model: str) -> tuple[int, int]:
    """(major, minor) of a Gemini model name; (0, 0) when it names none."""
    match = _VERSION_RE.search(model.split("/")[-1])
    return (int(match.group(1)), int(match.group(2) or 0)) if match else (0, 0)


def restricts_client_content(model: str) -> bool:
    """Whether the model takes ``clientContent`` only as initial history.

    The 3.x Live previews before 3.8 (gemini-3.1-flash-live-preview: "send_client_content is
    only allowed for initial history", https://ai.google.dev/gemini-api/docs/models/gemini-3.1-flash-live-preview
    and livekit/agents#5251) close the socket with 1007 on any other ``clientContent`` and do
    not answer replayed history until fresh input arrives. gemini-3.8-live supports
    ``send_client_content`` with explicit roles for the whole session
    (https://ai.google.dev/gemini-api/docs/models/gemini-3.8-live, "Client content updates"),
    as 2.5 models do."""
    major, minor = model_version(model)
    return major == 3 and minor < 8


def client_content_waits(model: str) -> bool:
    """Whether a ``clientContent`` sent with ``turnComplete=false`` waits for what follows
    instead of blocking answers: documented for gemini-3.8-live ("If you send content without
    turn_complete, the server waits for subsequent messages before responding"). On 2.5 an
    incomplete ``clientContent`` stops answers to later realtime audio
    (google-gemini/live-api-web-console#60)."""
    return model_version(model) >= (3, 8)


_ACTIVITY_HANDLING = {
    "interrupts": types.ActivityHandling.START_OF_ACTIVITY_INTERRUPTS,
    "no_interruption": types.ActivityHandling.NO_INTERRUPTION,
}


def tool_result_scheduling(model: str) -> types.FunctionResponseScheduling | None:
    """gemini-3.8-live runs function calls NON_BLOCKING by default: the model may go on talking
    (a "one moment") while the tool runs. Its result is then spoken ``WHEN_IDLE``, after what
    the model is saying, rather than cutting it off mid-word; while the caller talks, 3.8 waits
    for them either way (https://ai.google.dev/gemini-api/docs/models/gemini-3.8-live,
    "Asynchronous function calling"). Blocking calls (earlier models) take no scheduling."""
    return types.FunctionResponseScheduling.WHEN_IDLE if model_version(model) >= (3, 8) else None


def resume_needs_closed_socket(model: str) -> bool:
    """gemini-3.8-live refuses (close code 1011) a ``sessionResumption`` handle while the
    session that issued it still has its socket open; resume only after that socket closed."""
    return model_version(model) >= (3, 8)


@dataclass(frozen=True, slots=True)
class Opening:
    """What to send right after setup. ``seed`` goes as one ``clientContent`` with
    ``turnComplete=true``; ``prompt`` as realtime text after it."""

    seed: list[types.Content]
    prompt: str | None = None
    complete: bool = True  # turnComplete of the seed: False lets it wait for the caller (3.8)
    declare_history: bool = False  # historyConfig.initialHistoryInClientContent (3.1 only)
    history_in_instruction: str | None = None  # the conversation so far, where no seed is possible


def history_transcript(history: tuple[Turn, ...]) -> str:
    lines = [f"{'Caller' if turn.role == 'caller' else 'You'}: {turn.text}" for turn in history if turn.text]
    return "The call so far (continue it, do not repeat yourself):\n" + "\n".join(lines)


def opening(ctx: SessionContext, model: str, *, vertex: bool = False) -> Opening:
    """History replay and greeting for a new session.

    A resumed session already holds the conversation: nothing is replayed, no greeting is
    repeated. Otherwise the seed is always completed (``turnComplete=true``): a
    ``clientContent`` left incomplete stops the model from answering later realtime audio
    (google-gemini/live-api-web-console#60), and 3.x closes the socket on an incomplete seed.
    On 2.5 the seed must end with a user turn (Live guide, incremental content updates) and is answered at once,
    so the greeting request is its last turn; a seed ending with the bot gets a closing note,
    which the model may answer briefly (after a reconnect, a short "where were we" is fine).
    3.1 waits for fresh input after a seed, so its greeting request goes as realtime text.
    Vertex AI's Live setup documents no ``historyConfig`` (the Vertex ``BidiGenerateContentSetup``,
    https://cloud.google.com/vertex-ai/generative-ai/docs/model-reference/multimodal-live), so on
    Vertex a 3.1 model gets the conversation so far in its system instruction instead."""
    if ctx.resume_handle:
        return Opening([])
    seed = history_turns(ctx.history)
    if restricts_client_content(model):
        prompt = greeting_text(ctx.greeting) if ctx.greeting else None
        if vertex and seed:
            return Opening([], prompt, history_in_instruction=history_transcript(ctx.history))
        return Opening(seed, prompt, declare_history=bool(seed))
    if ctx.greeting:
        seed.append(text_turn("user", greeting_text(ctx.greeting)))
    elif seed and client_content_waits(model):
        # 3.8: history without turnComplete waits for the caller's next words, so a renewed
        # session does not speak up on its own between turns.
        return Opening(seed, complete=False)
    elif seed and seed[-1].role != "user":
        seed.append(text_turn("user", _CONTINUE_NOTE))
    return Opening(seed)
