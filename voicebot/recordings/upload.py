"""Finished call tapes shipped to a store that outlives the pod, off the call path.

How a tape travels, and why:

- The tape writer thread hands each closed tape's path to :meth:`TapeUploader.submit`: a push
  onto a heap under a lock. Neither the event loop nor the writer ever waits on the network.
- ``workers`` threads (bounded, two by default) take the due uploads. The store call blocks
  (boto3); its timeouts are bounded, so a bucket that hangs holds these threads, not a call.
- A failed upload is tried again after ``retry_initial_s``, doubling up to ``retry_max_s``,
  for as long as the process runs. The tape stays on local disk until its upload succeeded;
  then it is deleted, or kept (``keep_local``) and named in ``DIR/.uploaded`` so it is not
  sent again.
- At start every tape in the directory that is not named there is queued first: what a
  crash, a kill or a stop with uploads still pending left behind. A tape cut short by a crash
  (no ``end`` record) is uploaded as it is.
- With ``upload_wav`` the call is also rendered as a stereo WAV (caller left, bot right as
  heard; ``voicebot tape view --wav``) and uploaded first, under the tape's name with
  ``.wav``. A tape that cannot be rendered (cut short) still has its tape uploaded.

The directory belongs to this process: two live instances sharing one would each upload the
other's finished tapes, and a tape still being written by the other would be sent cut short.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from voicebot.devtools.tape.format import TapeError
from voicebot.devtools.tape.wav import write_tape_wav

if TYPE_CHECKING:
    from voicebot.config import RecordingConfig

log = logging.getLogger(__name__)

UPLOADED_LIST = ".uploaded"  # tapes kept after their upload (keep_local), one name a line
WAV_PARTIAL = ".wav.partial"  # a rendering being made or sent: hidden, removed at start
TAPE_CONTENT_TYPE = "application/x-ndjson"
WAV_CONTENT_TYPE = "audio/wav"
# Uploads remembered in memory at once; past that a finished tape waits on disk for the next
# start's scan (a store down for days cannot eat the server's memory).
MAX_QUEUED = 10_000

# How long a stopping server waits for the tapes still queued: a pod's disk may go with it.
# Kept inside the deployment's termination grace period (infra/k8s), after the call drain.
SHUTDOWN_UPLOAD_S = 5.0

FileKind = Literal["tape", "wav"]


class TapeStore(Protocol):
    def put(self, path: Path, name: str, content_type: str) -> str:
        """Store the file at ``path`` as ``name``; the object's key. Raises on failure."""
        ...

    def describe(self) -> str: ...


@dataclass(frozen=True, slots=True)
class UploadResult:
    """One attempt at one file of a tape: what the listeners (metrics, tests) hear."""

    tape: str  # the tape's file name
    kind: FileKind
    ok: bool
    attempt: int
    key: str | None = None
    error: str | None = None


@dataclass(slots=True)
class _Job:
    path: Path
    attempt: int = 0
    wav_done: bool = False  # the rendering is uploaded, or cannot be made


class TapeUploader:
    """Uploads finished tapes from ``directory`` to ``store`` (see the module's docstring)."""

    def __init__(
        self,
        directory: Path,
        store: TapeStore,
        *,
        workers: int = 2,
        upload_wav: bool = False,
        keep_local: bool = False,
        retry_initial_s: float = 2.0,
        retry_max_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = directory
        self.store = store
        self.workers = workers
        self.upload_wav = upload_wav
        self.keep_local = keep_local
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.listeners: list[Callable[[UploadResult], None]] = []
        self._counts: Counter[tuple[str, str]] = Counter()  # (kind, "ok" | "failed") -> attempts
        self._clock = clock
        self._due: list[tuple[float, int, _Job]] = []  # heap by due time
        self._order = itertools.count()
        self._queued: set[Path] = set()
        self._cond = threading.Condition()
        self._closed = False
        self._threads: list[threading.Thread] = []
        self._uploaded: set[str] = set()
        self._uploaded_lock = threading.Lock()

    # -- the process side -------------------------------------------------------------------

    def start(self) -> int:
        """Queue the tapes a previous run left behind and start the workers; how many were
        found. The directory is listed here, before this process records any call, so no tape
        still being written is taken for a leftover."""
        leftovers = self._leftovers()
        for path in leftovers:
            self.submit(path)
        if leftovers:
            log.info(
                "%d tape(s) left from a previous run queued for upload to %s", len(leftovers), self.store.describe()
            )
        for n in range(self.workers):
            thread = threading.Thread(target=self._run, name=f"tape-upload-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return len(leftovers)

    def submit(self, path: Path) -> None:
        """Queue a closed tape for upload now. Cheap, any thread (the tape writer's)."""
        with self._cond:
            if path in self._queued or self._closed:
                return
            if len(self._queued) >= MAX_QUEUED:
                log.warning("upload queue full (%d tapes); %s waits on disk for the next start", MAX_QUEUED, path)
                return
            self._queued.add(path)
            heapq.heappush(self._due, (self._clock(), next(self._order), _Job(path)))
            self._cond.notify()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def backlog(self) -> int:
        """Tapes finished and not yet uploaded (queued, waiting to retry, or being sent)."""
        with self._cond:
            return len(self._queued)

    def close(self, drain_s: float = 0.0) -> None:
        """Stop uploading. The queue first gets up to ``drain_s`` to empty (a stopping
        server's last tapes, before the pod and its disk are gone); whatever is left stays on
        disk for the next start. Never waits on a hung request beyond that: the workers are
        daemon threads."""
        deadline = self._clock() + drain_s
        with self._cond:
            while self._queued and (left := deadline - self._clock()) > 0:
                self._cond.wait(left)
            self._closed = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(0.1)

    # -- the workers --------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    now = self._clock()
                    if self._due and self._due[0][0] <= now:
                        break
                    self._cond.wait(self._due[0][0] - now if self._due else None)
                if self._closed:
                    return
                _, _, job = heapq.heappop(self._due)
            done = False
            try:
                done = self._attempt(job)
            except Exception:  # a bug here must not end the worker, nor lose the tape
                log.exception("uploading %s failed unexpectedly", job.path)
            with self._cond:
                if done:
                    self._queued.discard(job.path)
                    self._cond.notify_all()  # close() may be waiting for the queue to empty
                else:
                    heapq.heappush(self._due, (self._clock() + self.retry_wait(job.attempt), next(self._order), job))
                    self._cond.notify()

    def _attempt(self, job: _Job) -> bool:
        """One try at the job's remaining files; True when the tape is done with."""
        job.attempt += 1
        if not job.path.exists():
            log.info("tape %s is gone before its upload (deleted meanwhile); skipped", job.path)
            return True
        if self.upload_wav and not job.wav_done and not self._ship_wav(job):
            return False
        try:
            key = self.store.put(job.path, job.path.name, TAPE_CONTENT_TYPE)
        except Exception as exc:
            self._failed(job, "tape", exc)
            return False
        self._settle(job.path)
        with self._cond:  # out of the backlog before anyone hears of it
            self._queued.discard(job.path)
            self._cond.notify_all()
        log.info("tape %s uploaded to %s", job.path.name, key)
        self._report(UploadResult(job.path.name, "tape", True, job.attempt, key=key))
        return True

    def _ship_wav(self, job: _Job) -> bool:
        partial = job.path.with_name(f".{job.path.stem}{WAV_PARTIAL}")
        try:
            write_tape_wav(job.path, partial)
        except (TapeError, OSError, ValueError) as exc:
            log.warning("tape %s cannot be rendered as WAV (%s); the tape alone is uploaded", job.path.name, exc)
            job.wav_done = True
            with contextlib.suppress(OSError):
                partial.unlink()
            return True
        name = f"{job.path.stem}.wav"
        try:
            key = self.store.put(partial, name, WAV_CONTENT_TYPE)
        except Exception as exc:
            self._failed(job, "wav", exc)
            with contextlib.suppress(OSError):
                partial.unlink()
            return False
        job.wav_done = True
        self._report(UploadResult(job.path.name, "wav", True, job.attempt, key=key))
        with contextlib.suppress(OSError):
            if self.keep_local:
                partial.replace(job.path.with_name(name))
            else:
                partial.unlink()
        return True

    def _failed(self, job: _Job, kind: FileKind, exc: Exception) -> None:
        error = f"{type(exc).__name__}: {exc}"
        self._report(UploadResult(job.path.name, kind, False, job.attempt, error=error))
        # one line at the first failure, then at attempts 2, 4, 8...: a long outage is not a flood
        if job.attempt & (job.attempt - 1) == 0:
            log.warning(
                "uploading %s of %s to %s failed (attempt %d: %s); kept on disk, retried in %.1f s",
                kind,
                job.path.name,
                self.store.describe(),
                job.attempt,
                error,
                self.retry_wait(job.attempt),
            )

    def retry_wait(self, attempt: int) -> float:
        """Seconds before the next try after failed try number ``attempt``: doubling, capped."""
        return min(self.retry_max_s, self.retry_initial_s * 2 ** (attempt - 1))

    def counts(self) -> dict[tuple[str, str], int]:
        """Upload attempts so far by (kind, outcome): what ``voicebot_tape_uploads_total`` shows."""
        with self._cond:
            return dict(self._counts)

    def _report(self, result: UploadResult) -> None:
        with self._cond:
            self._counts[(result.kind, "ok" if result.ok else "failed")] += 1
        for listener in self.listeners:
            try:
                listener(result)
            except Exception:
                log.exception("an upload listener failed")

    # -- the directory --------------------------------------------------------------------------

    def _settle(self, path: Path) -> None:
        """The tape is in the store: delete it, or remember that it was sent."""
        if not self.keep_local:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            return
        with self._uploaded_lock:
            self._uploaded.add(path.name)
            with open(self.directory / UPLOADED_LIST, "a", encoding="utf-8") as f:
                f.write(path.name + "\n")

    def _leftovers(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        for partial in self.directory.glob(f".*{WAV_PARTIAL}"):
            with contextlib.suppress(OSError):
                partial.unlink()
        listed = self.directory / UPLOADED_LIST
        with contextlib.suppress(FileNotFoundError):
            self._uploaded = set(listed.read_text(encoding="utf-8").split())
        tapes = sorted(self.directory.glob("*.jsonl"))
        if self._uploaded:
            # forget tapes deleted since (the retention sweep, an operator): the list stays short
            present = {path.name for path in tapes}
            self._uploaded &= present
            listed.write_text("".join(f"{name}\n" for name in sorted(self._uploaded)), encoding="utf-8")
        return [path for path in tapes if path.name not in self._uploaded]


def tape_uploader(settings: RecordingConfig) -> TapeUploader | None:
    """The uploader ``[recording]`` asks for (``store = "s3"``), not started; None for local."""
    if settings.store != "s3" or settings.s3 is None:
        return None
    from voicebot.recordings.s3 import S3TapeStore

    return TapeUploader(
        Path(settings.dir),
        S3TapeStore(settings.s3),
        workers=settings.upload_workers,
        upload_wav=settings.upload_wav,
        keep_local=settings.keep_local,
        retry_initial_s=settings.retry_initial_s,
        retry_max_s=settings.retry_max_s,
    )
