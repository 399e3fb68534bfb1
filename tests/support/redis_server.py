"""A throwaway ``redis-server`` per test, on a unix socket in a private directory (no port
to collide with parallel test workers, nothing persisted)."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

REDIS_SERVER = shutil.which("redis-server")
SKIP_REASON = (
    "redis-server is not installed (Debian/Ubuntu: apt-get install redis-server); "
    "`./dev test` installs it when running as root in CI"
)


@contextlib.contextmanager
def redis_server() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    if REDIS_SERVER is None:
        pytest.skip(SKIP_REASON)
    workdir = Path(tempfile.mkdtemp(prefix="vb-redis-", dir="/tmp"))  # unix socket paths must be short
    sock = workdir / "redis.sock"
    command = [REDIS_SERVER, "--port", "0", "--unixsocket", str(sock), "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen([*command, "--dir", str(workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {proc.returncode}")
            if sock.exists():
                with contextlib.suppress(redis.RedisError), redis.Redis(unix_socket_path=str(sock)) as client:
                    if client.ping():
                        break
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)
        yield f"unix://{sock}", proc
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        shutil.rmtree(workdir, ignore_errors=True)
