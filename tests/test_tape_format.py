"""The call tape line format: every record kind round-trips, secrets never reach the file, and
a truncated, corrupted or wrong-version tape is refused with an error naming the line."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from s2s.events import (
    AudioOut,
    Closed,
    ProviderError,
    SessionExpiring,
    SpeechStarted,
    SpeechStopped,
    ToolCall,
    Transcript,
    TurnDone,
)
from s2s.provider import Turn
from telephony.media_stream import media_message
from transcoding.formats import MULAW_8K, PCM16_24K
from voicebot.devtools.tape.format import (
    BargeInRecord,
    CallEnd,
    ProviderIn,
    ProviderOut,
    Record,
    SessionOpened,
    TapeError,
    TapeHeader,
    TwilioFrame,
    read_tape,
    write_tape,
)

FIXTURES = Path(__file__).parent / "fixtures" / "calls"
HEADER = TapeHeader(call_sid="CA123", route="default", providers=("parrot:echo",), recorded_at="2026-01-01T00:00:00Z")

EVERY_RECORD: list[Record] = [
    TwilioFrame(0.5, "in", media_message("MZ1", b"\x01\x02\xff" * 10)),
    TwilioFrame(0.7, "in", "{not json"),
    TwilioFrame(0.8, "in", b"\x00\x01binary"),
    SessionOpened(1.0, MULAW_8K, PCM16_24K),
    ProviderOut(1.5, "audio", audio=b"\x00\x01" * 80),
    ProviderIn(2.0, SpeechStarted("item-0")),
    ProviderIn(2.1, SpeechStopped()),
    ProviderIn(2.2, AudioOut(b"\x10\x20" * 240, "item-1")),
    ProviderIn(2.3, Transcript("bot", "hello there", final=True, item_id="item-1")),
    ProviderIn(2.4, ToolCall("call-1", "lookup", {"q": "x", "n": [1, 2]})),
    ProviderIn(2.5, TurnDone("item-1", interrupted=True)),
    ProviderIn(2.6, ProviderError("rate_limit", "slow down", fatal=False)),
    ProviderIn(2.7, SessionExpiring("goAway", 12.5)),
    ProviderOut(3.0, "text", text="The caller pressed 5 on the keypad."),
    ProviderOut(3.1, "truncate", item_id="item-1", heard_ms=420),
    ProviderOut(3.2, "tool_result", call_id="call-1", output='{"ok": true}'),
    TwilioFrame(3.3, "out", json.dumps({"event": "clear", "streamSid": "MZ1"})),
    BargeInRecord(3.3, "item-1", 420.0, 1200.0, 0.4),
    ProviderIn(3.9, Closed("closed by voicebot")),
    CallEnd(4.0, "caller-hangup", (Turn("caller", "hi"), Turn("bot", "hello there")), bad_frames=1),
]


def write_lines(path: Path, lines: list[str], trailing_newline: bool = True) -> Path:
    path.write_text("\n".join(lines) + ("\n" if trailing_newline else ""), encoding="utf-8")
    return path


def fixture_lines(name: str = "echo_two_turns.jsonl") -> list[str]:
    return (FIXTURES / name).read_text(encoding="utf-8").splitlines()


def test_every_record_kind_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "tape.jsonl"
    write_tape(path, HEADER, EVERY_RECORD)
    tape = read_tape(path)
    assert tape.header == HEADER
    assert tape.complete and tape.end == EVERY_RECORD[-1]
    for got, want in zip(tape.records, EVERY_RECORD, strict=True):
        if isinstance(want, TwilioFrame):
            assert isinstance(got, TwilioFrame) and got.direction == want.direction and got.t == want.t
            assert got.message() == want.message()
            if want.message() is None:
                assert got.frame == want.frame  # malformed input is kept verbatim for replay
        else:
            assert got == want


def test_the_stream_token_of_a_start_frame_is_never_written(tmp_path: Path) -> None:
    start = {
        "event": "start",
        "streamSid": "MZ1",
        "start": {
            "callSid": "CA123",
            "streamSid": "MZ1",
            "customParameters": {"token": "s3cret-stream-token", "x": "1"},
        },
    }
    path = tmp_path / "tape.jsonl"
    write_tape(path, HEADER, [TwilioFrame(0.0, "in", json.dumps(start))])
    text = path.read_text()
    assert "s3cret-stream-token" not in text
    message = read_tape(path).records[0].message()  # type: ignore[union-attr]
    assert message is not None and message["start"]["customParameters"] == {"token": "[redacted]", "x": "1"}


def test_fixture_tapes_are_small_and_readable() -> None:
    names = sorted(p.name for p in FIXTURES.glob("*.jsonl"))
    assert {"echo_two_turns.jsonl", "echo_barge_in.jsonl", "echo_dtmf_hangup.jsonl"} <= set(names)
    for name in names:
        assert (FIXTURES / name).stat().st_size < 512 * 1024, name
        tape = read_tape(FIXTURES / name)
        assert tape.complete and tape.has_provider_side() and tape.header.side == "server"


def test_the_header_says_who_placed_the_call(tmp_path: Path) -> None:
    outbound = dataclasses.replace(HEADER, direction="outbound")
    path = tmp_path / "outbound.jsonl"
    write_tape(path, outbound, EVERY_RECORD)
    assert json.loads(path.read_text().splitlines()[0])["direction"] == "outbound"
    assert read_tape(path).header.direction == "outbound"
    # The fixture tapes predate the field: they read as inbound calls, which they were.
    lines = fixture_lines()
    assert "direction" not in json.loads(lines[0])
    assert read_tape(FIXTURES / "echo_two_turns.jsonl").header.direction == "inbound"
    header = json.loads(lines[0])
    header["direction"] = "sideways"
    lines[0] = json.dumps(header)
    with pytest.raises(TapeError, match=r":1: header 'direction' must be 'inbound' or 'outbound', got 'sideways'"):
        read_tape(write_lines(tmp_path / "bad-direction.jsonl", lines))


def test_a_tape_cut_off_mid_line_names_the_last_line(tmp_path: Path) -> None:
    lines = fixture_lines()
    cut = "\n".join(lines[:40]) + "\n" + lines[40][: len(lines[40]) // 2]
    path = tmp_path / "cut.jsonl"
    path.write_text(cut)
    with pytest.raises(TapeError, match=r"cut\.jsonl:41: record is cut off \(file truncated\?\)") as err:
        read_tape(path)
    assert err.value.line == 41


def test_a_corrupted_line_is_named(tmp_path: Path) -> None:
    lines = fixture_lines()
    lines[12] = lines[12][:30] + "\x00garbage" + lines[12][30:]
    with pytest.raises(TapeError, match=r":13: not valid JSON \(corrupted\?\)"):
        read_tape(write_lines(tmp_path / "bad.jsonl", lines))


def test_a_wrong_version_is_refused_on_line_1(tmp_path: Path) -> None:
    lines = fixture_lines()
    header = json.loads(lines[0])
    header["version"] = 99
    lines[0] = json.dumps(header)
    with pytest.raises(
        TapeError, match=r":1: tape format version 99 is not supported \(this voicebot reads version 1\)"
    ):
        read_tape(write_lines(tmp_path / "v99.jsonl", lines))


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (
            '{"t": 5, "k": "provider_out", "kind": "audio", "audio": "%%%not base64"}',
            "field 'audio' is not valid base64",
        ),
        ('{"t": 5, "k": "teleport"}', "unknown record kind 'teleport'"),
        ('{"k": "session", "input": "mulaw@8000", "output": "mulaw@8000"}', "field 't' must be float"),
        ('{"t": 5, "k": "session", "input": "opus@48000", "output": "mulaw@8000"}', "bad audio format 'opus@48000'"),
        ('{"t": 5, "k": "provider_in", "event": "Teleported"}', "unknown provider event 'Teleported'"),
        ('{"t": 5, "k": "provider_in", "event": "AudioOut", "audio": "AAAA", "bogus": 1}', "AudioOut record"),
        ('{"t": 0.1, "k": "twilio_out", "msg": {"event": "clear"}}', "goes back in time"),
        ("[1, 2, 3]", "record is not a JSON object"),
    ],
)
def test_a_bad_record_is_refused_with_its_line_number(tmp_path: Path, line: str, problem: str) -> None:
    lines = fixture_lines()[:30]
    lines.insert(20, line)
    with pytest.raises(TapeError) as err:
        read_tape(write_lines(tmp_path / "bad.jsonl", lines))
    assert err.value.line == 21
    assert problem in str(err.value)


def test_not_a_tape_and_records_after_the_end_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TapeError, match=r":1: not a voicebot call tape"):
        read_tape(write_lines(tmp_path / "x.jsonl", ['{"hello": "world"}']))
    lines = fixture_lines()
    lines.append('{"t": 99999, "k": "twilio_out", "msg": {"event": "clear"}}')
    with pytest.raises(TapeError, match=rf":{len(lines)}: record after the 'end' record"):
        read_tape(write_lines(tmp_path / "after.jsonl", lines))
    with pytest.raises(TapeError, match=r":1: empty file"):
        read_tape(write_lines(tmp_path / "empty.jsonl", [], trailing_newline=False))


def test_a_tape_cut_at_a_line_boundary_reads_but_is_incomplete(tmp_path: Path) -> None:
    tape = read_tape(write_lines(tmp_path / "partial.jsonl", fixture_lines()[:50]))
    assert not tape.complete and len(tape.records) == 49
