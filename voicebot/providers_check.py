"""``voicebot providers check``: one short real session with each configured provider.

The first thing to run after adding keys. For every provider table (or the one ``--provider``
names) it opens a session exactly as a call would, says a short prompt (espeak-ng speech if
installed, else a speech-like tone pattern, in the session's own input format, paced in real
time; if nothing comes back, a text turn where the provider takes text) and reports:

- handshake time (connect + the provider's session setup),
- the negotiated audio formats,
- time to first bot audio after the prompt, and how much audio came,
- what the bot said (its transcript, where the provider sends one),
- warnings: a model with an announced shutdown, audio that does not fit the declared format,
  a refused key or missing permission.

Exit code 1 if any provider failed to open a session or never answered. Nothing here is
provider-specific: it runs the providers through :mod:`s2s`'s interface, as the bridge does.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
import time
from dataclasses import dataclass, field

from s2s.events import AudioOut, Closed, ProviderError, Transcript
from s2s.lifecycle import provider_findings
from s2s.provider import ProviderConfig, ProviderConnectError, ProviderSession, SessionContext
from s2s.registry import build_provider
from transcoding.formats import MULAW_8K
from transcoding.pipeline import make_transcoder
from voicebot.config import ConfigError, load_config

CHECK_INSTRUCTIONS = (
    "This is an automated connection test of a phone line. Whatever you hear, answer with one short friendly sentence."
)
TEXT_PROMPT = "This is a connection test. Please say hello in one short sentence."
FRAME_MS = 20


@dataclass(slots=True)
class ProviderReport:
    name: str
    type: str
    ok: bool = False
    handshake_ms: float | None = None
    input_format: str = ""
    output_format: str = ""
    first_audio_ms: float | None = None
    audio_ms: float = 0.0
    prompt: str = ""
    transcript: str = ""
    warnings: list[str] = field(default_factory=list)
    error: str | None = None

    def lines(self) -> list[str]:
        head = f"provider {self.name!r} ({self.type}): {'OK' if self.ok else 'FAILED'}"
        out = [head]
        if self.handshake_ms is not None:
            out.append(f"  handshake: {self.handshake_ms:.0f} ms")
        if self.input_format:
            out.append(f"  audio: in {self.input_format}, out {self.output_format}")
        if self.prompt:
            out.append(f"  prompt: {self.prompt}")
        if self.first_audio_ms is not None:
            out.append(f"  first audio after {self.first_audio_ms:.0f} ms; {self.audio_ms:.0f} ms of audio")
        if self.transcript:
            out.append(f"  bot said: {self.transcript}")
        out.extend(f"  WARNING: {w}" for w in self.warnings)
        if self.error:
            out.append(f"  ERROR: {self.error}")
        return out


def prompt_audio() -> tuple[bytes, str]:
    """The spoken prompt as 8 kHz mu-law and what it is (the same utterance ``voicebot dial`` uses)."""
    from voicebot.devtools.dial import espeak_utterance, tone_utterance

    spoken = espeak_utterance()
    if spoken is not None:
        return spoken, "speech (espeak-ng)"
    return tone_utterance(), "a speech-like tone pattern (install espeak-ng for speech)"


async def _say(session: ProviderSession, mulaw: bytes, silence_ms: int = 1000) -> None:
    """The prompt in the session's input format, 20 ms at a time in real time, then silence so
    server-side turn detection ends the caller's turn."""
    transcoder = make_transcoder(MULAW_8K, session.input_format)
    audio = mulaw + b"\xff" * MULAW_8K.nbytes(silence_ms)  # 0xff: mu-law digital silence
    step = MULAW_8K.nbytes(FRAME_MS)
    start = time.monotonic()
    for i, offset in enumerate(range(0, len(audio), step)):
        await session.send_audio(transcoder.convert(audio[offset : offset + step]))
        await asyncio.sleep(max(0.0, start + (i + 1) * FRAME_MS / 1000 - time.monotonic()))


async def check_provider(
    name: str,
    config: ProviderConfig,
    prompt: tuple[bytes, str],
    *,
    answer_timeout_s: float = 15.0,
    quiet_s: float = 1.0,
    today: dt.date | None = None,
) -> ProviderReport:
    report = ProviderReport(name, config.type)
    today = today or dt.datetime.now(dt.UTC).date()
    report.warnings.extend(f.message for f in provider_findings(name, config, today))
    provider = build_provider(name, config)
    ctx = SessionContext(call_sid=f"providers-check-{name}", instructions=CHECK_INSTRUCTIONS)
    started = time.monotonic()
    try:
        async with asyncio.timeout(config.connect_timeout_s + 1.0):
            session = await provider.open_session(ctx)
    except (ProviderConnectError, TimeoutError) as exc:
        report.error = f"no session: {exc}"
        if isinstance(exc, ProviderConnectError) and not exc.retryable:
            report.warnings.append("the provider refused the request: check the key, the model name and permissions")
        return report
    report.handshake_ms = (time.monotonic() - started) * 1000
    report.input_format, report.output_format = str(session.input_format), str(session.output_format)
    try:
        await _converse(session, report, prompt, answer_timeout_s, quiet_s)
    finally:
        await session.close()
    report.ok = report.error is None and report.first_audio_ms is not None
    return report


async def _converse(
    session: ProviderSession,
    report: ProviderReport,
    prompt: tuple[bytes, str],
    answer_timeout_s: float,
    quiet_s: float,
) -> None:
    first_audio = asyncio.Event()
    answered = asyncio.Event()  # audio came and then stopped for quiet_s
    more_audio = asyncio.Event()
    bot_words: list[str] = []
    partial: list[str] = []
    sample_width = 2 if session.output_format.encoding == "pcm16" else 1
    prompt_sent_at = time.monotonic()

    async def read() -> None:
        async for event in session.events():
            match event:
                case AudioOut(audio=audio):
                    if len(audio) % sample_width:
                        report.warnings.append(
                            f"an audio chunk of {len(audio)} bytes does not fit {session.output_format}"
                        )
                    if not first_audio.is_set():
                        report.first_audio_ms = (time.monotonic() - prompt_sent_at) * 1000
                        first_audio.set()
                    report.audio_ms += session.output_format.duration_ms(len(audio))
                    more_audio.set()
                case Transcript(role="bot", text=text, final=final):
                    (bot_words if final else partial).append(text)
                case ProviderError(code=code, message=message, fatal=fatal):
                    report.warnings.append(f"provider error {code}: {message}")
                    if fatal:
                        report.error = f"session ended: {code}: {message}"
                case Closed(reason=reason, error=error):
                    if error and report.error is None:
                        report.error = f"session closed: {reason}"
                    answered.set()
                    return
                case _:
                    pass

    async def watch_quiet() -> None:
        await first_audio.wait()
        while True:
            more_audio.clear()
            try:
                async with asyncio.timeout(quiet_s):
                    await more_audio.wait()
            except TimeoutError:
                answered.set()
                return

    reader = asyncio.create_task(read())
    quiet = asyncio.create_task(watch_quiet())
    try:
        audio, what = prompt
        report.prompt = what
        prompt_sent_at = time.monotonic()
        await _say(session, audio)
        deadline = prompt_sent_at + answer_timeout_s
        try:
            async with asyncio.timeout(min(answer_timeout_s / 2, deadline - time.monotonic())):
                await first_audio.wait()
        except TimeoutError:
            report.prompt += f"; no answer, then the text turn {TEXT_PROMPT!r}"
            await session.send_text(TEXT_PROMPT)
        try:
            async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                await answered.wait()
        except TimeoutError:
            if not first_audio.is_set() and report.error is None:
                report.error = f"no audio within {answer_timeout_s:g} s of the prompt"
    finally:
        for task in (reader, quiet):
            task.cancel()
        await asyncio.gather(reader, quiet, return_exceptions=True)
    report.transcript = " ".join(bot_words) if bot_words else "".join(partial).strip()


async def check_providers(configs: dict[str, ProviderConfig], answer_timeout_s: float = 15.0) -> list[ProviderReport]:
    prompt = prompt_audio()
    return [
        await check_provider(name, config, prompt, answer_timeout_s=answer_timeout_s)
        for name, config in sorted(configs.items())
    ]


def providers_check_command(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    providers = config.providers
    if args.provider is not None:
        if args.provider not in providers:
            print(
                f"no provider {args.provider!r} in the config (defined: {', '.join(sorted(providers))})",
                file=sys.stderr,
            )
            return 2
        providers = {args.provider: providers[args.provider]}
    reports = asyncio.run(check_providers(dict(providers), args.answer_timeout))
    for report in reports:
        print("\n".join(report.lines()))
    failed = [r.name for r in reports if not r.ok]
    if failed:
        print(f"{len(failed)} of {len(reports)} provider(s) failed: {', '.join(failed)}")
        return 1
    print(f"all {len(reports)} provider(s) answered")
    return 0
