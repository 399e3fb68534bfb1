"""What a caller hears of plain TwiML, for the Twilio simulator: ``<Say>``, ``<Play>``,
and ``<Pause>`` rendered as 8 kHz mu-law, so a test can hear (say) the voicemail
message a call's TwiML was replaced with, and when.

``<Play>`` fetches its URL (a WAV of any rate, channels and sample type; the tests serve one
on loopback) and plays it ``loop`` times. ``<Say>`` is a stand-in, not speech: a
:data:`SAY_TONE_HZ` tone lasting as long as the text takes to say at :data:`SAY_CHARS_PER_S`
characters per second, with 20 ms fades, so its length follows the message and its pitch
tells it apart from anything a provider says. ``<Pause length>`` is silence
(https://www.twilio.com/docs/voice/twiml/pause: one second by default); ``<Hangup>`` and the
end of the document end the call. Any other verb is reported in
:attr:`RenderedTwiml.problems` and skipped; so is a ``<Play>`` whose URL does not give a WAV.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import httpx
import numpy as np

from transcoding.mulaw import pcm16_to_mulaw
from voicebot.devtools.tape.wav import wav_to_mulaw

RATE = 8000
SAY_TONE_HZ = 300.0
SAY_CHARS_PER_S = 14.0
SAY_DBFS = -12.0
FADE_MS = 20
# A ``loop`` larger than this (or 0, "for ever") plays this many times.
MAX_LOOPS = 10


@dataclass(slots=True)
class Segment:
    verb: str  # "Say", "Play" or "Pause"
    mulaw: bytes
    detail: str  # the text said, the URL played, the pause length

    @property
    def ms(self) -> float:
        return len(self.mulaw) / 8.0


@dataclass(slots=True)
class RenderedTwiml:
    segments: list[Segment] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def mulaw(self) -> bytes:
        return b"".join(s.mulaw for s in self.segments)


def say_stand_in(text: str) -> bytes:
    """The ``<Say>`` stand-in for ``text`` (see the module docstring)."""
    n = max(1, round(len(text.strip()) / SAY_CHARS_PER_S * RATE))
    amplitude = 32767 * 10 ** (SAY_DBFS / 20)
    wave = amplitude * np.sin(2 * np.pi * SAY_TONE_HZ * np.arange(n) / RATE)
    fade = min(n // 2, RATE * FADE_MS // 1000)
    if fade:
        ramp = np.linspace(0.0, 1.0, fade)
        wave[:fade] *= ramp
        wave[n - fade :] *= ramp[::-1]
    return pcm16_to_mulaw(wave.astype("<i2").tobytes())


def _loops(element: ET.Element) -> int:
    try:
        count = int(element.get("loop", "1"))
    except ValueError:
        return 1
    return MAX_LOOPS if count <= 0 else min(count, MAX_LOOPS)


async def _fetch_wav(client: httpx.AsyncClient, url: str) -> bytes:
    response = await client.get(url)
    response.raise_for_status()
    if response.content[:4] != b"RIFF":
        raise ValueError(f"not a WAV ({response.headers.get('content-type', '?')})")
    return wav_to_mulaw(response.content)


async def render_twiml(twiml: str, client: httpx.AsyncClient) -> RenderedTwiml:
    """The audio of ``twiml``'s verbs in order; ``client`` fetches ``<Play>`` URLs."""
    rendered = RenderedTwiml()
    try:
        root = ET.fromstring(twiml)
    except ET.ParseError as exc:
        rendered.problems.append(f"not XML: {exc}")
        return rendered
    for element in root:
        verb, text = element.tag, (element.text or "").strip()
        if verb == "Say":
            rendered.segments.append(Segment(verb, say_stand_in(text) * _loops(element), text))
        elif verb == "Play":
            try:
                audio = await _fetch_wav(client, text)
            except (httpx.HTTPError, ValueError) as exc:
                rendered.problems.append(f"<Play> {text}: {exc}")
                continue
            rendered.segments.append(Segment(verb, audio * _loops(element), text))
        elif verb == "Pause":
            try:
                seconds = float(element.get("length", "1"))
            except ValueError:
                seconds = 1.0
            silence = b"\xff" * math.ceil(max(0.0, seconds) * RATE)
            rendered.segments.append(Segment(verb, silence, f"{seconds:g} s"))
        elif verb == "Hangup":
            break
        else:
            rendered.problems.append(f"<{verb}> is not simulated; skipped")
    return rendered
