"""Call tapes: record calls (recorder), replay them (replay, provider), compare (view,
compare). The format is in :mod:`voicebot.devtools.tape.format` and docs/call-tape.md.

Importing the package registers the ``tape`` provider type, so a config can name it.
"""

from s2s.registry import register
from voicebot.devtools.tape.provider import SPEC

register("tape", SPEC)
