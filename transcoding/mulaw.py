"""G.711 mu-law <-> 16-bit PCM, via the C ``audioop`` (stdlib before 3.13, audioop-lts after)."""

from __future__ import annotations

import sys
import warnings

if sys.version_info >= (3, 13):
    import audioop
else:  # stdlib audioop warns about its removal in 3.13; the dependency covers that version.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop


def mulaw_to_pcm16(data: bytes) -> bytes:
    """Decode mu-law bytes to little-endian 16-bit PCM (twice as many bytes)."""
    return audioop.ulaw2lin(data, 2)


def pcm16_to_mulaw(data: bytes) -> bytes:
    """Encode little-endian 16-bit PCM to mu-law. ``data`` must hold whole samples."""
    return audioop.lin2ulaw(data, 2)
