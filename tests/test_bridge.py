"""The call bridge against an in-memory Twilio socket and a scripted provider session."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Sequence

import pytest

from s2s.events import AudioOut, ProviderEvent, SpeechStarted, Transcript, TurnDone
from s2s.provider import ProviderSession, QueuedSession, Turn
from telephony.bridge import CallBridge, CallInfo
from telephony.call_handle import Heard
from telephony.call_state import CallOutcome
from telephony.media_stream import MediaStreamProtocol
from transcoding.formats import MULAW_8K


class MemorySocket:
    def __init__(self) -> None:
        self.incoming: asyncio.Queue[str | None] = asyncio.Queue()
        self.sent: list[dict[str, object]] = []

    async def send(self, text: str) -> None:
        self.sent.append(json.loads(text))

    async def receive(self) -> str | bytes | None:
        return await self.incoming.get()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.incoming.put_nowait(None)

    def events(self, kind: str) -> list[dict[str, object]]:
        return [m for m in self.sent if m["event"] == kind]


class ScriptedSession(QueuedSession):
    input_format = output_format = MULAW_8K

    def __init__(self) -> None:
        super().__init__("scripted")
        self.truncations: list[tuple[str, int]] = []

    async def send_audio(self, audio: bytes) -> None: ...
    async def send_text(self, text: str) -> None: ...
    async def send_tool_result(self, call_id: str, output: str) -> None: ...

    async def truncate(self, item_id: str, heard_ms: int) -> None:
        self.truncations.append((item_id, heard_ms))

    async def _close_transport(self) -> None: ...


@pytest.fixture
async def call() -> AsyncIterator[tuple[MemorySocket, ScriptedSession, CallBridge]]:
    socket, session = MemorySocket(), ScriptedSession()

    async def opener(history: Sequence[Turn]) -> ProviderSession:
        return session

    protocol = MediaStreamProtocol()
    protocol.receive(json.dumps({"event": "start", "start": {"streamSid": "MZ1", "callSid": "CA1"}}))
    bridge = CallBridge(socket, protocol, CallInfo("CA1", "MZ1", "r"), opener)
    task = asyncio.create_task(bridge.run())
    yield socket, session, bridge
    socket.incoming.put_nowait(None)
    await asyncio.wait_for(task, 5)


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def push(session: ScriptedSession, *events: ProviderEvent) -> None:
    for event in events:
        session.emit(event)
    await settle()


def echo_marks(socket: MemorySocket) -> None:
    for mark in socket.events("mark"):
        name = mark["mark"]["name"]  # type: ignore[index]
        socket.incoming.put_nowait(json.dumps({"event": "mark", "streamSid": "MZ1", "mark": {"name": name}}))


async def test_bot_audio_goes_out_in_chunks_each_followed_by_a_mark(call) -> None:  # type: ignore[no-untyped-def]
    socket, session, _ = call
    await push(session, AudioOut(b"\x01" * 1000, "a"))
    media = socket.events("media")
    assert [len(base64.b64decode(m["media"]["payload"])) for m in media] == [320, 320, 320, 40]  # type: ignore[index]
    kinds = [m["event"] for m in socket.sent]
    assert kinds == ["media", "mark"] * 4


async def test_barge_in_with_audio_queued_clears_first_and_drops_the_rest(call) -> None:  # type: ignore[no-untyped-def]
    socket, session, bridge = call
    await push(session, AudioOut(b"\x01" * 3200, "a"), Transcript("bot", "one two three four", item_id="a"))
    sent_before = len(socket.sent)
    await push(session, SpeechStarted(), AudioOut(b"\x02" * 800, "a"), TurnDone("a"))
    assert socket.sent[sent_before]["event"] == "clear"
    assert len(socket.sent) == sent_before + 1  # nothing of item "a" after the clear
    assert session.truncations and session.truncations[0][0] == "a"
    assert session.truncations[0][1] < 100  # nothing was echoed: the caller heard (almost) nothing
    assert bridge.summary.transcript == []  # the bot's words were never heard


async def test_barge_in_when_twilio_buffer_ran_dry_truncates_at_what_was_heard(call) -> None:  # type: ignore[no-untyped-def]
    socket, session, _ = call
    await push(session, AudioOut(b"\x01" * 3200, "a"))  # 400 ms, still generating
    echo_marks(socket)
    await settle()
    await push(session, SpeechStarted(), AudioOut(b"\x02" * 800, "a"))
    assert socket.events("clear") == []  # nothing queued at Twilio: nothing to clear
    assert session.truncations == [("a", 400)]
    assert len(socket.events("media")) == 10  # the late audio of "a" was dropped


async def test_speech_after_a_finished_answer_truncates_nothing(call) -> None:  # type: ignore[no-untyped-def]
    socket, session, _ = call
    await push(session, AudioOut(b"\x01" * 800, "a"), TurnDone("a"))
    echo_marks(socket)
    await settle()
    await push(session, SpeechStarted())
    assert socket.events("clear") == [] and session.truncations == []


async def test_audio_kept_while_the_session_opened_is_sent_before_newer_audio() -> None:
    """Caller frames that arrive while the kept ones are being sent queue behind them: the
    provider hears the caller's words in the order they were said (under load the flush and
    new frames used to interleave)."""
    socket, opened, all_sent = MemorySocket(), asyncio.Event(), asyncio.Event()
    received: list[int] = []

    class SlowSession(ScriptedSession):
        async def send_audio(self, audio: bytes) -> None:
            await asyncio.sleep(0.002)  # every send yields, as a network send does
            received.append(audio[0])
            if len(received) == 20:
                all_sent.set()

    session = SlowSession()

    async def opener(history: Sequence[Turn]) -> ProviderSession:
        await opened.wait()
        return session

    def frame(n: int) -> str:
        payload = base64.b64encode(bytes([n]) * 160).decode()
        return json.dumps({"event": "media", "streamSid": "MZ1", "media": {"payload": payload}})

    protocol = MediaStreamProtocol()
    protocol.receive(json.dumps({"event": "start", "start": {"streamSid": "MZ1", "callSid": "CA1"}}))
    task = asyncio.create_task(CallBridge(socket, protocol, CallInfo("CA1", "MZ1", "r"), opener).run())
    for n in range(10):
        socket.incoming.put_nowait(frame(n))
    await settle()
    opened.set()
    for n in range(10, 20):
        await asyncio.sleep(0.001)
        socket.incoming.put_nowait(frame(n))
    await asyncio.wait_for(all_sent.wait(), 5)
    assert received == list(range(20))
    socket.incoming.put_nowait(None)
    await asyncio.wait_for(task, 5)


# -- the call handle tools get: "heard" awaited from mark echoes, not polled --------------


async def test_heard_waits_for_the_last_mark_echo_then_the_quiet_time(call) -> None:  # type: ignore[no-untyped-def]
    socket, session, bridge = call
    await push(session, AudioOut(b"\x01" * 800, "a"), TurnDone("a"))
    waiter = asyncio.ensure_future(bridge.handle.heard(0.05, max_wait_s=30))
    await asyncio.sleep(0.3)
    assert not waiter.done()  # 100 ms of audio still queued at Twilio: no echo, not heard
    echo_marks(socket)
    assert await asyncio.wait_for(waiter, 10) is Heard.HEARD
    assert not bridge.handle.bot_audio_pending


async def test_new_audio_during_the_quiet_time_restarts_the_wait(call) -> None:  # type: ignore[no-untyped-def]
    socket, session, bridge = call
    waiter = asyncio.ensure_future(bridge.handle.heard(0.5, max_wait_s=30))
    await settle()
    await push(session, AudioOut(b"\x01" * 800, "a"))  # one more sentence inside the quiet time
    await asyncio.sleep(0.7)
    assert not waiter.done()  # it is queued at Twilio, unheard
    echo_marks(socket)
    assert await asyncio.wait_for(waiter, 10) is Heard.HEARD


async def test_a_barge_in_since_the_tool_call_interrupts_the_wait(call) -> None:  # type: ignore[no-untyped-def]
    _, session, bridge = call
    await push(session, AudioOut(b"\x01" * 1600, "a"))
    since = bridge.handle.tool_call_at  # no tool call yet: now
    waiter = asyncio.ensure_future(bridge.handle.heard(0.05, max_wait_s=30, barge_ins_since=since))
    await settle()
    await push(session, SpeechStarted())
    assert await asyncio.wait_for(waiter, 10) is Heard.INTERRUPTED


async def test_unechoed_audio_times_out_and_the_handle_hangs_up(call) -> None:  # type: ignore[no-untyped-def]
    _, session, bridge = call
    await push(session, AudioOut(b"\x01" * 800, "a"))
    assert await bridge.handle.heard(0.05, max_wait_s=0.2) is Heard.TIMEOUT
    await bridge.handle.hang_up(CallOutcome.BOT_HANGUP)
    assert bridge.summary.outcome is CallOutcome.BOT_HANGUP


async def test_a_caller_turn_goes_into_the_transcript(call) -> None:  # type: ignore[no-untyped-def]
    _, _, bridge = call
    await bridge.handle.add_caller_turn("The caller entered 42 on the phone keypad.")
    assert [(t.role, t.text) for t in bridge.handle.transcript] == [
        ("caller", "The caller entered 42 on the phone keypad.")
    ]
