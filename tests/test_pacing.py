"""Paced playout for full-duplex providers: what is queued at Twilio never exceeds the lead,
whatever arrives at once, and a drop leaves nothing more to play."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from telephony.pacing import PacedPlayout
from telephony.playout import PlayoutTracker
from transcoding.formats import MULAW_8K


class EchoingEdge:
    """Stands in for Twilio: records what arrives and echoes a mark when told it played."""

    def __init__(self, playout: PlayoutTracker) -> None:
        self.playout = playout
        self.pacer: PacedPlayout | None = None
        self.marks: list[str] = []
        self.received: list[tuple[bytes, str]] = []
        self.max_queued_ms = 0.0
        self.arrived = asyncio.Event()

    async def send_chunk(self, chunk: bytes, item_id: str) -> None:
        self.marks.append(self.playout.sent(item_id, MULAW_8K.duration_ms(len(chunk)), 0.0))
        self.received.append((chunk, item_id))
        self.max_queued_ms = max(self.max_queued_ms, self.playout.pending_ms)
        self.arrived.set()

    def play_one(self) -> None:
        mark = self.marks.pop(0)
        self.playout.echoed(mark, 0.0)
        assert self.pacer is not None
        self.pacer.played()

    async def next_arrival(self) -> None:
        self.arrived.clear()
        await asyncio.wait_for(self.arrived.wait(), 2.0)


@contextlib.asynccontextmanager
async def paced(lead_ms: float, stall_s: float = 5.0) -> AsyncIterator[tuple[PacedPlayout, EchoingEdge]]:
    playout = PlayoutTracker()
    edge = EchoingEdge(playout)
    pacer = PacedPlayout(playout, edge.send_chunk, lead_ms, stall_s=stall_s)
    edge.pacer = pacer
    task = asyncio.create_task(pacer.run())
    try:
        yield pacer, edge
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_second_of_audio_at_once_queues_only_the_lead_at_twilio() -> None:
    async with paced(lead_ms=100) as (pacer, edge):
        pacer.push(b"\x10" * MULAW_8K.nbytes(1000), "bot-1")
        await settle()
        assert len(edge.received) == 5  # 5 x 20 ms = the lead, no more
        assert pacer.backlog_ms == pytest.approx(900)
        for _ in range(45):
            edge.play_one()
            await settle()
        assert edge.max_queued_ms <= 100
        assert len(edge.received) == 50 and pacer.backlog_ms == 0


async def test_drop_forgets_held_audio_and_reports_it_per_item() -> None:
    async with paced(lead_ms=60) as (pacer, edge):
        pacer.push(b"\x10" * MULAW_8K.nbytes(200), "bot-1")
        pacer.push(b"\x20" * MULAW_8K.nbytes(100), "bot-2")
        await settle()
        assert [item for _, item in edge.received] == ["bot-1"] * 3
        dropped = pacer.drop()
        assert dropped == {"bot-1": pytest.approx(140), "bot-2": pytest.approx(100)}
        edge.play_one()
        await settle()
        assert len(edge.received) == 3  # nothing more of either item goes out


async def test_lead_is_at_least_two_chunks_so_twilio_never_runs_dry_between_releases() -> None:
    async with paced(lead_ms=5) as (pacer, edge):
        pacer.push(b"\x10" * MULAW_8K.nbytes(100), "bot-1")
        await settle()
        assert len(edge.received) == 2


async def test_without_mark_echoes_audio_still_goes_out_after_the_stall_timeout() -> None:
    async with paced(lead_ms=40, stall_s=0.05) as (pacer, edge):
        pacer.push(b"\x10" * MULAW_8K.nbytes(60), "bot-1")
        await settle()
        assert len(edge.received) == 2
        await edge.next_arrival()  # released although Twilio echoed nothing
        assert len(edge.received) == 3
