"""G.711 mu-law <-> 16-bit PCM, via the C ``audioop``."""

from __future__ import annotations

from transcoding.audioop_compat import audioop


def mulaw_to_pcm16(data: bytes) -> bytes:
    """Decode mu-law bytes to little-endian 16-bit PCM (twice as many bytes)."""
    return audioop.ulaw2lin(data, 2)


def pcm16_to_mulaw(data: bytes) -> bytes:
    """Encode little-endian 16-bit PCM to mu-law. ``data`` must hold whole samples."""
    return audioop.lin2ulaw(data, 2)


def alaw_to_pcm16(data: bytes) -> bytes:
    """Decode A-law bytes (G.711's other companding, used outside North America and Japan)."""
    return audioop.alaw2lin(data, 2)
