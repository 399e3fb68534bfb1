"""The cascade with its local parts only (pocketsphinx -> responder -> espeak-ng): no network,
no keys. espeak-ng speaks a phrase into the call; pocketsphinx must recognise its key word,
and the caller must hear espeak-ng say back what was understood."""

from __future__ import annotations

import shutil

import pytest

from s2s.cascade.tts_espeak import EspeakConfig, EspeakOpener
from s2s.provider import SessionContext
from tests.support.audio import active_segments
from tests.support.live_call import live_bridge
from tests.support.server import AUTH_TOKEN, running_server

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (apt-get install espeak-ng)"
)
pytest.importorskip("pocketsphinx", reason="pocketsphinx is not installed (pip install 'voicebot[local]')")

LOCAL_CONFIG = f"""
[twilio]
auth_token = "{AUTH_TOKEN}"
validate_signatures = true

[providers.local]
type = "cascade"
stt = {{ type = "pocketsphinx" }}
llm = {{ type = "responder" }}
tts = {{ type = "espeak" }}

[[routes]]
name = "default"
providers = ["local"]
greeting = "Hello."
"""


async def test_espeak_phrase_is_recognised_by_pocketsphinx_and_answered_in_speech() -> None:
    voice = await EspeakOpener(EspeakConfig(voice="en-us", words_per_minute=150)).open(SessionContext("test"))
    phrase = b"".join([chunk async for chunk in voice.speak("I want to order a pizza.")])
    async with running_server(LOCAL_CONFIG) as server, server.twilio().call() as call:
        bridge = await live_bridge(server, call)
        # The greeting is spoken first, by espeak-ng.
        await call.wait_for(lambda: call.received_media_ms() > 300 and call.queued_ms == 0, timeout=15)
        greeting_ms = call.received_media_ms()
        await call.pause(300)
        said_at = call.now_ms()
        await call.say(phrase)
        await call.wait_for(lambda: any(t.role == "bot" for t in bridge.summary.transcript[1:]), timeout=30)
        await call.wait_for(lambda: call.queued_ms == 0 and call.received_media_ms() > greeting_ms + 500, timeout=15)

        caller = [t.text for t in bridge.summary.transcript if t.role == "caller"]
        assert caller and "order" in caller[0].split(), bridge.summary.transcript
        bot = [t.text for t in bridge.summary.transcript if t.role == "bot"]
        assert bot == ["Hello.", f"I heard: {caller[0]}."]
        answer = [s for s in active_segments(call.heard_pcm(), 8000, threshold_dbfs=-35) if s[0] > said_at]
        assert answer and answer[-1][1] - answer[0][0] > 500  # espeak-ng said it back
