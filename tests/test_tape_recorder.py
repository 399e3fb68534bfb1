"""Recording: a real call through the running server lands on disk as a tape with both sides,
byte-exact caller audio, no secrets; the hooks never do disk I/O; tapes are size-bounded."""

from __future__ import annotations

import asyncio
import base64
import threading
from pathlib import Path
from typing import Any

import pytest

from s2s.events import AudioOut
from telephony.media_stream import media_message
from telephony.observer import AudioSent
from tests.support.audio import dominant_frequency, from_mulaw, to_mulaw, tone
from tests.support.server import AUTH_TOKEN, echo_line_config, running_server
from transcoding.formats import MULAW_8K
from voicebot.config import load_config_text
from voicebot.devtools.tape import recorder as recorder_module
from voicebot.devtools.tape.format import (
    CallEnd,
    ProviderIn,
    ProviderOut,
    SessionOpened,
    TapeHeader,
    TwilioFrame,
    read_tape,
)
from voicebot.devtools.tape.recorder import TapeRecorder, TapeWriterThread, tape_filename, wants_recording
from voicebot.devtools.tape.replay import finished_tape


def recording_config(record_dir: Path, route_recording: bool = True, enabled: bool = False) -> str:
    return echo_line_config(
        "support",
        route_extra=f"recording = {str(route_recording).lower()}",
        sections=f'[recording]\nenabled = {str(enabled).lower()}\ndir = "{record_dir}"',
    )


async def test_a_real_call_is_recorded_with_both_sides_and_no_secrets(tmp_path: Path) -> None:
    async with running_server(recording_config(tmp_path)) as server, server.twilio().call() as call:
        await call.pause(200)
        await call.say(to_mulaw(tone(700, 600)))
        await call.wait_for(lambda: call.received_media_ms() >= 600, timeout=8)
        await call.wait_for(lambda: call.queued_ms == 0, timeout=5)
    tape = await finished_tape(tmp_path, call.call_sid)

    assert Path(tape.path).name.endswith(f"_{call.call_sid}.jsonl")
    assert tape.header.call_sid == call.call_sid and tape.header.route == "support"
    assert tape.header.providers == ("parrot:echo",)
    text = await asyncio.to_thread(Path(tape.path).read_text)
    assert AUTH_TOKEN not in text and "Signature" not in text

    sessions = [r for r in tape.records if isinstance(r, SessionOpened)]
    assert len(sessions) == 1 and sessions[0].input_format == sessions[0].output_format == MULAW_8K
    # Every caller frame the server got is on the tape, byte for byte.
    caller = b"".join(
        base64.b64decode(m["media"]["payload"])
        for r in tape.records
        if isinstance(r, TwilioFrame) and r.direction == "in" and (m := r.message()) and m["event"] == "media"
    )
    assert caller == bytes(call.caller_track[: len(caller)]) and len(caller) > 8 * 1500
    # What the provider got and said, and what went back to Twilio.
    to_provider = b"".join(r.audio for r in tape.records if isinstance(r, ProviderOut) and r.kind == "audio")
    assert to_provider == caller[: len(to_provider)] and len(to_provider) >= len(caller) - 8 * 100
    bot = b"".join(r.event.audio for r in tape.records if isinstance(r, ProviderIn) and isinstance(r.event, AudioOut))
    assert MULAW_8K.duration_ms(len(bot)) == pytest.approx(600, abs=20)
    assert dominant_frequency(from_mulaw(bot), 8000) == pytest.approx(700, abs=10)
    out = [r.message() for r in tape.records if isinstance(r, TwilioFrame) and r.direction == "out"]
    marks = [m for m in out if m is not None and m["event"] == "mark"]
    assert len(marks) >= 600 // 40
    end = tape.end
    assert isinstance(end, CallEnd) and end.outcome == "caller-hangup" and end.dropped_records == 0
    times = [r.t for r in tape.records]
    assert times == sorted(times) and times[-1] < 10_000


def test_recording_is_switched_per_route_or_globally(tmp_path: Path) -> None:
    for route_recording, enabled, expected in [(False, False, False), (True, False, True), (False, True, True)]:
        config = load_config_text(recording_config(tmp_path, route_recording, enabled))
        assert wants_recording(config, config.routes[0]) is expected


async def test_a_call_on_an_unrecorded_route_leaves_no_tape(tmp_path: Path) -> None:
    async with running_server(recording_config(tmp_path, route_recording=False)) as server:
        async with server.twilio().call() as call:
            await call.say(to_mulaw(tone(500, 200)))
        await call.pause(300)
    assert await asyncio.to_thread(lambda: list(tmp_path.iterdir())) == []


def test_hooks_only_queue_records_and_the_writer_thread_does_the_disk_io(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook_thread = threading.current_thread()
    opened_on: list[threading.Thread] = []
    real_open = open

    def watched_open(*args: Any, **kwargs: Any) -> Any:
        opened_on.append(threading.current_thread())
        return real_open(*args, **kwargs)

    monkeypatch.setattr(recorder_module, "open", watched_open, raising=False)
    writer = TapeWriterThread(flush_interval_s=3600)  # only call_ended wakes it
    path = tmp_path / "deep" / "dir" / tape_filename("CAhot")
    rec = TapeRecorder(path, TapeHeader("CAhot"), writer=writer)
    frame = media_message("MZ1", b"\xff" * 160)
    for _ in range(500):
        rec.twilio_in(frame, None)
        rec.provider_out(AudioSent(b"\xff" * 160))
    assert not path.exists() and not opened_on
    rec.end("caller-hangup")
    assert rec.done.wait(5)
    assert opened_on and all(t is not hook_thread for t in opened_on)
    tape = read_tape(path)
    assert len(tape.records) == 1001 and tape.complete


def test_a_tape_stops_growing_at_its_cap_and_says_how_much_was_dropped(tmp_path: Path) -> None:
    writer = TapeWriterThread(flush_interval_s=0.01)
    path = tmp_path / "capped.jsonl"
    rec = TapeRecorder(path, TapeHeader("CAcap"), max_bytes=8192, writer=writer)
    frame = media_message("MZ1", b"\x7f" * 160)
    for _ in range(200):
        rec.twilio_in(frame, None)
    rec.end("caller-hangup")
    assert rec.done.wait(5)
    size = path.stat().st_size
    last_line = path.read_text().splitlines()[-1]
    assert size - len(last_line) - 1 <= 8192
    tape = read_tape(path)
    assert tape.end is not None and tape.end.dropped_records == 200 - len(tape.records) + 1 > 100


def test_an_unwritable_tape_directory_leaves_the_call_alone(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    rec = TapeRecorder(blocker / "tape.jsonl", TapeHeader("CAro"), writer=TapeWriterThread(flush_interval_s=0.01))
    rec.twilio_in(media_message("MZ1", b"\xff" * 160), None)
    rec.end("caller-hangup")
    assert rec.done.wait(5)
    assert rec.error is not None and "cannot write tape" in rec.error


async def test_an_oversized_or_deeply_nested_bad_frame_is_taped_cut_and_the_tape_goes_on(tmp_path: Path) -> None:
    """The protocol refuses a 70 KB frame and a 20,000-deep one; the tape keeps 1 KiB of each
    (still bad when replayed), and the writer thread survives them for this tape and others."""
    oversized = '{"event": "media", "media": {"payload": "' + "A" * 70_000 + '"}}'
    nested = "[" * 20_000
    async with running_server(recording_config(tmp_path)) as server, server.twilio().call() as call:
        await call.send_raw(oversized)
        await call.send_raw(nested)
        await call.say(to_mulaw(tone(700, 300)))
        await call.wait_for(lambda: call.received_media_ms() >= 280, timeout=8)
    tape = await finished_tape(tmp_path, call.call_sid)
    bad = [r for r in tape.records if isinstance(r, TwilioFrame) and r.direction == "in" and r.message() is None]
    assert [len(r.frame) for r in bad] == [1024, 1024]
    assert bad[0].frame == oversized[:1024] and bad[1].frame == nested[:1024]
    end = tape.end
    assert isinstance(end, CallEnd) and end.bad_frames == 2
    assert len(await asyncio.to_thread(Path(tape.path).read_bytes)) < 200_000
