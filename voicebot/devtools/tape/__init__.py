"""Call tapes: record calls (recorder), replay them (replay, provider), compare (view,
compare). The format is in :mod:`voicebot.devtools.tape.format` and docs/call-tape.md.

The ``tape`` provider type (:mod:`voicebot.devtools.tape.provider`) is registered with the
application's other types in :mod:`voicebot.config`.
"""
