"""The Twilio Media Streams protocol object, without sockets."""

from __future__ import annotations

import base64
import json

import pytest

from telephony.media_stream import (
    Connected,
    Dtmf,
    Mark,
    Media,
    MediaStreamProtocol,
    ProtocolError,
    Start,
    Stop,
    StreamFrames,
    StreamState,
    Unknown,
    clear_message,
    mark_message,
    media_message,
    parse_event,
)

START = {
    "event": "start",
    "sequenceNumber": "1",
    "streamSid": "MZ1",
    "start": {
        "streamSid": "MZ1",
        "accountSid": "AC1",
        "callSid": "CA1",
        "tracks": ["inbound"],
        "customParameters": {"token": "t"},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        "someFutureField": True,
    },
}


def media(payload: bytes, ts: str = "20", chunk: str = "2") -> str:
    b64 = base64.b64encode(payload).decode()
    return json.dumps(
        {
            "event": "media",
            "sequenceNumber": "3",
            "streamSid": "MZ1",
            "media": {"track": "inbound", "chunk": chunk, "timestamp": ts, "payload": b64},
        }
    )


def streaming() -> MediaStreamProtocol:
    p = MediaStreamProtocol()
    p.receive(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
    p.receive(json.dumps(START))
    return p


def test_a_stream_parses_in_order_with_string_typed_numbers() -> None:
    p = MediaStreamProtocol()
    assert isinstance(p.receive(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})), Connected)
    start = p.receive(json.dumps(START))
    assert isinstance(start, Start)
    assert (start.call_sid, start.stream_sid, start.custom_parameters) == ("CA1", "MZ1", {"token": "t"})
    assert start.sample_rate == 8000 and p.state is StreamState.STREAMING
    event = p.receive(media(b"\xff" * 160, ts="160", chunk="9"))
    assert event == Media(payload=b"\xff" * 160, timestamp_ms=160, chunk=9, track="inbound")
    assert p.receive(json.dumps({"event": "dtmf", "streamSid": "MZ1", "dtmf": {"digit": "5"}})) == Dtmf("5")
    assert p.receive(json.dumps({"event": "mark", "streamSid": "MZ1", "mark": {"name": "m1"}})) == Mark("m1")
    assert isinstance(p.receive(json.dumps({"event": "stop", "stop": {"callSid": "CA1"}})), Stop)
    assert p.state is StreamState.STOPPED


def test_media_before_start_names_the_state() -> None:
    p = MediaStreamProtocol()
    with pytest.raises(ProtocolError, match="awaiting-connected"):
        p.receive(media(b"\xff"))


def test_frames_after_stop_are_errors() -> None:
    p = streaming()
    p.receive(json.dumps({"event": "stop"}))
    with pytest.raises(ProtocolError, match="after 'stop'"):
        p.receive(media(b"\xff"))


def test_unknown_events_are_tolerated_in_any_state() -> None:
    p = MediaStreamProtocol()
    event = p.receive(json.dumps({"event": "newThing", "x": 1}))
    assert isinstance(event, Unknown) and event.event == "newThing"
    assert p.state is StreamState.AWAITING_CONNECTED


@pytest.mark.parametrize(
    "frame",
    [
        "{",
        "42",
        json.dumps({"event": 7}),
        json.dumps({"event": "media", "media": {"payload": "!!!"}}),
        json.dumps({"event": "media", "media": {"payload": "AAAA", "timestamp": "soon"}}),
        json.dumps({"event": "start", "start": {"callSid": "CA1"}}),
        b"\xff\xfe",
        "[" * 20000,
        '{"event": "media", "media": {"payload": "AAAA", "timestamp": 1e400}}',
        json.dumps(
            {"event": "start", "start": {"callSid": "CA1", "streamSid": "M", "mediaFormat": {"sampleRate": "x"}}}
        ),
        json.dumps({"event": "start", "start": {"callSid": "CA1", "streamSid": "M", "tracks": 5}}),
    ],
)
def test_malformed_frames_raise_protocol_error(frame: str | bytes) -> None:
    with pytest.raises(ProtocolError):
        streaming().receive(frame)


def test_oversized_frame_is_refused_before_parsing() -> None:
    p = MediaStreamProtocol(max_message_bytes=1024)
    with pytest.raises(ProtocolError, match="exceeds"):
        p.receive("x" * 2000)


def test_outbound_messages_have_twilios_exact_shape() -> None:
    assert json.loads(media_message("MZ1", b"\x01\x02")) == {
        "event": "media",
        "streamSid": "MZ1",
        "media": {"payload": "AQI="},
    }
    assert json.loads(mark_message("MZ1", "m7")) == {"event": "mark", "streamSid": "MZ1", "mark": {"name": "m7"}}
    assert json.loads(clear_message("MZ1")) == {"event": "clear", "streamSid": "MZ1"}


@pytest.mark.parametrize("stream_sid", ["MZ1", 'MZ"odd\\sid\u00e9'])
@pytest.mark.parametrize("mark", ["m7", "m 8", 'q"uote'])
def test_stream_frames_from_templates_equal_the_json_messages(stream_sid: str, mark: str) -> None:
    frames = StreamFrames(stream_sid)
    payload = bytes(range(256)) * 2
    assert frames.media(payload) == media_message(stream_sid, payload)
    assert frames.mark(mark) == mark_message(stream_sid, mark)
    assert frames.clear == clear_message(stream_sid)


@pytest.mark.parametrize(
    "media",
    [
        {"track": "inbound", "chunk": "2", "timestamp": "40", "payload": "AQL/"},
        {"chunk": "2", "timestamp": "40", "payload": "AQL/"},  # no track: inbound
        {"track": "inbound", "chunk": 2, "timestamp": 40.0, "payload": "AQL/"},  # numbers, not strings
    ],
)
def test_a_media_frame_decodes_the_same_on_the_fast_path_and_the_general_one(media: dict[str, object]) -> None:
    msg = {"event": "media", "streamSid": "MZ1", "media": media}
    assert streaming().receive(json.dumps(msg)) == parse_event(msg)


@pytest.mark.parametrize("payload", ["AQL", "A*==", 7])
def test_a_media_frame_with_a_bad_payload_is_a_protocol_error(payload: object) -> None:
    frame = json.dumps(
        {"event": "media", "media": {"track": "inbound", "chunk": "1", "timestamp": "0", "payload": payload}}
    )
    with pytest.raises(ProtocolError, match="payload"):
        streaming().receive(frame)
