"""The cascade's added latency and the local cascade's start-up, speed and reliability.

**Cloud parts** (loopback fakes of OpenAI's transcription session, chat completions and speech
endpoints, tests/fakes/openai_cascade_fake.py, reached through the ``openai`` package as in
production). A :class:`~s2s.cascade.CascadeProvider` session gets caller audio at real time;
the fakes answer at once (no model time), and each hop is timestamped where it happens:
``T1`` the transcription fake sends the turn's transcript, ``T2`` the chat fake's handler gets
the request, ``T3`` it sends the chunk that completes the first sentence, ``T4`` the speech
fake's handler gets the request, ``T5`` it sends the first audio, ``T6`` the session emits the
first ``AudioOut``. voicebot's share of "caller end of speech -> first bot audio" is
``(T2 - T1) + (T4 - T3) + (T6 - T5)``: the session, the SDK, the HTTP client and loopback,
everything but the services' own time (the fakes' request parsing up to their handlers is in
it too, so it is an upper bound). The bridge's transcoding (24 kHz -> 8 kHz, ~2 ms) comes on top.

**Local parts** (pocketsphinx -> responder -> espeak-ng, no network): session open time
(loading the recogniser), memory per session, end of speech -> first bot audio, and how often
pocketsphinx hears the key word of espeak-ng phrases sent through the 8 kHz phone band.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import shutil
import statistics
import time
from typing import Any

from bench.report import markdown_table
from s2s.cascade import CascadeConfig, CascadeProvider
from s2s.events import AudioOut, SpeechStopped, Transcript
from s2s.provider import ProviderSession, SessionContext
from tests.fakes.openai_cascade_fake import ChatReply, FakeOpenAIHttp, FakeTranscription
from transcoding.formats import MULAW_8K, AudioFormat
from transcoding.mulaw import pcm16_to_mulaw
from transcoding.pipeline import make_transcoder

FRAME_MS = 20
PHRASES = (
    ("I want to order a pizza.", "order"),
    ("Please tell me the weather.", "weather"),
    ("What time do you open today?", "time"),
    ("I would like to speak to someone.", "speak"),
    ("Can you call me back tomorrow?", "call"),
)


def _tone(ms: int) -> bytes:
    import numpy as np

    n = 8 * ms
    pcm = 8000 * np.sin(2 * np.pi * 700 * np.arange(n) / 8000)
    return pcm16_to_mulaw(pcm.astype("<i2").tobytes())


async def _speak(session: ProviderSession, mulaw: bytes, fmt: AudioFormat, silence_ms: int) -> None:
    """Caller audio at real time, then ``silence_ms`` of silence, converted to the session's input."""
    tc = make_transcoder(MULAW_8K, fmt, "polyphase")
    audio = mulaw + b"\xff" * MULAW_8K.nbytes(silence_ms)
    step = MULAW_8K.nbytes(FRAME_MS)
    start = time.monotonic()
    for i, offset in enumerate(range(0, len(audio), step)):
        await session.send_audio(tc.convert(audio[offset : offset + step]))
        await asyncio.sleep(max(0.0, start + (i + 1) * FRAME_MS / 1000 - time.monotonic()))


class EventLog:
    """Every event of a session with the time it came out, read by a background task."""

    def __init__(self, session: ProviderSession) -> None:
        self.events: list[tuple[float, Any]] = []
        self._changed = asyncio.Event()
        self._task = asyncio.ensure_future(self._read(session))

    async def _read(self, session: ProviderSession) -> None:
        async for event in session.events():
            self.events.append((time.monotonic(), event))
            self._changed.set()

    async def first(self, kind: type, after_item: str | None = None, timeout: float = 30.0) -> tuple[float, Any]:
        """The first event of ``kind`` (of an item other than ``after_item``)."""
        async with asyncio.timeout(timeout):
            while True:
                for at, event in self.events:
                    if isinstance(event, kind) and (after_item is None or event.item_id != after_item):
                        return at, event
                self._changed.clear()
                await self._changed.wait()

    def close(self) -> None:
        self._task.cancel()


async def cloud_latency(turns: int) -> list[dict[str, float]]:
    rows = []
    replies = [ChatReply("Sure. Anything else?")] * (turns + 1)
    async with FakeTranscription() as stt, FakeOpenAIHttp(replies) as http:
        config = CascadeConfig.model_validate(
            {
                "stt": {"type": "openai_realtime", "api_key": "test-key", "base_url": stt.base_url},
                "llm": {"type": "openai_chat", "api_key": "test-key", "base_url": http.base_url},
                "tts": {"type": "openai_speech", "api_key": "test-key", "base_url": http.base_url},
            }
        )
        session = await CascadeProvider("bench", config).open_session(SessionContext("CAbench"))
        log = EventLog(session)
        last_item: str | None = None
        try:
            for turn in range(turns + 1):  # the first turn warms up connections and is not counted
                await _speak(session, _tone(500), session.input_format, 800)
                t6, audio = await log.first(AudioOut, after_item=last_item)
                last_item = audio.item_id
                log.events.clear()
                await asyncio.sleep(1.0)  # let the answer finish before the next turn
                if turn == 0:
                    continue
                t1 = stt.connections[0].completed_at[turn]
                chat = http.chat_streams[turn]
                t3 = next(t for t, text in chat.chunks if "." in text)
                speech = _first_speech_of(http, chat.received_at)
                rows.append(
                    {
                        "transcript -> chat request": (chat.received_at - t1) * 1000,
                        "first sentence -> speech request": (speech.received_at - t3) * 1000,
                        "first speech bytes -> AudioOut": (t6 - speech.chunk_times[0]) * 1000,
                        "end to end (fakes answer at once)": (t6 - t1) * 1000,
                    }
                )
        finally:
            log.close()
            await session.close()
    return rows


def _first_speech_of(http: FakeOpenAIHttp, after: float) -> Any:
    return next(s for s in http.speech_streams if s.received_at >= after)


async def local_run(turns: int) -> dict[str, Any]:
    from s2s.cascade.tts_espeak import EspeakConfig, EspeakOpener

    voice = await EspeakOpener(EspeakConfig(voice="en-us", words_per_minute=150)).open(SessionContext("x"))
    config = CascadeConfig.model_validate(
        {"stt": {"type": "pocketsphinx"}, "llm": {"type": "responder"}, "tts": {"type": "espeak"}}
    )
    provider = CascadeProvider("local", config)
    opens: list[float] = []
    latencies: list[float] = []
    heard: list[bool] = []
    decode_cpu: list[float] = []
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    sessions = []
    for turn in range(turns):
        text, key = PHRASES[turn % len(PHRASES)]
        phrase = b"".join([chunk async for chunk in voice.speak(text)])
        started = time.monotonic()
        session = await provider.open_session(SessionContext(f"CAlocal{turn}"))
        opens.append((time.monotonic() - started) * 1000)
        sessions.append(session)
        log = EventLog(session)
        await _speak(session, b"\xff" * 1600 + phrase, session.input_format, 600)
        first_audio, _ = await log.first(AudioOut)
        stopped_at, _ = await log.first(SpeechStopped)
        said = next((e.text for _, e in log.events if isinstance(e, Transcript) and e.role == "caller"), "")
        log.close()
        latencies.append((first_audio - stopped_at) * 1000)
        heard.append(key in said.split())
        decode_cpu.append(_decode_cpu_per_speech_s(phrase))
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for session in sessions:
        await session.close()
    return {
        "open_ms": opens,
        "latency_ms": latencies,
        "heard": heard,
        "rss_per_session_mb": (rss_after - rss_before) / 1024 / max(1, turns),
        "decode_cpu": decode_cpu,
    }


def _decode_cpu_per_speech_s(phrase: bytes) -> float:
    """CPU seconds pocketsphinx spends per second of phone-band speech (load-independent)."""
    from pocketsphinx import Decoder

    decoder = Decoder(samprate=16000, loglevel="FATAL")
    tc = make_transcoder(MULAW_8K, AudioFormat("pcm16", 16000), "polyphase")
    pcm = tc.convert(phrase)
    started = time.thread_time()
    decoder.start_utt()
    decoder.process_raw(pcm, full_utt=True)
    decoder.end_utt()
    return (time.thread_time() - started) / (len(phrase) / 8000)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench cascade_path", description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=5, help="caller turns for the cloud latency run")
    parser.add_argument("--local-turns", type=int, default=5, help="local sessions (one phrase each)")
    args = parser.parse_args(argv)

    rows = asyncio.run(cloud_latency(args.turns))
    print("\n## Cascade (cloud parts, loopback fakes): caller end of speech -> first bot audio, voicebot's share\n")
    headers = ["hop", "median ms", "max ms"]
    table = [
        [key, f"{statistics.median(r[key] for r in rows):.1f}", f"{max(r[key] for r in rows):.1f}"] for key in rows[0]
    ]
    hops = ("transcript -> chat request", "first sentence -> speech request", "first speech bytes -> AudioOut")
    share = [sum(r[hop] for hop in hops) for r in rows]
    table.append(["voicebot's share (sum)", f"{statistics.median(share):.1f}", f"{max(share):.1f}"])
    print(markdown_table(headers, table))

    print(f"\n(load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    if shutil.which("espeak-ng") is None:
        print("\n(local cascade skipped: espeak-ng is not installed)")
        return 0
    with contextlib.suppress(ImportError):
        import pocketsphinx  # noqa: F401

        local = asyncio.run(local_run(args.local_turns))
        print("\n## Local cascade (pocketsphinx -> responder -> espeak-ng)\n")
        print(
            markdown_table(
                ["measure", "median", "max"],
                [
                    [
                        "session open (model load) ms",
                        f"{statistics.median(local['open_ms']):.0f}",
                        f"{max(local['open_ms']):.0f}",
                    ],
                    [
                        "end of speech -> first bot audio ms",
                        f"{statistics.median(local['latency_ms']):.0f}",
                        f"{max(local['latency_ms']):.0f}",
                    ],
                    ["memory per session MB (max RSS growth)", f"{local['rss_per_session_mb']:.0f}", ""],
                    [
                        "decoder CPU s per s of speech",
                        f"{statistics.median(local['decode_cpu']):.2f}",
                        f"{max(local['decode_cpu']):.2f}",
                    ],
                    ["key word recognised", f"{sum(local['heard'])}/{len(local['heard'])}", ""],
                ],
            )
        )
    return 0
