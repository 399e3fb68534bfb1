"""TwiML we answer with, built by ``twilio.twiml`` so escaping and attribute names are right."""

from __future__ import annotations

from collections.abc import Mapping

from twilio.twiml.voice_response import Connect, Dial, VoiceResponse


def connect_stream(
    stream_url: str, parameters: Mapping[str, str], after_url: str | None = None, status_url: str | None = None
) -> str:
    """``<Connect><Stream>`` with per-call ``<Parameter>``s (never a query string: Twilio
    rejects stream URLs with one, error 31920). ``after_url`` is where Twilio goes when we
    close the stream: the server then decides between hang-up, an apology and a transfer.
    ``status_url`` gets the stream's ``statusCallback`` events (``stream-started``,
    ``stream-stopped``, ``stream-error`` with ``StreamError``;
    https://www.twilio.com/docs/voice/twiml/stream#statuscallback): without it a stream that
    fails to connect is visible only in Twilio's console."""
    response = VoiceResponse()
    connect = Connect()
    if status_url:
        stream = connect.stream(url=stream_url, status_callback=status_url, status_callback_method="POST")
    else:
        stream = connect.stream(url=stream_url)
    for name, value in parameters.items():
        stream.parameter(name=name, value=value)
    response.append(connect)
    if after_url:
        response.redirect(after_url, method="POST")
    return str(response)


def say_and_hangup(message: str, language: str | None = None) -> str:
    response = VoiceResponse()
    if language:
        response.say(message, language=language)
    else:
        response.say(message)
    response.hangup()
    return str(response)


def play_and_hangup(url: str) -> str:
    response = VoiceResponse()
    response.play(url)
    response.hangup()
    return str(response)


def dial(number: str, message: str | None = None) -> str:
    response = VoiceResponse()
    if message:
        response.say(message)
    response.dial(number)
    return str(response)


def hangup() -> str:
    response = VoiceResponse()
    response.hangup()
    return str(response)


def join_conference(room: str, *, whisper: str | None = None, on_join: str | None = None) -> str:
    """This leg joins conference ``room`` (``<Dial><Conference>``,
    https://www.twilio.com/docs/voice/twiml/conference): no beep, the room starts when it
    enters and ends when it leaves (either party hanging up ends the call for both).
    ``whisper`` is said to this leg alone, before it enters; ``on_join`` gets the room's
    ``participant-join`` events."""
    response = VoiceResponse()
    if whisper:
        response.say(whisper)
    dial = Dial()
    events = {"status_callback": on_join, "status_callback_event": "join", "status_callback_method": "POST"}
    dial.conference(
        room, beep=False, start_conference_on_enter=True, end_conference_on_exit=True, **(events if on_join else {})
    )
    response.append(dial)
    return str(response)
