"""``voicebot dial``: try a running voicebot without a phone.

It acts as Twilio does toward the server: a signed voice webhook, the Media Stream the TwiML
asks for, the caller's audio from a WAV (any rate or channel count, converted with the call
path's own resampler) paced in real time, and the bot's audio played through a simulated
Twilio buffer that echoes marks and honours ``clear``. The WAV is split into utterances at
its pauses and spoken one at a time, as a caller would: after each, dial waits for the bot's
answer to that utterance and for it to finish playing (each wait bounded), and hangs up after
the last answer. It can save both sides to a stereo WAV and the call to a caller-side tape.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from transcoding.mulaw import mulaw_to_pcm16, pcm16_to_mulaw
from voicebot.devtools.tape.caller import CallerTape
from voicebot.devtools.tape.wav import wav_to_mulaw, write_call_wav
from voicebot.devtools.twilio_sim import NoStream, SimulatedCall, SimulatedTwilio

log = logging.getLogger(__name__)

DEFAULT_URL = "http://127.0.0.1:8080"
UTTERANCE = "Hello! I am calling to check that the voice bot answers."


def espeak_utterance(text: str = UTTERANCE) -> bytes | None:
    """``text`` spoken by espeak-ng as 8 kHz mu-law, or None when espeak-ng is not installed."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "utterance.wav"
        subprocess.run([espeak, "-w", str(wav), text], check=True, capture_output=True, timeout=30)
        return wav_to_mulaw(wav)


def tone_utterance() -> bytes:
    """A speech-like pattern when no synthesiser is around: three 'syllables' of different
    pitch with soft edges and short gaps, loud enough for any provider's VAD (~-12 dBFS)."""
    rate = 8000
    parts: list[np.ndarray] = []
    for freq, ms in ((440.0, 220), (660.0, 180), (520.0, 260)):
        n = rate * ms // 1000
        envelope = np.sin(np.pi * np.arange(n) / n) ** 0.5
        parts.append(8000 * envelope * np.sin(2 * np.pi * freq * np.arange(n) / rate))
        parts.append(np.zeros(rate * 80 // 1000))
    return pcm16_to_mulaw(np.concatenate(parts).astype("<i2").tobytes())


@dataclass(slots=True)
class DialResult:
    call_sid: str
    outcome: str
    bot_audio_ms: float
    clears: int
    caller_audio: bytes
    heard_audio: bytes
    utterances: int = 0
    answered: int = 0


# Utterances: caller audio splits where it has been quieter than this for this long.
SPEECH_DBFS = -45.0
UTTERANCE_GAP_MS = 700
FRAME_MS = 20


def split_utterances(mulaw: bytes) -> list[bytes]:
    """The caller's audio cut at its pauses (>= ``UTTERANCE_GAP_MS`` below ``SPEECH_DBFS``);
    each piece keeps up to half a gap of its own silence on either side."""
    pcm = np.frombuffer(mulaw_to_pcm16(mulaw), dtype="<i2").astype(np.float64)
    per_frame = 8 * FRAME_MS
    frames = len(pcm) // per_frame
    if frames == 0:
        return [mulaw] if mulaw else []
    rms = np.sqrt(np.mean(pcm[: frames * per_frame].reshape(frames, per_frame) ** 2, axis=1))
    loud = 20 * np.log10(np.maximum(rms, 1.0) / 32768.0) > SPEECH_DBFS
    gap = UTTERANCE_GAP_MS // FRAME_MS
    pieces: list[tuple[int, int]] = []  # [first, last] loud frame of each utterance
    for i in np.flatnonzero(loud):
        if pieces and i - pieces[-1][1] <= gap:
            pieces[-1] = (pieces[-1][0], int(i))
        else:
            pieces.append((int(i), int(i)))
    if not pieces:
        return [mulaw]
    pad = gap // 2
    bytes_per_frame = per_frame  # mu-law: one byte per sample
    return [
        mulaw[max(0, first - pad) * bytes_per_frame : min(frames, last + 1 + pad) * bytes_per_frame]
        for first, last in pieces
    ]


async def _wait_for_answer(call: SimulatedCall, spoke_until_ms: float, quiet_s: float, answer_timeout_s: float) -> bool:
    """Until the bot has answered what the caller said up to ``spoke_until_ms`` (bot audio
    after it) and then sent nothing for ``quiet_s`` with its audio played out; False when no
    answer came within ``answer_timeout_s`` or the server hung up first."""
    started = time.monotonic()
    while not call.closed.is_set():
        answer = [e.t_ms for e in call.log if e.direction == "out" and e.event == "media" and e.t_ms > spoke_until_ms]
        if not answer:
            if time.monotonic() - started > answer_timeout_s:
                return False
        elif call.queued_ms == 0 and call.now_ms() - answer[-1] > quiet_s * 1000.0:
            return True
        elif time.monotonic() - started > answer_timeout_s + 120.0:
            return True  # a bot that never stops talking: move on
        await asyncio.sleep(0.05)
    return False


async def dial(
    url: str,
    caller_audio: bytes,
    *,
    auth_token: str | None = None,
    record: Path | None = None,
    to: str = "+15550001111",
    from_: str = "+15557654321",
    quiet_s: float = 1.5,
    answer_timeout_s: float = 15.0,
    max_seconds: float = 120.0,
) -> DialResult:
    call_sid = "CA" + secrets.token_hex(16)
    tape = CallerTape(record, call_sid) if record is not None else None
    twilio = SimulatedTwilio(url, auth_token, tap=tape)
    answered = 0
    utterances = split_utterances(caller_audio)
    async with twilio.call(to=to, from_=from_, call_sid=call_sid) as call:
        try:
            async with asyncio.timeout(max_seconds):
                await call.pause(300)
                for i, utterance in enumerate(utterances, start=1):
                    await call.say(utterance)
                    if call.closed.is_set():
                        break
                    if await _wait_for_answer(call, call.now_ms(), quiet_s, answer_timeout_s):
                        answered += 1
                    elif not call.closed.is_set():
                        log.warning("no answer to utterance %d within %.0f s; going on", i, answer_timeout_s)
        except TimeoutError:
            log.warning("the call reached --max-seconds (%.0f s); hanging up", max_seconds)
        outcome = "server-hangup" if call.closed.is_set() else "caller-hangup"
    if tape is not None:
        await tape.close(outcome)
    return DialResult(
        call_sid,
        outcome,
        call.received_media_ms(),
        len(call.clear_times),
        bytes(call.caller_track),
        bytes(call.heard),
        len(utterances),
        answered,
    )


async def wait_for_server(url: str, wait_s: float) -> None:
    """Until ``url`` accepts connections (a server started a moment ago), at most ``wait_s``."""
    deadline = time.monotonic() + wait_s
    async with httpx.AsyncClient(timeout=2.0) as client:
        while True:
            try:
                await client.get(url.rstrip("/") + "/healthz")
                return
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.2)


def dial_command(args: argparse.Namespace) -> int:
    """``voicebot dial`` (arguments: voicebot.cli)."""
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    if args.wav is not None:
        try:
            audio = wav_to_mulaw(args.wav)
        except (OSError, ValueError) as exc:
            print(f"cannot read {args.wav}: {exc}", file=sys.stderr)
            return 2
        source = str(args.wav)
    else:
        spoken = espeak_utterance()
        audio, source = (spoken, "espeak-ng") if spoken is not None else (tone_utterance(), "a tone pattern")
    token = args.auth_token or os.environ.get("TWILIO_AUTH_TOKEN")
    if token is None:
        print("note: no --auth-token / TWILIO_AUTH_TOKEN; requests are signed with an empty token", file=sys.stderr)
    print(f"dialling {args.url} with {len(audio) / 8000:.1f} s of caller audio from {source}")
    try:
        asyncio.run(wait_for_server(args.url, args.connect_wait))
        call = dial(
            args.url,
            audio,
            auth_token=token,
            record=args.record,
            to=args.to,
            from_=args.from_,
            answer_timeout_s=args.answer_timeout,
            max_seconds=args.max_seconds,
        )
        result = asyncio.run(call)
    except NoStream as exc:
        print(f"the server did not open a media stream: {exc}", file=sys.stderr)
        return 1
    except (httpx.HTTPError, OSError) as exc:
        print(f"cannot reach {args.url}: {exc}", file=sys.stderr)
        return 1
    print(
        f"call {result.call_sid}: {result.outcome}; {result.answered} of {result.utterances} utterance(s) answered; "
        f"bot sent {result.bot_audio_ms:.0f} ms of audio, {result.clears} clear(s)"
    )
    if args.out is not None:
        seconds = write_call_wav(args.out, result.caller_audio, result.heard_audio)
        print(f"wrote {args.out} ({seconds:.1f} s, caller left, bot right as heard)")
    if args.record is not None:
        print(f"wrote caller-side tape {args.record}")
    return 0
