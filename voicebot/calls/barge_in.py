"""The call's local barge-in detector (telephony.local_vad), as its route and the server say:
``server.local_barge_in_ms`` of speech in a row, where speech is the route's ``vad``."""

from __future__ import annotations

from telephony.local_vad import SpeechOnsetDetector
from transcoding.formats import MULAW_8K
from transcoding.voice_activity import silero_models, vad_available, voice_activity
from voicebot.config import RouteConfig, ServerConfig


def local_barge_in(route: RouteConfig, server: ServerConfig) -> SpeechOnsetDetector | None:
    """None when the server turns the detector off (``local_barge_in_ms = 0``)."""
    if not server.local_barge_in_ms:
        return None
    if route.vad == "silero" and vad_available("silero"):
        # The model loads in a worker thread while the provider session connects, so the
        # first answer's barge-in finds it ready and the loop never waits on a load.
        silero_models(MULAW_8K.sample_rate).warm()
    activity = voice_activity(route.vad, MULAW_8K.sample_rate, server.local_barge_in_dbfs)
    return SpeechOnsetDetector(activity, server.local_barge_in_ms)
