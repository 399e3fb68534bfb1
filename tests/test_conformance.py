"""Every client frame the protocol objects produce, checked against the vendors' published
shapes (tests/fakes/conformance.py: the openai and google-genai SDK types, the Nova user
guide's event shapes), without a fake in between; and the checks themselves can fail."""

from __future__ import annotations

import base64
import json
from typing import Any

from s2s.gemini_live import GeminiLiveConfig
from s2s.gemini_live.protocol import CallerAudio, GeminiProtocol
from s2s.gemini_live.setup import opening
from s2s.gpt_live import GptLiveConfig, GptLiveProtocol
from s2s.nova_sonic.history import shape_history
from s2s.nova_sonic.protocol import NovaProtocol, PromptSettings
from s2s.openai_realtime import OpenAIRealtimeConfig, OpenAIRealtimeProtocol
from s2s.provider import SessionContext, Turn
from s2s.tools import ToolSpec
from tests.fakes import conformance

TOOL = ToolSpec("lookup", "Find an order", {"type": "object", "properties": {"order": {"type": "string"}}})
HISTORY = (Turn("caller", "Where is my order?"), Turn("bot", "Let me check."))


def test_every_openai_client_frame_is_a_realtime_client_event() -> None:
    ctx = SessionContext("CA1", tools=(TOOL,), history=HISTORY, greeting="Hello!", language="en-US")
    for audio_format in ("pcmu", "pcm24k"):
        config = OpenAIRealtimeConfig(api_key="k", audio_format=audio_format, noise_reduction="near_field")  # type: ignore[arg-type]
        p = OpenAIRealtimeProtocol(ctx, config)
        frames: list[Any] = []
        p.receive(json.dumps({"type": "session.created", "session": {}}))
        frames += p.data_to_send()
        p.receive(json.dumps({"type": "session.updated", "session": {}}))
        p.send_audio(b"\xff" * 160)
        p.send_text("1234#")
        p.receive(json.dumps({"type": "response.created", "response": {"id": "r1"}}))
        p.receive(
            json.dumps({"type": "response.output_audio.delta", "response_id": "r1", "item_id": "i1", "delta": "//8="})
        )
        p.truncate("i1", 0)
        p.send_tool_result("call-1", '{"status": "shipped"}')
        frames += p.data_to_send()
        assert len(frames) >= 8
        for frame in frames:
            assert conformance.openai_client_frame(json.loads(frame)) is None, frame


def test_every_gpt_live_client_frame_is_a_live_client_event() -> None:
    agent = ToolSpec("ask_agent", "Ask the agent", {"type": "object", "properties": {}})
    for delegation, tools in (("client", (agent,)), ("responses", (TOOL,))):
        ctx = SessionContext("CA1", tools=tools, history=HISTORY, greeting="Hello!")
        config = GptLiveConfig(api_key="k", delegation=delegation, acknowledgement_delay_ms=400)  # type: ignore[arg-type]
        p = GptLiveProtocol(ctx, config)
        p.start()
        p.receive(
            json.dumps(
                {
                    "type": "session.started",
                    "event_id": "e1",
                    "session": {"id": "s1", "expires_at": 2_000_000_000, "model": "gpt-live-1.1", "status": "active"},
                }
            )
        )
        p.send_audio(b"\xff" * 160)
        p.send_text("1234#")
        p.receive(
            json.dumps({"type": "session.output_audio.delta", "delta": base64.b64encode(b"\xff" * 4000).decode()})
        )
        p.receive(
            json.dumps(
                {
                    "type": "session.output_transcript.delta",
                    "event_id": "e2",
                    "delta": "hi there",
                    "start_ms": 0,
                    "end_ms": 0,
                }
            )
        )
        p.receive(
            json.dumps(
                {
                    "type": "session.input_transcript.delta",
                    "event_id": "e3",
                    "delta": "wait",
                    "start_ms": 0,
                    "end_ms": 0,
                }
            )
        )
        p.truncate("live-1", 0)
        p.receive(
            json.dumps(
                {
                    "type": "session.delegation.created",
                    "event_id": "e4",
                    "offset_ms": 10,
                    "delegation": {"id": "d1", "target": "client", "type": "delegation"},
                }
            )
        )
        p.send_tool_result("d1" if delegation == "client" else "call-1", '{"answer": "Shipped."}')
        p.close()
        frames = p.data_to_send()
        assert len(frames) >= 7
        for frame in frames:
            assert conformance.live_client_frame(json.loads(frame)) is None, frame


def test_every_nova_input_event_has_the_documented_shape() -> None:
    for nova2 in (True, False):
        settings = PromptSettings("Be brief.", "tiffany", 8000, 8000, tools=(TOOL,), nova2=nova2)
        p = NovaProtocol(settings)
        p.open(shape_history(HISTORY))
        p.send_audio(b"\x00\x01" * 160)
        if nova2:
            p.send_text("1234#")
        p.send_tool_result("tool-1", '{"status": "shipped"}')
        p.end()
        events = p.data_to_send()
        assert len(events) >= 12
        for event in events:
            assert conformance.nova_input_event(json.loads(json.dumps(event))) is None, event


def test_every_gemini_client_message_is_a_live_client_message() -> None:
    for model in ("gemini-3.8-live", "gemini-2.5-flash-native-audio-preview-12-2025"):
        ctx = SessionContext("CA1", model=model, history=HISTORY)
        p = GeminiProtocol(GeminiLiveConfig(api_key="k"), ctx)  # type: ignore[arg-type]
        p.open(opening(ctx, model))
        p.send_audio(b"\x00\x01" * 320)
        p.send_text("1234#")
        p.receive({"toolCall": {"functionCalls": [{"id": "fc1", "name": "lookup", "args": {}}]}})
        p.send_tool_result("fc1", '{"status": "shipped"}')
        messages = p.data_to_send()
        assert len(messages) == 4
        for message in messages:
            if isinstance(message, CallerAudio):
                assert conformance.gemini_client_message(json.loads(message.wire_text())) is None, message
                message = message.message()
            wire = message.model_dump(mode="json", by_alias=True, exclude_none=True)
            assert conformance.gemini_client_message(wire) is None, wire


def test_the_checks_flag_frames_the_published_shapes_do_not_define() -> None:
    assert "session.voice" in str(
        conformance.openai_client_frame({"type": "session.update", "session": {"type": "realtime", "voice": "x"}})
    )
    assert conformance.openai_client_frame({"type": "input_audio_buffer.append"}) is not None  # no audio
    assert conformance.openai_server_event({"type": "response.output_item.added", "event_id": "e"}) is not None
    assert conformance.gemini_client_message({"realtimeInput": {"audioStream": "x"}}) is not None
    assert conformance.gemini_server_message({"serverContent": {"turnDone": True}}) is not None
    assert conformance.nova_input_event({"event": {"audioInput": {"content": "AAA="}}}) is not None  # no names
    assert conformance.nova_input_event({"event": {"sessionStart": {}, "promptEnd": {}}}) is not None
    assert conformance.nova_output_event({"event": {"audioOutput": {"content": "AAA="}}}) is not None
