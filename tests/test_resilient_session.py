"""ResilientSession's renewal and recovery decisions, driven event by event with in-memory
provider sessions (the socket-level behaviour is in test_recovery / test_rotation)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from s2s.circuit import CircuitBoard
from s2s.events import AudioOut, Closed, ProviderError, ProviderEvent, SessionExpiring, TurnDone
from s2s.provider import (
    Provider,
    ProviderConfig,
    ProviderConnectError,
    ProviderSession,
    QueuedSession,
    SessionContext,
    Turn,
)
from s2s.resilience import RecoveryPolicy, ResilientSession, SessionState
from transcoding.formats import MULAW_8K, PCM16_16K


class MemorySession(QueuedSession):
    def __init__(self, name: str, ctx: SessionContext, handle: str | None) -> None:
        super().__init__(name)
        self.input_format = MULAW_8K if name == "a" else PCM16_16K
        self.output_format = MULAW_8K
        self.ctx = ctx
        self.handle = handle
        self.audio = bytearray()
        self.truncations: list[tuple[str, int]] = []
        self.tool_results: list[tuple[str, str]] = []
        self._gone = asyncio.Event()
        self.start_reader(self._gone.wait())  # the "connection" lives until closed or crash()

    @property
    def resume_handle(self) -> str | None:
        return self.handle

    def crash(self) -> None:
        """The connection ends without being asked to: QueuedSession reports Closed(error=True)."""
        self._gone.set()

    async def send_audio(self, audio: bytes) -> None:
        self.audio += audio

    async def send_text(self, text: str) -> None:
        pass

    async def truncate(self, item_id: str, heard_ms: int) -> None:
        self.truncations.append((item_id, heard_ms))

    async def send_tool_result(self, call_id: str, output: str) -> None:
        self.tool_results.append((call_id, output))

    async def _close_transport(self) -> None:
        pass


class MemoryProvider(Provider):
    def __init__(self, name: str, open_delay_s: float = 0.0) -> None:
        super().__init__(name, ProviderConfig(type="memory", connect_timeout_s=1.0))
        self.open_delay_s = open_delay_s
        self.refuse = False
        self.sessions: list[MemorySession] = []

    async def open_session(self, ctx: SessionContext) -> ProviderSession:
        await asyncio.sleep(self.open_delay_s)
        if self.refuse:
            raise ProviderConnectError(self.name, "refused")
        session = MemorySession(self.name, ctx, handle=f"{self.name}-handle-{len(self.sessions) + 1}")
        self.sessions.append(session)
        return session


@contextlib.asynccontextmanager
async def running(session: ResilientSession) -> AsyncIterator[list[ProviderEvent]]:
    await session.open()
    seen: list[ProviderEvent] = []

    async def consume() -> None:
        async for event in session.events():
            seen.append(event)

    task = asyncio.ensure_future(consume())
    try:
        yield seen
    finally:
        await session.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def until(predicate: object, timeout: float = 3.0) -> None:
    assert callable(predicate)
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


POLICY = RecoveryPolicy(budget_s=0.5, attempts=1, backoff_s=0.01)


async def test_renewal_opened_before_a_turn_is_discarded_and_reopened_with_the_full_history() -> None:
    a = MemoryProvider("a", open_delay_s=0.15)
    turns: list[Turn] = [Turn("caller", "hello"), Turn("bot", "hi")]
    session = ResilientSession([a], SessionContext("CA1", "be nice", greeting="Hello!"), POLICY, CircuitBoard(),
                               history=turns)  # fmt: skip
    async with running(session):
        first = a.sessions[0]
        first.emit(SessionExpiring("limit"))
        await until(lambda: len(a.sessions) == 0 + 1 and session.state.state is SessionState.RENEWING)
        turns.append(Turn("caller", "one more thing"))  # a turn while the replacement opens
        await until(lambda: bool(session.renewed_at))
        assert len(a.sessions) == 3
        stale, fresh = a.sessions[1], a.sessions[2]
        await until(lambda: stale.closed and first.closed)
        assert session.current is fresh
        assert fresh.ctx.history == tuple(turns) and stale.ctx.history == tuple(turns[:2])
        assert fresh.ctx.resume_handle == "a-handle-1" and fresh.ctx.greeting is None
        assert fresh.ctx.instructions == "be nice"


async def test_renewal_waits_while_the_bot_is_speaking() -> None:
    a = MemoryProvider("a")
    session = ResilientSession([a], SessionContext("CA2"), POLICY, CircuitBoard())
    async with running(session) as seen:
        first = a.sessions[0]
        first.emit(AudioOut(b"\xff" * 160, "item-1"))
        first.emit(SessionExpiring("limit"))
        await asyncio.sleep(0.3)
        assert len(a.sessions) == 1 and not session.renewed_at
        first.emit(TurnDone("item-1"))
        await until(lambda: bool(session.renewed_at))
        # Events of the new session get ids that cannot collide with the old session's.
        a.sessions[1].emit(AudioOut(b"\xff" * 160, "item-1"))
        await until(lambda: isinstance(seen[-1], AudioOut) and seen[-1].item_id == "r2:item-1")
        await session.truncate("r2:item-1", 120)
        await session.truncate("item-1", 80)  # the old session's item: not forwarded
        assert a.sessions[1].truncations == [("item-1", 120)]
        assert first.truncations == []


async def test_loss_falls_back_down_the_chain_without_a_foreign_resume_handle_and_replays_audio() -> None:
    a, b = MemoryProvider("a"), MemoryProvider("b", open_delay_s=0.1)
    session = ResilientSession([a, b], SessionContext("CA3"), POLICY, CircuitBoard())
    async with running(session):
        a.refuse = True
        a.sessions[0].crash()
        await asyncio.sleep(0.02)
        await session.send_audio(b"\x00" * 800)  # 100 ms of loud mu-law while recovering
        await until(lambda: session.provider_name == "b")
        await until(lambda: len(b.sessions[0].audio) > 0)
        assert b.sessions[0].ctx.resume_handle is None
        # Replayed in the new session's format: 100 ms at 16 kHz PCM16 (less the resampler's few ms).
        assert len(b.sessions[0].audio) == pytest.approx(3200, abs=160)
        assert session.input_format == PCM16_16K


async def test_a_tool_result_during_recovery_reaches_the_resumed_session_but_not_a_fallback() -> None:
    a, b = MemoryProvider("a", open_delay_s=0.1), MemoryProvider("b", open_delay_s=0.1)
    session = ResilientSession([a, b], SessionContext("CA5"), POLICY, CircuitBoard())
    async with running(session):
        a.sessions[0].crash()
        await until(lambda: session.state.state is SessionState.RECOVERING)
        await session.send_tool_result("call_1", '{"ok": true}')  # the tool outlived the socket
        await until(lambda: len(a.sessions) == 2 and session.state.state is SessionState.LIVE)
        resumed = a.sessions[1]
        assert resumed.ctx.resume_handle == "a-handle-1"
        assert resumed.tool_results == [("call_1", '{"ok": true}')]
        # Now the primary is gone for good: the fallback never saw call_2, so its result is dropped.
        a.refuse = True
        resumed.crash()
        await until(lambda: session.state.state is SessionState.RECOVERING)
        await session.send_tool_result("call_2", "{}")
        await until(lambda: session.provider_name == "b" and session.state.state is SessionState.LIVE)
        assert b.sessions[0].tool_results == []
        await session.send_tool_result("call_3", "{}")  # after recovery: straight through
        assert b.sessions[0].tool_results == [("call_3", "{}")]


async def test_failed_recovery_ends_with_a_fatal_error_and_closed_error() -> None:
    a = MemoryProvider("a")
    session = ResilientSession([a], SessionContext("CA4"), POLICY, CircuitBoard())
    async with running(session) as seen:
        a.refuse = True
        a.sessions[0].crash()
        await until(lambda: bool(seen) and isinstance(seen[-1], Closed))
        assert isinstance(seen[-2], ProviderError) and seen[-2].fatal
        closed = seen[-1]
        assert isinstance(closed, Closed) and closed.error


async def test_open_raises_when_no_provider_connects_and_circuits_count_the_failures() -> None:
    a = MemoryProvider("a")
    a.refuse = True
    board = CircuitBoard(failures=2, cooldown_s=60)
    for call in ("CA5", "CA6"):
        with pytest.raises(ProviderConnectError):
            await ResilientSession([a], SessionContext(call), POLICY, board).open()
    assert not board["a"].available()
    with pytest.raises(ProviderConnectError, match="circuit open"):
        await ResilientSession([a], SessionContext("CA7"), POLICY, board).open()


async def test_watchdog_ignores_a_click_but_replaces_a_session_that_ignores_speech() -> None:
    a = MemoryProvider("a")
    policy = RecoveryPolicy(budget_s=0.5, attempts=1, watchdog_s=0.3)
    session = ResilientSession([a], SessionContext("CA8"), policy, CircuitBoard())
    async with running(session):
        loud = b"\x00" * 160  # 20 ms of full-scale mu-law
        for _ in range(5):  # a 100 ms click
            await session.send_audio(loud)
        await asyncio.sleep(0.6)
        assert len(a.sessions) == 1 and session.recoveries == 0
        for _ in range(25):  # half a second of speech the session never reacts to
            await session.send_audio(loud)
        await until(lambda: session.recoveries == 1, timeout=2)
        assert len(a.sessions) == 2 and a.sessions[0].closed


async def test_a_quiet_call_keeps_no_timer_until_caller_speech_arms_the_watchdog() -> None:
    """Nothing to wait for, nothing scheduled: a per-call poll was hundreds of loop wake-ups a
    second at a hundred calls. Speech that arms the watchdog schedules its deadline at once."""
    a = MemoryProvider("a")
    policy = RecoveryPolicy(budget_s=0.5, attempts=1, watchdog_s=5.0)
    session = ResilientSession([a], SessionContext("CA8b"), policy, CircuitBoard())
    async with running(session) as seen:
        await asyncio.sleep(0.05)
        for _ in range(10):  # 200 ms of silence, then a 100 ms click: the watchdog stays unarmed
            await session.send_audio(b"\xff" * 160)
        for _ in range(5):
            await session.send_audio(b"\x00" * 160)
        assert session._tick is None
        for _ in range(20):  # 400 ms more of speech the session does not answer: armed
            await session.send_audio(b"\x00" * 160)
        tick = session._tick
        assert tick is not None and tick.when() - asyncio.get_running_loop().time() > 4.0
        a.sessions[0].emit(TurnDone("item-1"))  # an answer disarms it
        await until(lambda: bool(seen))
        assert session._watchdog.deadline() is None


async def test_an_attached_session_hands_events_to_the_sink_in_order_without_its_own_queue() -> None:
    session = MemorySession("a", SessionContext("CA9"), None)
    session.emit(AudioOut(b"\xff", "item-1"))  # before attach: queued
    got: list[ProviderEvent] = []
    session.attach(got.append)
    session.emit(TurnDone("item-1"))
    assert got == [AudioOut(b"\xff", "item-1"), TurnDone("item-1")]
    session.crash()
    await until(lambda: isinstance(got[-1], Closed))
    closed = got[-1]
    assert isinstance(closed, Closed) and closed.error
    await session.close()
