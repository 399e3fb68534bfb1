"""``voicebot dial``: try a running voicebot without a phone.

It acts as Twilio does toward the server: a signed voice webhook, the Media Stream the TwiML
asks for, the caller's audio from a WAV (any rate or channel count, converted with the call
path's own resampler) paced in real time, and the bot's audio played through a simulated
Twilio buffer that echoes marks and honours ``clear``. It hangs up once the bot has answered
and gone quiet, and can save both sides to a stereo WAV and the call to a caller-side tape.
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

from transcoding.mulaw import pcm16_to_mulaw
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


async def _wait_for_answer(call: SimulatedCall, quiet_s: float, answer_timeout_s: float, deadline: float) -> None:
    """Until the bot answered and then sent nothing for ``quiet_s`` with its audio played out,
    or the server hung up, or nothing came for ``answer_timeout_s``."""
    spoke_at = time.monotonic()
    while not call.closed.is_set() and time.monotonic() < deadline:
        media_times = [e.t_ms for e in call.log if e.direction == "out" and e.event == "media"]
        if not media_times:
            if time.monotonic() - spoke_at > answer_timeout_s:
                log.warning("no bot audio within %.0f s of the caller's utterance; hanging up", answer_timeout_s)
                return
        elif call.queued_ms == 0 and call.now_ms() - media_times[-1] > quiet_s * 1000.0:
            return
        await asyncio.sleep(0.05)


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
    deadline = time.monotonic() + max_seconds
    async with twilio.call(to=to, from_=from_, call_sid=call_sid) as call:
        await call.pause(300)
        await call.say(caller_audio)
        await _wait_for_answer(call, quiet_s, answer_timeout_s, deadline)
        outcome = "server-hangup" if call.closed.is_set() else "caller-hangup"
    if tape is not None:
        await tape.close(outcome)
    return DialResult(
        call_sid, outcome, call.received_media_ms(), len(call.clear_times), bytes(call.caller_track), bytes(call.heard)
    )


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
        call = dial(
            args.url,
            audio,
            auth_token=token,
            record=args.record,
            to=args.to,
            from_=args.from_,
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
        f"call {result.call_sid}: {result.outcome}; bot sent {result.bot_audio_ms:.0f} ms of audio, "
        f"{result.clears} clear(s)"
    )
    if args.out is not None:
        seconds = write_call_wav(args.out, result.caller_audio, result.heard_audio)
        print(f"wrote {args.out} ({seconds:.1f} s, caller left, bot right as heard)")
    if args.record is not None:
        print(f"wrote caller-side tape {args.record}")
    return 0
