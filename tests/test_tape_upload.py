"""The tape uploader's own rules, with an in-memory store: retry with capped backoff, what a
restart sends again and what it does not, and that submitting never waits on the store."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from voicebot.devtools.tape.recorder import tape_filename
from voicebot.recordings.upload import UPLOADED_LIST, WAV_PARTIAL, TapeUploader, UploadResult


class MemoryStore:
    """Fails the first ``failures`` puts; ``gate`` (when set) holds every put until released."""

    def __init__(self, failures: int = 0, gate: threading.Event | None = None) -> None:
        self.failures = failures
        self.gate = gate
        self.objects: dict[str, bytes] = {}
        self.entered = threading.Event()

    def put(self, path: Path, name: str, content_type: str) -> str:
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(10)
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("store down")
        self.objects[name] = path.read_bytes()
        return f"k/{name}"

    def describe(self) -> str:
        return "memory"


def a_tape(directory: Path, sid: str) -> Path:
    path = directory / tape_filename(sid)
    path.write_text(json.dumps({"k": "tape", "v": 1, "call_sid": sid}) + "\n")
    return path


def results_of(uploader: TapeUploader) -> tuple[list[UploadResult], threading.Condition]:
    results: list[UploadResult] = []
    changed = threading.Condition()

    def heard(result: UploadResult) -> None:
        with changed:
            results.append(result)
            changed.notify_all()

    uploader.listeners.append(heard)
    return results, changed


def test_a_failed_upload_is_retried_with_doubling_capped_waits_until_it_goes_through(tmp_path: Path) -> None:
    now = [0.0]
    store = MemoryStore(failures=4)
    uploader = TapeUploader(tmp_path, store, retry_initial_s=1.0, retry_max_s=5.0, clock=lambda: now[0])
    assert [uploader.retry_wait(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]

    results, changed = results_of(uploader)
    uploader.start()
    tape = a_tape(tmp_path, "CAretry")
    content = tape.read_bytes()
    uploader.submit(tape)
    with changed:
        # The clock stands still: only the first try happens until time moves on.
        assert changed.wait_for(lambda: len(results) == 1, 5)
        assert not changed.wait_for(lambda: len(results) == 2, 0.3)
        deadline = time.monotonic() + 10
        while len(results) < 5 and time.monotonic() < deadline:
            now[0] += 5.0  # past any wait; the worker is woken to look at the clock again
            with uploader._cond:
                uploader._cond.notify_all()
            changed.wait(0.05)
    assert [r.ok for r in results] == [False, False, False, False, True]
    assert [r.attempt for r in results] == [1, 2, 3, 4, 5]
    assert store.objects == {tape.name: content}
    assert not tape.exists() and uploader.backlog == 0
    assert uploader.counts() == {("tape", "failed"): 4, ("tape", "ok"): 1}
    uploader.close()


def test_a_restart_sends_what_was_left_and_not_what_was_kept_after_its_upload(tmp_path: Path) -> None:
    kept, left = a_tape(tmp_path, "CAkept"), a_tape(tmp_path, "CAleft")
    (tmp_path / UPLOADED_LIST).write_text(f"{kept.name}\n20200101T000000000Z_CAgone.jsonl\n")
    (tmp_path / f".{left.stem}{WAV_PARTIAL}").write_bytes(b"half a rendering")
    store = MemoryStore()
    uploader = TapeUploader(tmp_path, store, keep_local=True)
    results, changed = results_of(uploader)
    assert uploader.start() == 1
    with changed:
        assert changed.wait_for(lambda: len(results) == 1, 5)
    uploader.close()
    assert list(store.objects) == [left.name]
    assert kept.exists() and left.exists()  # keep_local
    # the list names what was sent and is still here; a deleted tape is forgotten
    assert sorted((tmp_path / UPLOADED_LIST).read_text().split()) == sorted([kept.name, left.name])
    assert not list(tmp_path.glob(f".*{WAV_PARTIAL}"))
    again = TapeUploader(tmp_path, MemoryStore(), keep_local=True)
    assert again.start() == 0
    again.close()


def test_submitting_returns_at_once_while_the_store_hangs(tmp_path: Path) -> None:
    gate = threading.Event()
    store = MemoryStore(gate=gate)
    uploader = TapeUploader(tmp_path, store, workers=1)
    uploader.start()
    uploader.submit(a_tape(tmp_path, "CAfirst"))
    assert store.entered.wait(5)  # the only worker is inside a put that does not return
    for n in range(50):
        uploader.submit(a_tape(tmp_path, f"CAnext{n}"))
    assert uploader.backlog == 51
    gate.set()
    uploader.close(drain_s=10)  # a stopping server gives the queue time to empty
    assert uploader.backlog == 0 and len(store.objects) == 51
