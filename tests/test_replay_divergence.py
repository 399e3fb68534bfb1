"""Replay reports what changed: a server that behaves differently from the recorded one, or a
tape whose caller side was edited, yields named divergences; bad tapes and stuck replays end
with a clear error, never a hang."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile

from tests.support.audio import dominant_frequency
from tests.support.server import AUTH_TOKEN, running_server
from voicebot.cli import main
from voicebot.config import load_config_text
from voicebot.devtools.tape.compare import Tolerance, compare
from voicebot.devtools.tape.replay import ReplayTimeout, loopback_config, replay_call
from voicebot.devtools.tape.view import BargeInView, CallView, TurnView

CALLS = Path(__file__).parent / "fixtures" / "calls"


def slower_echo(reply_delay_ms: int, outbound_chunk_ms: int) -> str:
    return f"""
[twilio]
validate_signatures = false  # the replay gives its loopback server a token of its own

[server]
outbound_chunk_ms = {outbound_chunk_ms}

[providers.parrot]
type = "echo"
reply_delay_ms = {reply_delay_ms}

[[routes]]
name = "default"
providers = ["parrot"]
"""


async def test_a_server_that_answers_later_in_smaller_chunks_diverges_by_name() -> None:
    live = load_config_text(slower_echo(reply_delay_ms=650, outbound_chunk_ms=20))
    result = await replay_call(CALLS / "echo_two_turns.jsonl", live=live)
    assert not result.ok
    found = {d.what for d in result.divergences}
    assert {"turn 1 start", "turn 2 start", "mark/clear sequence"} <= found, result.report()
    start = next(d for d in result.divergences if d.what == "turn 1 start")
    assert "+5" in start.detail  # ~+500 ms: the extra reply delay, measured on the stream clock
    assert "turn 1 bot audio sent" not in found  # the answer itself is the same


async def test_a_tape_whose_caller_no_longer_presses_keys_diverges(tmp_path: Path) -> None:
    lines = (CALLS / "echo_dtmf_hangup.jsonl").read_text().splitlines()
    edited = [line for line in lines if '"event":"dtmf"' not in line]
    assert len(edited) == len(lines) - 3
    tape = tmp_path / "no_dtmf.jsonl"
    tape.write_text("\n".join(edited) + "\n")
    result = await replay_call(tape, speed=2)
    found = {d.what for d in result.divergences}
    # No keypad text reached the provider, so the tape's answer, recorded after that text,
    # waits for it (trigger_timeout_s) and the caller hangs up before hearing any of it.
    assert {"text sent to the provider", "transcript", "bot turns"} <= found, result.report()


def test_compare_names_each_kind_of_divergence_and_honours_tolerances() -> None:
    tape = CallView(
        side="server",
        turns=[TurnView(1000, 800, 800), TurnView(3000, 1500, 500, interrupted=True)],
        barge_ins=[BargeInView(3500, 500, 1500)],
        control=[("marks", 20), ("clear", 1)],
        dtmf=["1"],
        outcome="caller-hangup",
    )
    close = CallView(
        side="server",
        turns=[TurnView(1100, 840, 840), TurnView(2900, 1500, 540, interrupted=True)],
        barge_ins=[BargeInView(3400, 540, 1500)],
        control=[("marks", 21), ("clear", 1)],
        dtmf=["1"],
        outcome="caller-hangup",
    )
    assert compare(tape, close) == []
    far = CallView(
        side="server",
        turns=[TurnView(1400, 800, 800)],
        barge_ins=[],
        control=[("marks", 20)],
        dtmf=[],
        outcome="provider-lost",
    )
    found = [d.what for d in compare(tape, far, Tolerance(timing_ms=100))]
    assert found == ["bot turns", "turn 1 start", "barge-ins", "mark/clear sequence", "DTMF digits", "outcome"]


async def test_replay_never_hangs_past_its_global_timeout() -> None:
    started = time.monotonic()
    with pytest.raises(ReplayTimeout, match="did not finish within 1 s"):
        await replay_call(CALLS / "echo_two_turns.jsonl", timeout_s=1.0)
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda lines: [*lines[:-1], lines[-1][:25]], "record is cut off (file truncated?)"),
        (lambda lines: [*lines[:9], lines[9].replace('"t":', '"t";'), *lines[10:]], ":10: not valid JSON"),
        (lambda lines: [lines[0].replace('"version":1', '"version":2'), *lines[1:]], ":1: tape format version 2"),
    ],
    ids=["truncated", "corrupted", "wrong-version"],
)
def test_the_replay_command_refuses_a_bad_tape_naming_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: object, message: str
) -> None:
    lines = (CALLS / "echo_barge_in.jsonl").read_text().splitlines()
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(damage(lines)))  # type: ignore[operator]
    assert main(["replay", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad tape" in err and message in err and "bad.jsonl" in err


def test_the_replay_command_reports_and_writes_a_stereo_wav(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "call.wav"
    assert main(["replay", str(CALLS / "echo_two_turns.jsonl"), "--speed", "4", "--wav", str(out)]) == 0
    report = capsys.readouterr().out
    assert "no divergence" in report and "2 bot turn(s)" in report
    rate, data = wavfile.read(out)
    assert rate == 8000 and data.ndim == 2 and data.shape[1] == 2
    caller, bot = data[:, 0], data[:, 1]
    # Caller left: the 500 Hz question first; bot right: its 500 Hz answer, later.
    caller_loud = np.flatnonzero(np.abs(caller) > 2000)
    bot_loud = np.flatnonzero(np.abs(bot) > 2000)
    assert caller_loud[0] < bot_loud[0]
    first_answer = bot[bot_loud[0] + 160 : bot_loud[0] + 160 + 4000]
    assert dominant_frequency(first_answer, 8000) == pytest.approx(500, abs=10)


def test_caller_side_tape_on_disk_replays_against_the_built_in_echo_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A server tape with its provider side removed is what `voicebot dial --record` writes.
    lines = (CALLS / "echo_dtmf_hangup.jsonl").read_text().splitlines()
    header = json.loads(lines[0])
    header["side"] = "caller"
    kept = [json.dumps(header)] + [line for line in lines[1:] if '"k":"twilio_' in line or '"k":"end"' in line]
    tape = tmp_path / "caller.jsonl"
    tape.write_text("\n".join(kept) + "\n")
    code = main(["replay", str(tape)])
    out = capsys.readouterr().out
    assert "caller-side tape has no provider side" in out and "live provider" in out
    assert code == 0, out  # the echo line is deterministic: same answer, same cut-off
    assert "DTMF: 42#" in out


def with_malformed_caller_frames(lines: list[str], bad_frames_in_end: int) -> list[str]:
    """The two-turn tape with two malformed frames from "Twilio" at 1.0 s."""
    junk = [
        json.dumps({"t": 1000.0, "k": "twilio_in", "raw": "{this is not json"}),
        json.dumps({"t": 1000.0, "k": "twilio_in", "msg": {"event": "media", "media": {"payload": "%%%"}}}),
    ]
    at = next(i for i, line in enumerate(lines) if i and json.loads(line)["t"] > 1000.0)
    end = json.loads(lines[-1])
    end["bad_frames"] = bad_frames_in_end
    return [*lines[:at], *junk, *lines[at:-1], json.dumps(end)]


async def test_malformed_frames_on_a_tape_are_replayed_and_counted(tmp_path: Path) -> None:
    lines = (CALLS / "echo_two_turns.jsonl").read_text().splitlines()
    tape = tmp_path / "junk.jsonl"
    tape.write_text("\n".join(with_malformed_caller_frames(lines, 2)) + "\n")
    result = await replay_call(tape, speed=2)
    assert result.ok, result.report()  # the server logged and skipped them, as it did then
    assert result.got.bad_frames == 2 and len(result.turns) == 2

    tape.write_text("\n".join(with_malformed_caller_frames(lines, 0)) + "\n")
    result = await replay_call(tape, speed=2)
    assert [str(d) for d in result.divergences] == ["bad frames from Twilio: tape 0, replay 2"]


def test_a_live_replay_keeps_only_the_tapes_route_and_lets_any_number_reach_it(tmp_path: Path) -> None:
    config = load_config_text(
        '[twilio]\nvalidate_signatures = false\n[providers.parrot]\ntype = "echo"\n'
        '[[routes]]\nname = "sales"\nto = ["+1555*"]\nproviders = ["parrot"]\n'
        '[[routes]]\nname = "uk"\nto = ["+44*"]\nproviders = ["parrot"]\n'
    )
    live = loopback_config(config, tmp_path, "tok", "uk")
    assert [(r.name, r.to, r.from_) for r in live.routes] == [("uk", ["*"], ["*"])]
    assert live.recording.enabled and live.twilio.validate_signatures and live.server.public_url is None
    assert [r.name for r in loopback_config(config, tmp_path, "tok", "gone").routes] == ["sales"]


async def test_replay_against_a_running_server_whose_provider_is_the_tape() -> None:
    tape = CALLS / "openai_barge_in.jsonl"
    config = f"""
[twilio]
auth_token = "{AUTH_TOKEN}"

[providers.recorded]
type = "tape"
path = "{tape}"
speed = 2

[[routes]]
name = "openai"
providers = ["recorded"]
"""
    async with running_server(config) as server:
        result = await replay_call(tape, url=server.url, auth_token=AUTH_TOKEN, speed=2)
    # Compared from the caller's side: turns, the barge-in point and the mark/clear sequence.
    assert result.ok, result.report()
    assert result.got.side == "caller" and len(result.turns) == 2 and len(result.barge_ins) == 1
    assert result.turns[0].interrupted and 450 < result.barge_ins[0].heard_ms < 750
