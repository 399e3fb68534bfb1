"""Nova Sonic protocol module: input event sequence, history shaping, output event mapping."""

from __future__ import annotations

import base64
import json
from itertools import count

import pytest

from s2s.events import AudioOut, ProviderError, SpeechStarted, SpeechStopped, ToolCall, Transcript, TurnDone, Usage
from s2s.nova_sonic.config import NOVA_SONIC_V1, NovaSonicConfig
from s2s.nova_sonic.history import MAX_HISTORY_BYTES, shape_history, split_utf8
from s2s.nova_sonic.protocol import NovaProtocol, PromptSettings, ProtocolStateError, is_interruption_marker
from s2s.provider import Turn
from s2s.tools import ToolSpec

WEATHER = ToolSpec("get_weather", "Weather for a city", {"type": "object", "properties": {"city": {"type": "string"}}})


def make_protocol(**overrides: object) -> NovaProtocol:
    ids = count(1)
    settings = dict(instructions="Be brief.", voice="tiffany", input_sample_rate=8000, output_sample_rate=8000)
    settings.update(overrides)
    return NovaProtocol(PromptSettings(**settings), new_id=lambda: f"id{next(ids)}")  # type: ignore[arg-type]


def names(events: list[dict]) -> list[str]:
    return [next(iter(e["event"])) for e in events]


def body(event: dict) -> dict:
    return next(iter(event["event"].values()))


def test_opening_sequence_declares_rates_voice_tools_and_ends_with_the_audio_content() -> None:
    proto = make_protocol(tools=(WEATHER,), endpointing_sensitivity="HIGH")
    history = shape_history([Turn("caller", "Hi"), Turn("bot", "Hello, how can I help?")])
    proto.open(history)
    events = proto.data_to_send()
    assert names(events) == [
        "sessionStart", "promptStart",
        "contentStart", "textInput", "contentEnd",  # SYSTEM
        "contentStart", "textInput", "contentEnd",  # USER history
        "contentStart", "textInput", "contentEnd",  # ASSISTANT history
        "contentStart",  # the one AUDIO content
    ]  # fmt: skip
    assert body(events[0])["turnDetectionConfiguration"] == {"endpointingSensitivity": "HIGH"}
    prompt = body(events[1])
    assert prompt["audioOutputConfiguration"]["sampleRateHertz"] == 8000
    assert prompt["audioOutputConfiguration"]["voiceId"] == "tiffany"
    schema = prompt["toolConfiguration"]["tools"][0]["toolSpec"]["inputSchema"]["json"]
    assert isinstance(schema, str) and json.loads(schema) == WEATHER.parameters
    assert prompt["toolUseOutputConfiguration"] == {"mediaType": "application/json"}
    roles = [body(e)["role"] for e in events if names([e]) == ["contentStart"]]
    assert roles == ["SYSTEM", "USER", "ASSISTANT", "USER"]
    audio = body(events[-1])
    assert audio["type"] == "AUDIO" and audio["interactive"] is True
    assert audio["audioInputConfiguration"]["sampleRateHertz"] == 8000
    # every event after sessionStart names the one prompt
    assert {body(e)["promptName"] for e in events[1:]} == {proto.prompt_name}


def test_v1_gets_no_turn_detection_and_no_text_input_mid_session() -> None:
    proto = make_protocol(nova2=False, endpointing_sensitivity="LOW")
    proto.open()
    events = proto.data_to_send()
    assert "turnDetectionConfiguration" not in body(events[0])
    assert "toolConfiguration" not in body(events[1])
    with pytest.raises(ProtocolStateError, match="v1"):
        proto.send_text("1 2 3")


def test_events_in_the_wrong_state_raise_naming_the_state() -> None:
    proto = make_protocol()
    with pytest.raises(ProtocolStateError, match="'new'"):
        proto.send_audio(b"\0\0")
    proto.open()
    proto.data_to_send()
    proto.end()
    assert names(proto.data_to_send()) == ["contentEnd", "promptEnd", "sessionEnd"]
    proto.end()
    assert proto.data_to_send() == []
    with pytest.raises(ProtocolStateError, match="'closed'"):
        proto.send_tool_result("t1", "{}")


def test_audio_and_tool_result_events_carry_the_audio_and_tool_ids() -> None:
    proto = make_protocol()
    proto.open()
    proto.data_to_send()
    proto.send_audio(b"\x01\x02")
    [audio_event] = proto.data_to_send()
    audio = body(audio_event)
    assert audio["contentName"] == proto.audio_content_name and base64.b64decode(audio["content"]) == b"\x01\x02"
    proto.send_tool_result("tooluse-9", '{"temp": 21}')
    start, result, end = proto.data_to_send()
    assert body(start)["toolResultInputConfiguration"]["toolUseId"] == "tooluse-9"
    assert body(start)["role"] == "TOOL" and body(result)["content"] == '{"temp": 21}'
    assert body(start)["contentName"] == body(result)["contentName"] == body(end)["contentName"]


def test_history_merges_runs_starts_with_user_and_splits_long_text() -> None:
    turns = [
        Turn("bot", "Welcome!"),  # a leading bot turn (greeting) cannot open Nova history
        Turn("caller", "I need"),
        Turn("caller", "a taxi"),
        Turn("bot", "é" * 700),  # 1400 bytes: must split on a character boundary
    ]
    history = shape_history(turns)
    assert [m.role for m in history] == ["USER", "ASSISTANT"]
    assert history[0].chunks == ("I need a taxi",)
    assert all(len(c.encode()) <= 1024 for c in history[1].chunks)
    assert "".join(history[1].chunks) == "é" * 700


def test_history_over_40kb_drops_the_oldest_messages() -> None:
    turns = [Turn("caller" if i % 2 == 0 else "bot", f"{i} " + "x" * 900) for i in range(100)]
    history = shape_history(turns)
    assert sum(m.nbytes for m in history) <= MAX_HISTORY_BYTES
    assert history[0].role == "USER"
    assert history[-1].chunks[0].startswith("99 ")


def test_split_utf8_prefers_word_boundaries() -> None:
    pieces = split_utf8("word " * 300, 1024)
    assert all(p.endswith(" ") for p in pieces[:-1])
    assert "".join(pieces) == "word " * 300


def out(name: str, **fields: object) -> dict:
    return {"event": {name: {"sessionId": "s", "promptName": "p", "completionId": "c", **fields}}}


def content_start(cid: str, kind: str, role: str, stage: str | None = None) -> dict:
    extra = {"additionalModelFields": json.dumps({"generationStage": stage})} if stage else {}
    return out("contentStart", contentId=cid, type=kind, role=role, **extra)


def feed(proto: NovaProtocol, *messages: dict) -> list:
    events = []
    for message in messages:
        proto.receive(message)
        events += proto.events_received()
    return events


def test_a_bot_answer_maps_to_transcripts_audio_and_turn_done() -> None:
    proto = make_protocol()
    pcm = b"\x10\x00" * 160
    events = feed(
        proto,
        out("completionStart"),
        content_start("u1", "TEXT", "USER", "FINAL"),
        out("textOutput", contentId="u1", content="What time is it?"),
        out("contentEnd", contentId="u1", type="TEXT", stopReason="END_TURN"),
        content_start("a1", "TEXT", "ASSISTANT", "SPECULATIVE"),
        out("textOutput", contentId="a1", content="It is noon."),
        out("contentEnd", contentId="a1", type="TEXT", stopReason="PARTIAL_TURN"),
        content_start("au1", "AUDIO", "ASSISTANT"),
        out("audioOutput", contentId="au1", content=base64.b64encode(pcm).decode()),
        out("audioOutput", contentId="au1", content=base64.b64encode(pcm).decode()),
        out("contentEnd", contentId="au1", type="AUDIO", stopReason="END_TURN"),
        content_start("f1", "TEXT", "ASSISTANT", "FINAL"),
        out("textOutput", contentId="f1", content="It is noon."),
        out("contentEnd", contentId="f1", type="TEXT", stopReason="END_TURN"),
        out("usageEvent", details={"total": {"output": {"speechTokens": 7}}}),
        out("completionEnd", stopReason="END_TURN"),
    )
    assert events == [
        SpeechStopped(),  # the ASR final is Nova's end-of-turn decision
        Transcript("caller", "What time is it?"),
        Transcript("bot", "It is noon.", final=False, item_id=None),
        AudioOut(pcm, "au1"),
        AudioOut(pcm, "au1"),
        TurnDone("au1", interrupted=False),
        Transcript("bot", "It is noon.", final=True, item_id="au1"),
        Usage("s", audio_out_tokens=7),  # the session's running total
    ]
    assert proto.usage == {"output": {"speechTokens": 7}}


def test_interrupted_marker_is_one_barge_in_and_ends_the_turn_interrupted() -> None:
    proto = make_protocol()
    events = feed(
        proto,
        content_start("au1", "AUDIO", "ASSISTANT"),
        out("audioOutput", contentId="au1", content=base64.b64encode(b"\0\0").decode()),
        out("contentEnd", contentId="au1", type="AUDIO", stopReason="INTERRUPTED"),
        content_start("f1", "TEXT", "ASSISTANT", "FINAL"),
        out("textOutput", contentId="f1", content='{ "interrupted" : true }'),
        out("contentEnd", contentId="f1", type="TEXT", stopReason="INTERRUPTED"),
    )
    assert events == [AudioOut(b"\0\0", "au1"), SpeechStarted("au1"), TurnDone("au1", interrupted=True)]


def test_every_barge_in_is_followed_by_speech_stopped_before_the_next_answer() -> None:
    """The rotation policy renews only between turns, i.e. after SpeechStopped."""
    proto = make_protocol()
    interrupted = feed(
        proto,
        content_start("au1", "AUDIO", "ASSISTANT"),
        content_start("f1", "TEXT", "ASSISTANT", "FINAL"),
        out("textOutput", contentId="f1", content='{ "interrupted" : true }'),
    )
    assert interrupted == [SpeechStarted("au1")]
    # No transcript for the interruption (noise, say): the next answer still closes it.
    assert feed(proto, content_start("au2", "AUDIO", "ASSISTANT")) == [SpeechStopped()]
    assert feed(proto, content_start("au3", "AUDIO", "ASSISTANT")) == []


def test_marker_after_audio_end_turn_still_signals_barge_in() -> None:
    """Pipecat observed AUDIO contentEnd END_TURN before the INTERRUPTED text on barge-in;
    the audio may still be playing at the caller's end, so the bridge must still clear."""
    proto = make_protocol()
    events = feed(
        proto,
        content_start("au1", "AUDIO", "ASSISTANT"),
        out("contentEnd", contentId="au1", type="AUDIO", stopReason="END_TURN"),
        content_start("f1", "TEXT", "ASSISTANT", "FINAL"),
        out("textOutput", contentId="f1", content='{"interrupted":true}'),
        out("contentEnd", contentId="f1", type="TEXT", stopReason="INTERRUPTED"),
    )
    assert events == [TurnDone("au1"), SpeechStarted("au1")]


def test_tool_call_is_emitted_after_the_tool_content_ends() -> None:
    proto = make_protocol()
    first = feed(
        proto,
        out("contentStart", contentId="t1", type="TOOL", role="TOOL"),
        out("toolUse", contentId="t1", toolName="get_weather", toolUseId="tu-1", content='{"city": "Oslo"}'),
    )
    assert first == []
    done = feed(proto, out("contentEnd", contentId="t1", type="TOOL", stopReason="TOOL_USE"))
    assert done == [ToolCall("tu-1", "get_weather", {"city": "Oslo"})]


def test_malformed_output_is_a_non_fatal_error() -> None:
    proto = make_protocol()
    assert feed(proto, {"nope": 1})[0].code == "bad_event"
    assert feed(proto, out("contentStart", contentId="x"))[0].code == "bad_event"  # no type/role
    bad_audio = feed(proto, out("audioOutput", contentId="a", content="!!not base64!!"))
    assert bad_audio[0] == ProviderError("bad_audio", bad_audio[0].message, fatal=False)
    assert feed(proto, out("someFutureEvent", x=1)) == []
    feed(proto, out("contentStart", contentId="t1", type="TOOL", role="TOOL"))
    feed(proto, out("toolUse", contentId="t1", toolName="f", toolUseId="tu", content="{broken"))
    events = feed(proto, out("contentEnd", contentId="t1", type="TOOL", stopReason="TOOL_USE"))
    assert [type(e) for e in events] == [ProviderError, ToolCall] and events[1].arguments == {}


def test_interruption_marker_parsing() -> None:
    assert is_interruption_marker('{ "interrupted" : true }')
    assert not is_interruption_marker("I was interrupted")
    assert not is_interruption_marker('{"interrupted": false}')


def test_config_defaults_to_8khz_both_ways_and_validates_renewal() -> None:
    config = NovaSonicConfig()
    assert (config.input_sample_rate, config.output_sample_rate) == (8000, 8000)
    assert config.is_nova2 and not NovaSonicConfig(model_id=NOVA_SONIC_V1).is_nova2
    with pytest.raises(ValueError, match="renew_after_s"):
        NovaSonicConfig(renew_after_s=500, stream_limit_s=480)
    with pytest.raises(ValueError):
        NovaSonicConfig(output_sample_rate=44100)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        NovaSonicConfig.model_validate({"type": "nova_sonic", "aws_secret_access_key": "x"})  # no keys here


def test_interrupted_answer_is_transcribed_from_its_planned_text() -> None:
    """Nova's FINAL text of an interrupted answer is only the marker: the SPECULATIVE text is
    reported for that item, for the bridge to cut to what the caller heard."""
    proto = make_protocol()
    events = feed(
        proto,
        content_start("a1", "TEXT", "ASSISTANT", "SPECULATIVE"),
        out("textOutput", contentId="a1", content="Our opening hours are nine to five."),
        out("contentEnd", contentId="a1", type="TEXT", stopReason="PARTIAL_TURN"),
        content_start("au1", "AUDIO", "ASSISTANT"),
        out("audioOutput", contentId="au1", content=base64.b64encode(b"\0\0").decode()),
        out("contentEnd", contentId="au1", type="AUDIO", stopReason="INTERRUPTED"),
        content_start("f1", "TEXT", "ASSISTANT", "FINAL"),
        out("textOutput", contentId="f1", content='{ "interrupted" : true }'),
        out("contentEnd", contentId="f1", type="TEXT", stopReason="INTERRUPTED"),
    )
    assert events == [
        Transcript("bot", "Our opening hours are nine to five.", final=False, item_id=None),
        AudioOut(b"\0\0", "au1"),
        Transcript("bot", "Our opening hours are nine to five.", final=True, item_id="au1"),
        SpeechStarted("au1"),
        TurnDone("au1", interrupted=True),
    ]
    # A later answer does not inherit the old plan.
    later = feed(
        proto,
        content_start("au2", "AUDIO", "ASSISTANT"),
        content_start("f2", "TEXT", "ASSISTANT", "FINAL"),
        out("textOutput", contentId="f2", content='{ "interrupted" : true }'),
    )
    assert not any(isinstance(e, Transcript) for e in later)


@pytest.mark.parametrize(
    "config",
    [
        {"mediaType": "audio/pcmu", "sampleRateHertz": 8000},
        {"mediaType": "audio/lpcm", "sampleRateHertz": 8000, "sampleSizeBits": 8},
        {"mediaType": "audio/lpcm", "sampleRateHertz": 8000, "channelCount": 2},
        {"mediaType": "audio/lpcm", "sampleRateHertz": 44100},
    ],
)
def test_an_announced_output_format_that_cannot_be_played_fails_loudly_and_nothing_plays(config: dict) -> None:
    proto = make_protocol()
    start = content_start("a1", "AUDIO", "ASSISTANT")
    start["event"]["contentStart"]["audioOutputConfiguration"] = config
    loud = base64.b64encode(bytes(range(256)) * 4).decode()
    events = feed(proto, start, out("audioOutput", contentId="a1", content=loud))
    [error] = [e for e in events if isinstance(e, ProviderError)]
    assert error.fatal and error.code == "audio_format_mismatch" and "cannot play" in error.message
    assert not [e for e in events if isinstance(e, AudioOut)]
